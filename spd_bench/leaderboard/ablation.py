"""Ablation tables of a sweep (``spd-bench sweep``), built from its stored records only.

A sweep folder ``<results>/sweeps/<name>/`` holds one folder of records per setting of the
swept options, a ``reference/`` folder with the methods that do not depend on them (base,
raw_sd, spd_random) and ``sweep.json`` (axes, values, mode, command). For every swept method
and evaluation column the table gives the primary metric per option value, the mean over seeds
with its 95% interval and the paired difference against raw_sd, by the procedure of every table
(stats.py), Holm-corrected over each table (one swept method, one block of settings).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from spd_bench.errors import UserError
from spd_bench.leaderboard.collect import SWEEPS_DIR, StoredRecord, equivalence_margin, load_stored
from spd_bench.leaderboard.compare import (
    Comparison,
    column_margin,
    compared,
    corrected,
    fallback_notes,
    margin_reading,
)
from spd_bench.leaderboard.display import flatten
from spd_bench.leaderboard.stats import CellStats, describe
from spd_bench.leaderboard.table import DOMAIN_TITLES, Column, scores_of
from spd_bench.results import record_files

MANIFEST = "sweep.json"
REFERENCE_DIR = "reference"
REFERENCE_METHODS = ("base", "raw_sd", "spd_random")  # run once per sweep: they ignore the swept options
VERSUS = "raw_sd"
DOMAIN_MEAN = "mean"  # the task name of a domain's mean column
MODES = ("one_at_a_time", "grid")
_NOT_AXES = {"output_dir", "cache_dir"}


def sweep_folders(results_dir: Path) -> list[Path]:
    """Every sweep under ``results_dir``: the folders of ``sweeps/`` that hold a manifest or a setting's records."""
    root = results_dir / SWEEPS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and ((p / MANIFEST).exists() or _setting_folders(p)))


def _setting_folders(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != REFERENCE_DIR and (p / "records").is_dir())


def axis_value(config: dict[str, Any], options: dict[str, dict[str, Any]], path: str) -> Any:
    """The value of a dotted config field; ``method_options.M.X`` is read from M's resolved options
    (``options``: method -> every option, defaults included), since a config holds only those set."""
    parts = path.split(".")
    if parts[0] == "method_options" and len(parts) >= 3 and parts[1] in options:
        node: Any = options[parts[1]]
        parts = parts[2:]
    else:
        node = config
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def value_text(value: Any) -> str:
    """An option value as tables, folder names and manifests spell it: compact JSON for lists."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def axis_label(path: str) -> str:
    """An axis as headers and folder names show it: ``method_options.`` left out."""
    return path.removeprefix("method_options.")


# Statistics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """A setting's mean minus raw_sd's on one column: paired by seed and item where both have per-item scores."""

    value: float
    interval: Any  # stats.Interval, or None where nothing pairs
    paired: Comparison | None


@dataclass(frozen=True)
class AblationCell:
    stats: CellStats
    delta: Delta | None  # None without raw_sd records
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class AblationRow:
    setting: str  # its folder name
    method: str
    values: dict[str, Any]  # axis -> the value this setting ran with
    cells: dict[tuple[str, str], AblationCell]  # (task, domain)


@dataclass(frozen=True)
class Section:
    """Rows that vary ``axes`` (one axis at a time: the others at their default)."""

    axes: list[str]
    rows: list[AblationRow]


@dataclass
class Ablation:
    name: str
    axes: dict[str, list[Any]]
    mode: str
    columns: list[Column]
    sections: list[Section]
    references: dict[str, dict[tuple[str, str], CellStats]]  # method -> column -> stats
    margin: float  # report.equivalence_margin of the sweep's runs, in points
    files: dict[str, Path] = field(default_factory=dict)


def _records(folder: Path) -> list[StoredRecord]:
    """The records under ``folder``; none yet (an interrupted sweep) is an empty list."""
    return load_stored(folder) if folder.is_dir() and record_files(folder) else []


def _describe(records: list[StoredRecord]) -> CellStats:
    metric = records[0].record.primary_metric
    return describe([s.record.metrics[metric] for s in records], scores_of(records, metric))


def _delta(records: list[StoredRecord], reference: list[StoredRecord], stats: CellStats) -> Delta | None:
    """The setting minus raw_sd, paired where both can be (Holm and the verdict are set per table)."""
    if not reference:
        return None
    metric = records[0].record.primary_metric  # raw_sd's records pair only when they score the same metric
    ours = scores_of(records, metric)
    theirs = scores_of(reference, metric) if all(metric in s.record.metrics for s in reference) else None
    paired = None if ours is None or theirs is None else compared(records[0].record.method, VERSUS, ours, theirs)
    if paired is None:
        mean = float(np.mean([s.record.metrics[s.record.primary_metric] for s in reference]))
        return Delta(stats.mean - mean, None, None)
    return Delta(paired.difference, paired.interval, paired)


def _holm_per_table(sections: list[Section], columns: list[Column], margin: float) -> list[Section]:
    """Each section with Holm over each of its tables (one per swept method) and the verdicts set.

    Rows are replaced, not changed: in one-at-a-time mode the default setting's row is in every section.
    """
    margins = {(c.task, c.domain): column_margin(c, margin) for c in columns}
    fixed = []
    for section in sections:
        rows = list(section.rows)
        for method in dict.fromkeys(r.method for r in rows):
            cells = {(i, task, domain): cell.delta.paired for i, r in enumerate(rows) if r.method == method
                     for (task, domain), cell in r.cells.items() if cell.delta and cell.delta.paired}
            for (i, task, domain), found in corrected(cells, {k: margins[k[1:]] for k in cells}).items():
                cell = rows[i].cells[(task, domain)]
                delta = replace(cell.delta, paired=found)  # type: ignore[arg-type]
                rows[i] = replace(rows[i], cells={**rows[i].cells, (task, domain): replace(cell, delta=delta)})
        fixed.append(Section(section.axes, rows))
    return fixed


def _by_column(records: list[StoredRecord]) -> dict[tuple[str, str, str], list[StoredRecord]]:
    """(method, task, domain) -> records of one setting (or of the references); the base model's are not
    compared, so unlike the main board's columns (compare.py) its record stays in its own domain."""
    grouped: dict[tuple[str, str, str], list[StoredRecord]] = {}
    for s in records:
        grouped.setdefault((s.record.method, s.record.task, s.record.domain), []).append(s)
    return grouped


