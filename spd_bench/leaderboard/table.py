"""Lay stored records out as leaderboard tables: one per model, methods by evaluation tasks.

Rows are methods, the base model first, then methods that use no external signal, then those
that do (labels, tests, a reward model), which are upper-bound references rather than rivals.
Columns are evaluation tasks, in-domain before out-of-domain, each showing one metric.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spd_bench.leaderboard.collect import DOMAINS, StoredRecord
from spd_bench.leaderboard.stats import (
    ALPHA,
    SEEDS_AND_ITEMS,
    CellStats,
    Scores,
    against_base,
    best_versus_runner_up,
    describe,
    holm,
    make_scores,
)

if TYPE_CHECKING:  # compare.py builds on these tables, so it is imported only for the annotation
    from spd_bench.leaderboard.compare import ComparisonTable
    from spd_bench.leaderboard.diagnostics import DiagnosticsTable

BASE = "base"
GROUP_NO_SIGNAL = "no external signal"
GROUP_EXTERNAL = "external signal"
DOMAIN_TITLES = {"in": "in-domain", "out": "out-of-domain"}

LEGEND = [
    "Each cell: mean over seeds, ±standard deviation over seeds (where there are several), [95% interval], change against base"
    " (percentage points for accuracies, metric units for ↓ columns).",
    f"Intervals ({SEEDS_AND_ITEMS}, docs/statistics.md): t over the seed means with the variance of the shared"
    " evaluation items added; one seed or the base model: t over items; no per-item scores: t over seeds;"
    " none for a single evaluation without per-item scores.",
    f"Bold: best in its column, marked only where its paired difference from the runner-up is significant"
    f" (same procedure, Holm over the table's columns, p below {ALPHA:g})."
    " ↓: lower is better. †: fewer seeds than the method has elsewhere.",
]


@dataclass(frozen=True)
class Column:
    task: str
    domain: str  # "in" | "out"
    metric: str
    higher_is_better: bool
    data_layers: tuple[str, ...]

    @property
    def scale(self) -> float:
        """Accuracies (fractions) are shown in percentage points; lower-is-better metrics as stored."""
        return 100.0 if self.higher_is_better else 1.0

    @property
    def metric_label(self) -> str:
        return self.metric if self.higher_is_better else f"{self.metric} ↓"


@dataclass(frozen=True)
class Row:
    method: str
    external_signal: str | None

    @property
    def group(self) -> str:
        return GROUP_EXTERNAL if self.external_signal else GROUP_NO_SIGNAL

    @property
    def label(self) -> str:
        return f"{self.method} ({self.external_signal})" if self.external_signal else self.method


@dataclass(frozen=True)
class Cell:
    """Statistics of one (model, method, task, metric), with what produced them."""

    model: str
    method: str
    external_signal: str | None
    task: str
    domain: str
    metric: str
    higher_is_better: bool
    seeds: tuple[int, ...]
    data_layers: tuple[str, ...]
    stats: CellStats


@dataclass(frozen=True)
class Summary:
    """Mean over a domain's columns; no interval (columns are not independent samples)."""

    mean: float
    delta: float | None


@dataclass
class ModelTable:
    model: str
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[str, str, str, str], Cell]  # (method, task, domain, metric): every metric
    summary_domains: list[str]
    summaries: dict[tuple[str, str], Summary]  # (method, domain)
    notes: list[str]

    def cell(self, row: Row, column: Column) -> Cell | None:
        return self.cells.get((row.method, column.task, column.domain, column.metric))

    def short_of_seeds(self, row: Row, column: Column) -> bool:
        """Whether a cell has fewer seeds than the same method elsewhere in the table (a missing run)."""
        cell = self.cell(row, column)
        counts = [c.stats.n_seeds for c in (self.cell(row, col) for col in self.columns) if c is not None]
        return cell is not None and cell.stats.n_seeds < max(counts)

    def groups(self) -> list[tuple[str, list[Row]]]:
        return [
            (g, [r for r in self.rows if r.group == g])
            for g in (GROUP_NO_SIGNAL, GROUP_EXTERNAL)
            if any(r.group == g for r in self.rows)
        ]

    def columns_in(self, domain: str) -> list[Column]:
        return [c for c in self.columns if c.domain == domain]


@dataclass
class Leaderboard:
    tables: list[ModelTable]
    legend: list[str] = field(default_factory=lambda: list(LEGEND))
    files: dict[str, Path] = field(default_factory=dict)  # format -> written file
    comparisons: list[ComparisonTable] = field(default_factory=list)  # paired, per model and reference
    diagnostics: list[DiagnosticsTable] = field(default_factory=list)  # per model and training source, when recorded


def _most_common(values: list[object]) -> object:
    return Counter(values).most_common(1)[0][0]


