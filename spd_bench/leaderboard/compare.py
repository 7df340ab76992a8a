"""Paired comparisons between methods: each trained method minus raw_sd, and minus base, per column.

"Does SPD beat raw self-distillation?" asks for the difference between two methods on the same
items and seeds, which the leaderboard's change against base does not give. Scores are paired by
seed (the base model's single evaluation pairs with every seed) and by item, and the procedure of
every table (stats.estimate: t over the seed-level differences with the item variance added)
gives the interval and the p-value. p-values are Holm-corrected over the cells of one table (one
model, one reference), and each cell gets a verdict: higher, lower, equivalent within the margin
of the run's config (``report.equivalence_margin``), or inconclusive. docs/statistics.md gives
the definitions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Hashable, TypeVar

from spd_bench.leaderboard.collect import StoredRecord
from spd_bench.leaderboard.display import _decimals, number
from spd_bench.leaderboard.stats import (
    ALPHA,
    EQUIVALENT,
    HIGHER,
    ITEMS_ONLY,
    LOWER,
    SEEDS_ONLY,
    Estimate,
    Interval,
    Scores,
    estimate,
    holm,
    pair,
    verdict,
)
from spd_bench.leaderboard.table import BASE, Column, ModelTable, Row, scores_of

SECTION_TITLE = "Paired comparisons"
RAW_SD = "raw_sd"
REFERENCES = (RAW_SD, BASE)  # the control that isolates SPD's projection, then the untouched model
Key = TypeVar("Key", bound=Hashable)
FALLBACK_MARKS = {ITEMS_ONLY: "‡", SEEDS_ONLY: "§"}  # cells whose interval misses one source of noise
FALLBACK_NOTES = {
    ITEMS_ONLY: "‡ one seed: t over items only, the variance between training runs is not in the interval",
    SEEDS_ONLY: "§ no per-item scores: t over seeds only, the variance of the shared items is not in the interval",
}


@dataclass(frozen=True)
class Comparison:
    """One method minus a reference on one column, in the metric's own units (accuracy as a fraction)."""

    method: str
    reference: str
    seeds: tuple[int, ...]  # the method's seeds that were paired
    estimate: Estimate
    p_holm: float  # Holm-adjusted over the cells of its table
    verdict: str  # higher | lower | equivalent | inconclusive, set with p_holm
    margin: float | None  # the equivalence margin in the metric's units; None: the column has none

    @property
    def difference(self) -> float:
        return self.estimate.mean

    @property
    def interval(self) -> Interval:
        return self.estimate.interval

    @property
    def p_value(self) -> float:
        return self.estimate.p_value

    @property
    def n_items(self) -> int:
        return self.estimate.n_items


def column_margin(column: Column, margin_points: float) -> float | None:
    """The equivalence margin in a column's units: points for accuracies; none for metric-unit (↓) columns."""
    return margin_points / column.scale if column.higher_is_better else None


def compared(method: str, reference: str, scores: Scores, reference_scores: Scores) -> Comparison | None:
    """The paired estimate of one method minus a reference, before Holm (p_holm is the raw p)."""
    paired = pair(scores, reference_scores)
    found = estimate(paired[1]) if paired is not None else None
    if paired is None or found is None:
        return None
    return Comparison(method, reference, paired[0], found, found.p_value, verdict(found, found.p_value, None), None)


def corrected(cells: dict[Key, Comparison], margins: dict[Key, float | None]) -> dict[Key, Comparison]:
    """Holm over the cells of one table, then each cell's verdict against its column's margin."""
    adjusted = holm([c.p_value for c in cells.values()])
    return {key: replace(c, p_holm=p, verdict=verdict(c.estimate, p, margins[key]), margin=margins[key])
            for (key, c), p in zip(cells.items(), adjusted, strict=True)}


@dataclass(frozen=True)
class ComparisonTable:
    """Every compared method against one reference, for one model: one Holm family."""

    model: str
    reference: str
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[str, str, str], Comparison]  # (method, task, domain)
    margin: float  # report.equivalence_margin, in points

    def cell(self, row: Row, column: Column) -> Comparison | None:
        return self.cells.get((row.method, column.task, column.domain))

    def n_items(self, column: Column) -> int | None:
        """The column's item count where its comparisons pair items (every pair in a column scores the same items)."""
        counts = {c.n_items for key, c in self.cells.items()
                  if key[1:] == (column.task, column.domain) and c.estimate.procedure != SEEDS_ONLY}
        return counts.pop() if len(counts) == 1 else None


# Tables ---------------------------------------------------------------------------------------


def _column_records(records: list[StoredRecord], column: Column) -> dict[str, list[StoredRecord]]:
    """method -> records of one column; the base model's record joins every column of its task."""
    by_method: dict[str, list[StoredRecord]] = defaultdict(list)
    for s in records:
        if s.record.task == column.task and (s.record.domain == column.domain or s.record.method == BASE):
            by_method[s.record.method].append(s)
    return by_method


def _scores(records: list[StoredRecord], metric: str) -> Scores | None:
    having = [s for s in records if metric in s.record.metrics]
    return scores_of(having, metric) if having and len(having) == len(records) else None


def _column_comparisons(reference: str, rows: list[Row], column: Column, records: list[StoredRecord]
                        ) -> dict[tuple[str, str, str], Comparison]:
    by_method = _column_records(records, column)
    reference_scores = _scores(by_method.get(reference, []), column.metric)
    if reference_scores is None:
        return {}
    cells = {}
    for row in rows:
        scores = _scores(by_method.get(row.method, []), column.metric)
        found = compared(row.method, reference, scores, reference_scores) if scores is not None else None
        if found is not None:
            cells[(row.method, column.task, column.domain)] = found
    return cells


