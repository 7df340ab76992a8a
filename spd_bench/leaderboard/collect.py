"""Read result records from disk, filter them, and refuse combinations that are not comparable.

Records are the only input: the leaderboard never runs a model. A record's path is kept
because its per-item scores live in a samples file beside it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from spd_bench.errors import UserError, did_you_mean
from spd_bench.results import EvalSettings, ResultRecord, load_item_scores, load_record, record_files

DOMAINS = ("in", "out")
SWEEPS_DIR = "sweeps"  # a results folder's sweeps (spd-bench sweep): their own tables, never in the main board


@dataclass(frozen=True)
class StoredRecord:
    record: ResultRecord
    path: Path

    @property
    def label(self) -> str:
        """How a record is named in messages: method, and seed when there is one."""
        seed = self.record.seed
        return self.record.method if seed is None else f"{self.record.method} seed {seed}"

    def item_scores(self) -> list[float] | None:
        try:
            return load_item_scores(self.path, self.record)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{self.path.parent / str(self.record.samples_file)}: per-item samples are corrupted ({exc});"
                " delete it and re-run the cell"
            ) from exc


def main_record_files(results_dir: Path) -> list[Path]:
    """The record files under ``results_dir`` outside its ``sweeps/`` folder and outside any nested
    results folder (a subfolder with its own ``records/``, e.g. results/smollm2/): each has its own tables."""
    def own(path: Path) -> bool:
        top = path.relative_to(results_dir).parts[0]
        return top != SWEEPS_DIR and not (top != "records" and (results_dir / top / "records").is_dir())

    return [p for p in record_files(results_dir) if own(p)]


def load_stored(results_dir: Path) -> list[StoredRecord]:
    """Every record under ``results_dir`` but its sweeps, validated, with its path (per-item scores live beside it)."""
    stored = [StoredRecord(load_record(p), p) for p in main_record_files(results_dir)]
    if not stored:
        raise UserError(f"no result records under {results_dir}; run `spd-bench run` or pass --results DIR")
    for item in stored:
        if item.record.domain not in DOMAINS:
            raise UserError(f"{item.path}: field 'domain' should be 'in' or 'out', got {item.record.domain!r}")
    return stored


def _check_names(kind: str, wanted: Iterable[str] | None, known: set[str]) -> None:
    for name in wanted or ():
        if name not in known:
            raise UserError(f"no records for {kind} {name!r}: {did_you_mean(name, known)}the results have {', '.join(sorted(known))}")


def select(
    stored: list[StoredRecord],
    models: list[str] | None = None,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
) -> list[StoredRecord]:
    """Keep the requested models, methods and tasks; the base model stays as the reference row."""
    _check_names("model", models, {s.record.model for s in stored})
    _check_names("method", methods, {s.record.method for s in stored})
    _check_names("task", tasks, {s.record.task for s in stored})
    return [
        s
        for s in stored
        if (not models or s.record.model in models)
        and (not methods or s.record.method in methods or s.record.method == "base")
        and (not tasks or s.record.task in tasks)
    ]


def check_duplicates(stored: list[StoredRecord]) -> None:
    """Two records of the same run cell and task would be counted twice in a mean."""
    seen: dict[tuple[object, ...], Path] = {}
    for s in stored:
        r = s.record
        key = (r.model, r.method, r.training_source, r.task, r.seed)
        if key in seen:
            raise UserError(
                f"{seen[key]} and {s.path} are results of the same cell ({s.label} on {r.task}); delete one"
            )
        seen[key] = s.path


def _setting_value(settings: EvalSettings, name: str) -> str:
    value = getattr(settings, name)
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


def _describe_split(values: dict[str, list[str]]) -> str:
    parts = []
    for value, labels in values.items():
        shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
        parts.append(f"{value}: {shown}")
    return "; ".join(parts)


def settings_conflicts(stored: list[StoredRecord]) -> list[str]:
    """One description per table column whose records are not comparable.

    Evaluation settings must agree across every method of a task (the change against the base
    model compares them), and one method's seeds must share a training source.
    """
    by_task: dict[tuple[str, str], list[StoredRecord]] = defaultdict(list)
    by_cell: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for s in stored:
        by_task[(s.record.model, s.record.task)].append(s)
        if s.record.method != "base":
            key = (s.record.model, s.record.task, s.record.domain, s.record.method)
            by_cell[key].add(str(s.record.training_source))
    conflicts = []
    for (model, task), group in by_task.items():
        differing = []
        for f in dataclasses.fields(EvalSettings):
            values: dict[str, list[str]] = defaultdict(list)
            for s in group:
                values[_setting_value(s.record.eval_settings, f.name)].append(s.label)
            if len(values) > 1:
                differing.append(f"{f.name} ({_describe_split(values)})")
        if differing:
            conflicts.append(f"{model}/{task}: records differ in {', '.join(differing)}")
    for (model, task, _, method), sources in by_cell.items():
        if len(sources) > 1:
            conflicts.append(
                f"{model}/{task}: {method} was trained on different sources ({', '.join(sorted(sources))})"
            )
    return conflicts


def equivalence_margin(stored: list[StoredRecord]) -> float:
    """The runs' ``report.equivalence_margin`` (points), the config's default for records from before the field.

    Records that disagree are refused: one table's verdicts need one margin.
    """
    from spd_bench.config import ReportConfig

    default = ReportConfig().equivalence_margin
    found = {float(s.record.config.get("report", {}).get("equivalence_margin", default)) for s in stored}
    if len(found) > 1:
        raise UserError(f"the records disagree on report.equivalence_margin ({', '.join(f'{m:g}' for m in sorted(found))});"
                        " re-run with one value, or choose records with --models/--methods/--tasks")
    return found.pop() if found else default


def check_comparable(stored: list[StoredRecord], allow_mixed: bool) -> list[str]:
    """Refuse incomparable records unless allowed; return the conflicts for the notes when allowed."""
    conflicts = settings_conflicts(stored)
    if conflicts and not allow_mixed:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UserError(
            f"{conflicts[0]}{more}; re-run them with the same settings, choose records with --tasks/--methods,"
            " or pass --allow-mixed"
        )
    return conflicts