def _column_records(stored: list[StoredRecord]) -> dict[tuple[str, str], list[StoredRecord]]:
    """(task, domain) -> records; the base model's record joins every column of its task."""
    trained: dict[tuple[str, str], list[StoredRecord]] = defaultdict(list)
    base: dict[str, list[StoredRecord]] = defaultdict(list)
    for s in stored:
        if s.record.method == BASE:
            base[s.record.task].append(s)
        else:
            trained[(s.record.task, s.record.domain)].append(s)
    for task, records in base.items():
        keys = [k for k in trained if k[0] == task] or [(task, records[0].record.domain)]
        for key in keys:
            trained[key].extend(records)
    return trained


def _column(task: str, domain: str, records: list[StoredRecord], metric: str | None) -> Column | None:
    """The column's metric (the records' primary metric unless overridden); None if it has none."""
    chosen = metric or str(_most_common([s.record.primary_metric for s in records]))
    having = [s.record for s in records if chosen in s.record.metrics]
    if not having:
        return None
    layers = tuple(sorted({s.record.eval_settings.data_layer for s in records}))
    return Column(task, domain, chosen, bool(_most_common([r.higher_is_better for r in having])), layers)


def scores_of(records: list[StoredRecord], metric: str) -> Scores | None:
    """One method's scores on a column for ``metric``: per-item scores only where it is every record's
    primary metric (the samples files hold the primary metric's scores); None when seeds repeat."""
    primary = all(s.record.primary_metric == metric for s in records)
    return make_scores([s.record.seed for s in records], [float(s.record.metrics[metric]) for s in records],
                       [s.item_scores() for s in records] if primary else [])


def _method_cells(model: str, method: str, column: Column,
                  records: list[StoredRecord]) -> dict[str, tuple[Cell, Scores | None]]:
    """Every metric of one method on one column, with the scores its statistics come from."""
    result = {}
    for metric in sorted({m for s in records for m in s.record.metrics}):
        having = [s for s in records if metric in s.record.metrics]
        scores = scores_of(having, metric)
        cell = Cell(
            model=model,
            method=method,
            external_signal=having[0].record.external_signal,
            task=column.task,
            domain=column.domain,
            metric=metric,
            higher_is_better=bool(_most_common([s.record.higher_is_better for s in having])),
            seeds=tuple(sorted(s.record.seed for s in having if s.record.seed is not None)),
            data_layers=tuple(sorted({s.record.eval_settings.data_layer for s in having})),
            stats=describe([float(s.record.metrics[metric]) for s in having], scores),
        )
        result[metric] = (cell, scores)
    return result


def _column_cells(model: str, column: Column, records: list[StoredRecord]
                  ) -> tuple[dict[tuple[str, str, str, str], Cell], dict[str, Scores | None]]:
    """The column's cells (every metric) with their change against base, and each method's scores
    for the column's shown metric (for the bold mark)."""
    by_method: dict[str, list[StoredRecord]] = defaultdict(list)
    for s in records:
        by_method[s.record.method].append(s)
    raw = {method: _method_cells(model, method, column, recs) for method, recs in by_method.items()}
    base = raw.get(BASE, {})
    cells: dict[tuple[str, str, str, str], Cell] = {}
    for method, metrics in raw.items():
        for metric, (cell, scores) in metrics.items():
            if method != BASE and metric in base:
                base_cell, base_scores = base[metric]
                cell = replace(cell, stats=against_base(cell.stats, scores, base_cell.stats, base_scores))
            cells[(method, column.task, column.domain, metric)] = cell
    shown = {method: metrics[column.metric][1] for method, metrics in raw.items() if column.metric in metrics}
    return cells, shown


def _mark_best(table: ModelTable, scores: dict[Column, dict[str, Scores | None]]) -> None:
    """Bold the best cell of each column where it beats the runner-up significantly: the paired
    procedure of every table, Holm over the columns of this table (one test per column)."""
    tests = []
    for column in table.columns:
        means = {r.method: c.stats.mean for r in table.rows if (c := table.cell(r, column)) is not None}
        found = best_versus_runner_up(means, scores[column], column.higher_is_better)
        if found is not None:
            tests.append((column, *found))
    adjusted = holm([estimate.p_value for _, _, estimate in tests])
    for (column, method, estimate), p in zip(tests, adjusted, strict=True):
        if p < ALPHA and estimate.mean > 0:
            key = (method, column.task, column.domain, column.metric)
            table.cells[key] = replace(table.cells[key], stats=replace(table.cells[key].stats, best=True))


def _order(names: list[str], preferred: list[str] | None) -> list[str]:
    """``preferred`` order first (as the user listed them), the rest by name."""
    rank = {name: i for i, name in enumerate(preferred or [])}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _rows(cells: dict[tuple[str, str, str, str], Cell], method_order: list[str] | None) -> list[Row]:
    signal: dict[str, str | None] = {}
    for cell in cells.values():
        signal.setdefault(cell.method, cell.external_signal)
    rows = [Row(m, signal[m]) for m in _order([m for m in signal if m != BASE], method_order)]
    base = [Row(BASE, None)] if BASE in signal else []
    return base + [r for r in rows if r.group == GROUP_NO_SIGNAL] + [r for r in rows if r.group == GROUP_EXTERNAL]