def _comparison_table(table: ModelTable, records: list[StoredRecord], reference: str,
                      margin: float) -> ComparisonTable | None:
    rows = [r for r in table.rows if r.method not in (BASE, reference)]
    if not rows or all(r.method != reference for r in table.rows):
        return None
    cells: dict[tuple[str, str, str], Comparison] = {}
    margins: dict[tuple[str, str, str], float | None] = {}
    for column in table.columns:
        found = _column_comparisons(reference, rows, column, records)
        cells.update(found)
        margins.update({key: column_margin(column, margin) for key in found})
    if not cells:
        return None
    return ComparisonTable(table.model, reference, rows, table.columns, corrected(cells, margins), margin)


def compare_methods(tables: list[ModelTable], stored: list[StoredRecord], margin: float) -> list[ComparisonTable]:
    """Per model, every other method against raw_sd, then every trained method against base, where present.

    ``margin``: the equivalence margin in points (report.equivalence_margin). A table appears only
    when at least one of its cells pairs.
    """
    tables_out = []
    for table in tables:
        records = [s for s in stored if s.record.model == table.model]
        for reference in REFERENCES:
            result = _comparison_table(table, records, reference, margin)
            if result is not None:
                tables_out.append(result)
    return tables_out


# Text shared by every format ------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonText:
    value: str  # "+0.4"
    interval: str  # "[-1.2, 2.0]"
    p: str  # "p=0.62"
    holm: str  # "(Holm 1.00)"
    verdict: str  # "inconclusive", "equivalent within ±2.0", "higher", "lower"
    mark: str  # "‡" or "§" where the interval misses a source of noise, else ""
    significant: bool  # Holm-adjusted p below ALPHA
    details: str  # seeds, items, SE, df, procedure: for tooltips

    @property
    def tests(self) -> str:
        return f"{self.p} {self.holm}"

    @property
    def summary(self) -> str:
        """Interval, tests and verdict: everything after the value, as each format prints it."""
        return " ".join(p for p in (self.interval, self.tests, self.verdict, self.mark) if p)


def p_text(p: float) -> str:
    """Two decimals, three below 0.1 (where the 0.05 line is), '<0.001' below that."""
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def verdict_text(cell: Comparison, column: Column) -> str:
    """The verdict as tables and sentences word it; equivalence names its margin."""
    if cell.verdict == EQUIVALENT and cell.margin is not None:
        return f"equivalent within ±{number(cell.margin, column.scale, _decimals(column.higher_is_better))}"
    return cell.verdict


def describe_comparison(cell: Comparison, column: Column) -> ComparisonText:
    """The text of one comparison in a column's units, shared by the tables, the sweeps and the sentences."""
    d, scale = _decimals(column.higher_is_better), column.scale
    seeds = f"seeds {', '.join(str(s) for s in cell.seeds)}"
    items = f"{cell.n_items} items" if cell.estimate.procedure != SEEDS_ONLY else "no per-item scores"
    return ComparisonText(
        value=number(cell.difference, scale, d, signed=True),
        interval=f"[{number(cell.interval.low, scale, d)}, {number(cell.interval.high, scale, d)}]",
        p="p" + ("" if cell.p_value < 0.001 else "=") + p_text(cell.p_value),
        holm=f"(Holm {p_text(cell.p_holm)})",
        verdict=verdict_text(cell, column),
        mark=FALLBACK_MARKS.get(cell.estimate.procedure, ""),
        significant=cell.verdict in (HIGHER, LOWER),
        details=f"{seeds}; {items}; SE {number(cell.estimate.se, scale, d + 1)};"
                f" {cell.estimate.df:.1f} df; {cell.estimate.procedure}",
    )


def comparison_text(table: ComparisonTable, row: Row, column: Column) -> ComparisonText | None:
    cell = table.cell(row, column)
    return None if cell is None else describe_comparison(cell, column)


def items_label(table: ComparisonTable, column: Column) -> str:
    """'500 items', or '' for a column without paired items."""
    n_items = table.n_items(column)
    return "" if n_items is None else f"{n_items} items"


def column_label(table: ComparisonTable, column: Column) -> str:
    """The metric and, where the column has comparisons, its item count."""
    return ", ".join(p for p in (column.metric_label, items_label(table, column)) if p)


def title(table: ComparisonTable) -> str:
    return f"{table.model}: versus {table.reference}"


def margin_reading(margin: float) -> str:
    """How verdicts are decided, for every reading line that shows them."""
    return (f"verdict: higher/lower where Holm p is below {ALPHA:g}, equivalent where the 95% interval lies inside"
            f" ±{margin:g} points (report.equivalence_margin; accuracy columns only), else inconclusive")


def fallback_notes(procedures: set[str]) -> str:
    """The notes of the fallback marks that occur, each with a leading '; '."""
    return "".join(f"; {FALLBACK_NOTES[p]}" for p in FALLBACK_NOTES if p in procedures)


def reading(table: ComparisonTable) -> str:
    """The one line under each comparison table that says how to read it."""
    pairing = "its single evaluation paired with every seed" if table.reference == BASE else "paired by seed"
    procedures = {c.estimate.procedure for c in table.cells.values()}
    return (
        f"How to read: each cell is the row's method minus {table.reference} ({pairing}, and by item;"
        " percentage points, metric units for ↓ columns), [95% interval: t over the seed-level differences"
        " with the item variance added, docs/statistics.md], two-sided p"
        f" (Holm over the {len(table.cells)} cells of this table; bold where below {ALPHA:g}),"
        f" {margin_reading(table.margin)}{fallback_notes(procedures)}; —: nothing to pair."
    )