# Building -------------------------------------------------------------------------------------


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}); delete it (the records suffice)") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a sweep manifest must be a JSON object; delete it (the records suffice)")
    return data


def _record_values(record: StoredRecord, axes: list[str]) -> dict[str, Any]:
    options = {record.record.method: record.record.method_info.get("options", {})}
    return {axis: axis_value(record.record.config, options, axis) for axis in axes}


def _infer_axes(settings: dict[str, list[StoredRecord]], swept: list[str]) -> list[str]:
    """Without a manifest: the config fields (and swept methods' options) whose values differ between settings."""
    seen: dict[str, set[str]] = {}
    for records in settings.values():
        for s in records:
            if s.record.method not in swept:
                continue
            config = {k: v for k, v in s.record.config.items() if k not in _NOT_AXES and k != "method_options"}
            options = s.record.method_info.get("options", {})
            for name, value in flatten(config) + flatten(options, f"method_options.{s.record.method}"):
                seen.setdefault(name, set()).add(value_text(value))
    return sorted(name for name, texts in seen.items() if len(texts) > 1)


def _sections(rows: list[AblationRow], axes: dict[str, list[Any]], mode: str,
              centers: dict[str, Any]) -> list[Section]:
    def order(row: AblationRow) -> tuple[int, ...]:
        return tuple(_position(axes[a], row.values[a]) for a in axes)

    if mode == "grid" or len(axes) < 2:
        return [Section(list(axes), sorted(rows, key=order))]
    sections = []
    for axis in axes:
        members = [r for r in rows if all(value_text(r.values[a]) == value_text(centers[a]) for a in axes if a != axis)]
        sections.append(Section([axis], sorted(members, key=order)))
    return sections


def _position(values: list[Any], value: Any) -> int:
    texts = [value_text(v) for v in values]
    return texts.index(value_text(value)) if value_text(value) in texts else len(texts)


