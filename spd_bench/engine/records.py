"""Provenance and result records: what a scored cell leaves in the results folder.

Kept apart from the stages so that the record's contents (read by the leaderboard and by
anyone reproducing a number) are assembled in one place from the stages' outputs.
"""

from __future__ import annotations

import functools
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spd_bench.config import to_dict
from spd_bench.results import EvalSettings, ResultRecord, record_relpath
from spd_bench.store import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from spd_bench.config import RunConfig
    from spd_bench.engine.plan import Cell
    from spd_bench.method import Method
    from spd_bench.tasks import TaskSpec


@functools.cache
def software_versions() -> dict[str, str]:
    """The versions a number may depend on, so that a difference between records can be traced
    (read once per process: every record of a run carries them)."""
    from importlib.metadata import PackageNotFoundError, version

    result = {"python": platform.python_version()}
    for name in ("spd-bench", "torch", "transformers", "peft", "lm_eval", "evalplus", "datasets"):
        try:
            result[name] = version(name)
        except PackageNotFoundError:
            result[name] = "not installed"
    return result


@functools.cache
def git_commit() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout (asked once per process)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def command_line() -> str | None:
    """The command as the user typed it, when the run came from the console script, quoted for a shell
    (so ``--set 'train.target_modules=[q_proj, v_proj]'`` pastes back as one argument)."""
    return shlex.join(["spd-bench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "spd-bench" else None


def provenance(model_key: str, device: str, dtype: str, stage_keys: dict[str, str | None],
               stage_log: list[dict[str, Any]], data_details: dict[str, Any], engine: dict[str, Any],
               executor: dict[str, Any] | None = None, command: str | None = None,
               cell: str | None = None, model_provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a record came from: software, model identity, device, inference engine, the executor
    that ran it (local or Ray: tasks, workers, devices; see engine/executors.py), each of its
    stages' key, time and cache use (``cell``'s own log entry where several cells used one stage),
    the command (``command``, else this process's), and where a built-in model's weights came from
    (``model_provenance``: package, version and file hash of a converted model; absent for others)."""
    def own(entry: dict[str, Any]) -> bool:  # a stage several cells share is timed for the cell that built it
        return cell is not None and (entry["cell"] == cell or entry["cell"].startswith(f"{cell} -> "))

    chosen: dict[str, dict[str, Any]] = {}
    for entry in sorted((e for e in stage_log if e["key"] in stage_keys.values()), key=lambda e: not own(e)):
        chosen.setdefault(entry["stage"], entry)
    mine = list(chosen.values())
    return {
        "versions": dict(software_versions()), "git_commit": git_commit(), "model_key": model_key,
        "device": device, "dtype": dtype, "engine": engine, "platform": platform.platform(), "stage_keys": stage_keys,
        "stage_seconds": {entry["stage"]: round(entry["seconds"], 3) for entry in mine},
        "stage_cached": {entry["stage"]: entry["cached"] for entry in mine},
        "data_details": data_details, "command": command if command is not None else command_line(),
        "executor": executor if executor is not None else {"name": "local"},
        **({"model_provenance": model_provenance} if model_provenance else {}),
    }


def build_record(*, config: RunConfig, cell: Cell, method: Method, task_name: str, task: TaskSpec, domain: str,
                 score: dict[str, Any], budget: dict[str, Any], training: dict[str, Any],
                 provenance: dict[str, Any], diagnostics: dict[str, Any] | None = None) -> ResultRecord:
    """The record of one (cell, task) from the score stage's ``score.json`` and the training budget;
    ``diagnostics``: the trained cell's corpus and subspace numbers (docs/diagnostics.md)."""
    return ResultRecord(
        model=config.model,
        method=cell.method,
        training_source=cell.source,
        task=task_name,
        domain=domain,
        seed=cell.seed,
        metrics=score["metrics"],
        primary_metric=score["primary_metric"],
        higher_is_better=score["higher_is_better"],
        eval_settings=EvalSettings(
            prompt_format=task.prompt_format, decoding=score["settings"], limit=config.limit,
            data_layer=score["data_layer"], n_items=score["n_items"], scorer=task.scorer,
            backend=provenance["engine"]["backend"], num_fewshot=_num_fewshot(task, score["native"]),
        ),
        method_info={
            "external_signal": method.external_signal, "budget": budget, "training": training,
            "options": method.options_dict(),
            "version": method.version, "description": method.description,
        },
        config=to_dict(config),
        config_hash=config.hash(),
        provenance=provenance,
        native={**score["native"], **({"tests": score["data_details"]["tests"]} if "tests" in score["data_details"] else {})},
        diagnostics=diagnostics or {},
    )


def _num_fewshot(task: TaskSpec, native: dict[str, Any]) -> int | None:
    """The task's few-shot count; for lm-eval's own tasks the count lm-eval used (None when its tasks differ)."""
    if task.kind != "lm_eval":
        return task.num_fewshot
    counts = set(native.get("n-shot", {}).values())
    return counts.pop() if len(counts) == 1 else None


def write_record(record: ResultRecord, output: Path, score_folder: Path) -> Path:
    """Write the record under ``output`` with the score stage's per-item outputs beside it; returns its path.

    The files score.json lists under "files" (the scoring library's own formats) are copied
    beside it as ``<record stem>.<name>`` and named in the record's ``files``.
    """
    path = output / record_relpath(record)
    samples_name = path.stem + ".samples.jsonl"
    record.samples_file = samples_name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path.parent / samples_name, (score_folder / "samples.jsonl").read_text())
    for name in read_score(score_folder).get("files", []):
        record.files[name] = f"{path.stem}.{name}"
        atomic_write_text(path.parent / record.files[name], (score_folder / name).read_text())
    atomic_write_json(path, record.to_dict())
    return path


def read_score(score_folder: Path) -> dict[str, Any]:
    """The score stage's summary (metrics, settings, data details) as it wrote it."""
    return json.loads((score_folder / "score.json").read_text())
