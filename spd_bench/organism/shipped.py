"""The organism's weights as shipped in the package, so a first run skips ~5 minutes of pretraining.

``spd-bench organism build --from-scratch --ship`` writes them from a build; ``manifest.json``
holds the build key they were built under and the sha256 of every file. A shipped copy is used
only when its build key equals the current recipe's (so an edited recipe builds afresh) and every
file matches its hash (so a damaged install is never served).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from spd_bench.store import file_sha256

SHIPPED = Path(__file__).parent / "shipped"
MANIFEST = "manifest.json"
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "provenance.json")


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of each organism file in ``folder`` (the files a build writes)."""
    return {name: file_sha256(folder / name) for name in FILES if (folder / name).exists()}


def shipped_manifest(folder: Path = SHIPPED) -> dict | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def usable_shipped(key: str, folder: Path = SHIPPED) -> tuple[Path | None, str]:
    """(the shipped folder, "") when it holds the build ``key`` intact, else (None, why not)."""
    manifest = shipped_manifest(folder)
    if manifest is None:
        return None, "no organism weights are shipped"
    if manifest["build_key"] != key:
        return None, f"the shipped weights are of build {manifest['build_key']}, the recipe's is {key}"
    for name, digest in manifest["files"].items():
        if not (folder / name).exists() or file_sha256(folder / name) != digest:
            return None, f"the shipped {name} does not match its sha256 (a damaged install?)"
    return folder, ""


def differences(built: Path, folder: Path = SHIPPED) -> list[str]:
    """The files of a build that differ from the shipped ones. The JSON configs are compared without
    ``transformers_version``, which records the library that wrote them, not the model."""
    differing = []
    for name in FILES:
        if name == "provenance.json":  # wall times and versions: differ by nature
            continue
        if name.endswith("config.json"):
            ours, theirs = (json.loads((base / name).read_text()) for base in (built, folder))
            ours.pop("transformers_version", None)
            theirs.pop("transformers_version", None)
            same = ours == theirs
        else:
            same = file_sha256(built / name) == file_sha256(folder / name)
        if not same:
            differing.append(name)
    return differing


def copy_shipped(source: Path, target: Path) -> None:
    """Copy the shipped files into a cache folder (the caller publishes it atomically)."""
    for name in FILES:
        shutil.copyfile(source / name, target / name)
    provenance = json.loads((target / "provenance.json").read_text())
    provenance["origin"] = "copied from the weights shipped in the spd_bench package (organism/shipped/)"
    (target / "provenance.json").write_text(json.dumps(provenance, indent=1))


def ship(built: Path, key: str, folder: Path = SHIPPED) -> dict[str, str]:
    """Make the build in ``built`` the shipped weights (a maintainer's step after changing the recipe)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(built / name, folder / name)
    provenance = json.loads((folder / "provenance.json").read_text())
    provenance.pop("origin", None)
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=1))
    hashes = file_hashes(folder)
    (folder / MANIFEST).write_text(json.dumps({"build_key": key, "files": hashes}, indent=1) + "\n")
    return hashes