def _summaries(table: ModelTable) -> None:
    """Mean over each domain's percentage columns, for methods that have every one of them."""
    for domain in DOMAINS:
        columns = [c for c in table.columns_in(domain) if c.higher_is_better]
        if not columns:
            continue
        table.summary_domains.append(domain)
        for row in table.rows:
            cells = [table.cell(row, c) for c in columns]
            if all(cells):
                table.summaries[(row.method, domain)] = Summary(
                    float(np.mean([c.stats.mean for c in cells if c])), None
                )
        base = table.summaries.get((BASE, domain))
        if base is not None:
            for (method, d), summary in list(table.summaries.items()):
                if d == domain and method != BASE:
                    table.summaries[(method, d)] = Summary(summary.mean, summary.mean - base.mean)


def _seed_note(table: ModelTable) -> str:
    parts = []
    for row in table.rows:
        if row.method == BASE:
            parts.append("base 1 evaluation (nothing trained)")
            continue
        present = [(col, table.cell(row, col)) for col in table.columns]
        counts = [c.stats.n_seeds for _, c in present if c is not None]
        if not counts:
            continue
        short = [
            f"{c.stats.n_seeds} on {col.task} †"
            for col, c in present
            if c is not None and table.short_of_seeds(row, col)
        ]
        parts.append(" ".join([f"{row.method} {max(counts)}"] + ([f"({', '.join(short)})"] if short else [])))
    return "Seeds: " + "; ".join(parts) + "."


def _budget_note(records: list[StoredRecord], rows: list[Row]) -> str | None:
    budgets: dict[str, set[str]] = defaultdict(set)
    for s in records:
        budget = s.record.method_info.get("budget")
        if s.record.method != BASE and isinstance(budget, dict):
            budgets[s.record.method].add(
                " / ".join(str(budget.get(k, "?")) for k in ("n_examples", "n_tokens", "epochs"))
            )
    parts = [
        f"{r.method} {next(iter(budgets[r.method])) if len(budgets[r.method]) == 1 else 'varies'}"
        for r in rows
        if r.method in budgets
    ]
    return "Training budget (examples / tokens / epochs): " + "; ".join(parts) + "." if parts else None


def _notes(
    table: ModelTable, records: list[StoredRecord], dropped: list[str], metric: str | None, conflicts: list[str]
) -> list[str]:
    notes = ["Data layer per column: " + "; ".join(f"{c.task} {', '.join(c.data_layers)}" for c in table.columns) + "."]
    notes.append(_seed_note(table))
    budget = _budget_note(records, table.rows)
    if budget:
        notes.append(budget)
    excluded = [c.task for c in table.columns if not c.higher_is_better]
    if excluded and table.summary_domains:
        notes.append(f"Means leave out lower-is-better columns: {', '.join(excluded)}.")
    if dropped:
        notes.append(f"Left out, no {metric} metric: {', '.join(dropped)}.")
    notes.extend(
        f"Mixed settings (allowed): {c.split(': ', 1)[1]}." for c in conflicts if c.startswith(f"{table.model}/")
    )
    commands = list(
        dict.fromkeys(str(s.record.provenance["command"]) for s in records if s.record.provenance.get("command"))
    )
    if commands:
        notes.append("Reproduce: " + "; ".join(f"`{c}`" for c in commands))
    return notes


def _model_table(
    model: str,
    records: list[StoredRecord],
    metric: str | None,
    method_order: list[str] | None,
    task_order: list[str] | None,
    conflicts: list[str],
) -> ModelTable:
    columns: list[Column] = []
    cells: dict[tuple[str, str, str, str], Cell] = {}
    scores: dict[Column, dict[str, Scores | None]] = {}
    dropped: list[str] = []
    for (task, domain), column_records in _column_records(records).items():
        column = _column(task, domain, column_records, metric)
        if column is None:
            dropped.append(task)
            continue
        columns.append(column)
        column_cells, scores[column] = _column_cells(model, column, column_records)
        cells.update(column_cells)
    rank = {t: i for i, t in enumerate(task_order or [])}
    columns.sort(key=lambda c: (DOMAINS.index(c.domain), rank.get(c.task, len(rank)), c.task))
    table = ModelTable(model, _rows(cells, method_order), columns, cells, [], {}, [])
    _mark_best(table, scores)
    _summaries(table)
    table.notes = _notes(table, records, sorted(set(dropped)), metric, conflicts)
    return table


def build_tables(
    stored: list[StoredRecord],
    metric: str | None = None,
    method_order: list[str] | None = None,
    task_order: list[str] | None = None,
    conflicts: list[str] | None = None,
) -> list[ModelTable]:
    """One table per model (in name order); ``metric`` replaces each task's primary metric."""
    by_model: dict[str, list[StoredRecord]] = defaultdict(list)
    for s in stored:
        by_model[s.record.model].append(s)
    tables = [_model_table(m, by_model[m], metric, method_order, task_order, conflicts or []) for m in sorted(by_model)]
    return [t for t in tables if t.columns]
