"""Typed, versioned result records: one JSON per (model, method, training source, task, seed).

The pipeline writes them; the leaderboard reads only them. Per-item outcomes live in a JSONL
file beside each record (``<record>.samples.jsonl``), one line per evaluation item with at least
``doc_id`` and ``score`` (1/0 for accuracy-like metrics, a float for NLL).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError

SCHEMA_VERSION = 1


@dataclass
class EvalSettings:
    """Everything about *how* a task was evaluated; cells only mix records whose settings agree."""

    prompt_format: str
    decoding: dict[str, Any]
    limit: int | None
    data_layer: str  # "local" | "hub" | "offline-mirror" | "synthetic"
    n_items: int
    scorer: str
    backend: str = "hf"  # the inference engine that produced the outputs scored (hf, vllm)
    num_fewshot: int | None = 0  # solved examples before each prompt (lm-eval tasks: as lm-eval reports it)


@dataclass
class ResultRecord:
    model: str
    method: str
    training_source: str | None  # None for the base model
    task: str
    domain: str  # "in" | "out": relative to the training source
    seed: int | None  # None for the base model (nothing trained)
    metrics: dict[str, float]
    primary_metric: str
    higher_is_better: bool
    eval_settings: EvalSettings
    method_info: dict[str, Any]  # external_signal, budget, method options
    config: dict[str, Any]
    config_hash: str
    provenance: dict[str, Any]  # versions, git commit, device, timings, stage keys
    samples_file: str | None = None
    native: dict[str, Any] = field(default_factory=dict)  # raw lm-eval / EvalPlus output
    # reporting only, trained cells: {"corpus": ..., "subspace": ...} (docs/diagnostics.md); empty in older records
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # the scoring library's own files beside the record: name in score.json "files" -> file name
    # (``<record stem>.<name>``, e.g. EvalPlus's samples and eval results); empty in older records
    files: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def external_signal(self) -> str | None:
        return self.method_info.get("external_signal")


_REQUIRED_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "method": str,
    "task": str,
    "domain": str,
    "metrics": dict,
    "primary_metric": str,
    "higher_is_better": bool,
    "eval_settings": dict,
    "method_info": dict,
    "config": dict,
    "config_hash": str,
    "provenance": dict,
}


def record_from_dict(data: Any, origin: str) -> ResultRecord:
    """Validate a parsed record; errors say which file and which field is wrong."""
    if not isinstance(data, dict):
        raise UserError(f"{origin}: a result record must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{origin}: schema_version {version!r} is not supported (this spd-bench reads {SCHEMA_VERSION});"
            " re-run the cell or upgrade spd-bench"
        )
    for name, kind in _REQUIRED_TYPES.items():
        if name not in data:
            raise UserError(f"{origin}: field {name!r} is missing; re-run the cell that wrote it")
        if not isinstance(data[name], kind):
            raise UserError(f"{origin}: field {name!r} should be {getattr(kind, '__name__', kind)}, got {data[name]!r}")
    if data["primary_metric"] not in data["metrics"]:
        raise UserError(f"{origin}: primary_metric {data['primary_metric']!r} is not among its metrics")
    for key, value in data["metrics"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UserError(f"{origin}: field 'metrics.{key}' should be a number, got {value!r}")
    # fields with a default came later; a record written before them has the default's meaning
    required = {f.name for f in fields(EvalSettings) if f.default is MISSING}
    missing = required - set(data["eval_settings"])
    if missing:
        raise UserError(f"{origin}: field 'eval_settings.{sorted(missing)[0]}' is missing")
    known = {f.name for f in fields(ResultRecord)}
    clean = {k: v for k, v in data.items() if k in known}
    settings_names = {f.name for f in fields(EvalSettings)}
    clean["eval_settings"] = EvalSettings(**{k: v for k, v in data["eval_settings"].items() if k in settings_names})
    return ResultRecord(**clean)


def load_record(path: Path) -> ResultRecord:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}); delete it and re-run the cell") from exc
    return record_from_dict(data, str(path))


def record_files(results_dir: Path) -> list[Path]:
    """Every record file under ``results_dir`` (recursively), in a stable order."""
    if not results_dir.is_dir():
        raise UserError(f"results folder {results_dir} does not exist; run `spd-bench run` or pass --results DIR")
    return sorted(p for p in results_dir.rglob("*.json")
                  if not p.name.startswith(("manifest", "leaderboard")) and not _beside_a_record(p))


def _beside_a_record(path: Path) -> bool:
    """A file a record keeps beside it (``<record stem>.<name>.json``), not a record itself."""
    stem = path.name.split(".", 1)[0]
    return path.name != f"{stem}.json" and (path.parent / f"{stem}.json").is_file()


def load_item_scores(record_path: Path, record: ResultRecord) -> list[float] | None:
    """Per-item scores from the samples file beside a record, when it exists."""
    if not record.samples_file:
        return None
    path = record_path.parent / record.samples_file
    if not path.exists():
        return None
    return [float(json.loads(line)["score"]) for line in path.read_text().splitlines() if line.strip()]


def record_relpath(record: ResultRecord) -> Path:
    """Where a record lives under the results folder: records/<model>/<task>/<method>[-seedN].json, and
    <method>-<source>-seedN.json for an out-of-domain task: one run may score such a task for several
    training sources (a task without a source of its own is out-of-domain for each), one record each."""
    safe_model = record.model.replace("/", "__")
    if record.seed is None:
        stem = record.method
    elif record.domain == "out" and record.training_source:
        stem = f"{record.method}-{record.training_source}-seed{record.seed}"
    else:
        stem = f"{record.method}-seed{record.seed}"
    return Path("records") / safe_model / record.task / f"{stem}.json"


def cell_name(record: ResultRecord) -> str:
    """A record's cell as runs print it: METHOD/SOURCE/seedN, or the method alone when untrained."""
    if record.training_source is None:
        return record.method
    return f"{record.method}/{record.training_source}/seed{record.seed}"