def build_ablation(folder: Path) -> Ablation:
    """The ablation of one sweep folder, from its records (and its manifest, when there is one)."""
    manifest = _manifest(folder)
    listed = manifest.get("settings")  # a sweep run again under its name with other values leaves older folders
    settings = {p.name: _records(p) for p in _setting_folders(folder) if listed is None or p.name in listed}
    if not any(settings.values()):
        raise UserError(f"sweep {folder} has no records yet; run its `spd-bench sweep` command again to finish it")
    reference = _records(folder / REFERENCE_DIR)
    present = sorted({s.record.method for records in settings.values() for s in records})
    swept = manifest.get("methods") or [m for m in present if m not in REFERENCE_METHODS] or present
    axis_names = list(manifest.get("axes") or _infer_axes(settings, swept))
    if not axis_names:
        raise UserError(f"sweep {folder}: its settings do not differ in any option and it has no {MANIFEST}; delete it")
    rows: list[AblationRow] = []
    references: dict[str, dict[tuple[str, str], CellStats]] = {}
    columns: dict[tuple[str, str], Column] = {}
    observed: dict[str, list[Any]] = {axis: [] for axis in axis_names}
    shared = _by_column(reference)
    for label, records in settings.items():
        grouped = _by_column(records)
        for method in swept:
            cells: dict[tuple[str, str], AblationCell] = {}
            values: dict[str, Any] = {}
            for (m, task, domain), group in sorted(grouped.items()):
                if m != method:
                    continue
                first = group[0].record
                columns.setdefault((task, domain), Column(task, domain, first.primary_metric, first.higher_is_better, ()))
                stats = _describe(group)
                versus = grouped.get((VERSUS, task, domain)) or shared.get((VERSUS, task, domain), [])
                seeds = tuple(sorted(s.record.seed for s in group if s.record.seed is not None))
                cells[(task, domain)] = AblationCell(stats, _delta(group, versus, stats), seeds)
                values = _record_values(group[0], axis_names)
            if cells:
                rows.append(AblationRow(label, method, values, cells))
                for axis, value in values.items():
                    if value_text(value) not in map(value_text, observed[axis]):
                        observed[axis].append(value)
    for (m, task, domain), group in shared.items():  # run once: the same for every setting
        if m != "base":
            references.setdefault(m, {})[(task, domain)] = _describe(group)
    axes = {axis: _ordered(manifest.get("values", {}).get(axis), observed[axis]) for axis in axis_names}
    centers = manifest.get("center") or {a: Counter(map(value_text, observed[a])).most_common(1)[0][0] for a in axes}
    centers = {a: centers.get(a) for a in axes}
    mode = manifest.get("mode", "grid")
    ordered_columns = sorted(columns.values(), key=lambda c: (c.domain != "in", c.task))
    ordered_columns += _domain_means(ordered_columns, rows, references)
    margin = equivalence_margin(reference + [s for records in settings.values() for s in records])
    sections = _holm_per_table(_sections(rows, axes, mode, centers), ordered_columns, margin)
    return Ablation(folder.name, axes, mode, ordered_columns, sections, references, margin)


def _domain_means(columns: list[Column], rows: list[AblationRow],
                  references: dict[str, dict[tuple[str, str], CellStats]]) -> list[Column]:
    """A mean column per domain with two or more accuracy columns: the mean of the column means and of the
    differences against raw_sd, without an interval (the tasks are not independent samples), as the main board."""
    added = []
    for domain in DOMAIN_TITLES:
        members = [c for c in columns if c.domain == domain and c.higher_is_better]
        if len(members) < 2:
            continue
        mean_column = Column(DOMAIN_MEAN, domain, "mean", True, ())
        added.append(mean_column)
        for row in rows:
            cells = [row.cells.get((c.task, domain)) for c in members]
            if not all(cells):
                continue
            deltas = [c.delta.value for c in cells if c and c.delta]
            mean = float(np.mean([c.stats.mean for c in cells if c]))
            stats = CellStats(mean=mean, sd=None, n_seeds=min(c.stats.n_seeds for c in cells if c), interval=None)
            delta = Delta(float(np.mean(deltas)), None, None) if len(deltas) == len(cells) else None
            row.cells[(DOMAIN_MEAN, domain)] = AblationCell(stats, delta, ())
        for by_column in references.values():
            found = [by_column.get((c.task, domain)) for c in members]
            if all(found):
                mean = float(np.mean([f.mean for f in found if f]))
                n_seeds = min(f.n_seeds for f in found if f)
                by_column[(DOMAIN_MEAN, domain)] = CellStats(mean=mean, sd=None, n_seeds=n_seeds, interval=None)
    return added


def _ordered(declared: list[Any] | None, observed: list[Any]) -> list[Any]:
    """The manifest's order of an axis's values, then any value only the records show (sorted)."""
    declared = list(declared or [])
    known = {value_text(v) for v in declared}
    extra = [v for v in observed if value_text(v) not in known]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in extra)
    return declared + sorted(extra, key=(lambda v: v) if numeric else value_text)


# Text -----------------------------------------------------------------------------------------


def reading(ablation: Ablation) -> str:
    """The one line under every ablation table and plot that says how to read it."""
    paired = [c.delta.paired for s in ablation.sections for r in s.rows for c in r.cells.values()
              if c.delta and c.delta.paired]
    versus = (f"Δ {VERSUS}: the setting minus {VERSUS} (paired by seed and item) [95% interval], then its verdict,"
              f" bold where significant (Holm over the Δ cells of each table); {margin_reading(ablation.margin)}"
              f"{fallback_notes({c.estimate.procedure for c in paired})}"
              if VERSUS in ablation.references or any(c.delta for s in ablation.sections for r in s.rows
                                                      for c in r.cells.values()) else f"no {VERSUS} records to compare with")
    layout = ("each block varies one option with the others at their default" if ablation.mode == "one_at_a_time"
              and len(ablation.axes) > 1 else "one row per setting of the options")
    means = ("; mean columns: the mean of a domain's accuracy columns, no interval (its tasks are not independent"
             " samples)" if any(c.task == DOMAIN_MEAN for c in ablation.columns) else "")
    return (f"How to read: {layout}; each cell is the primary metric, mean over seeds [95% interval: t over the seeds"
            " with the item variance added, docs/statistics.md] (percentage points for accuracies, metric units for ↓"
            f" columns); {versus}{means}.")
