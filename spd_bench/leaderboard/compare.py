"""Paired comparisons between methods: each trained method minus raw_sd, and minus base, per column.

"Does SPD beat raw self-distillation?" asks for the difference between two methods on the same
items and seeds, which the leaderboard's change against base does not give. Per-item scores are
paired by seed (the base model's single evaluation pairs with every seed) and by item, and a
bootstrap resamples seeds, then items, so both sources of noise enter the interval and the
p-value. p-values are Holm-corrected over the cells of one table (one model, one reference), and
each cell carries its minimum detectable difference, so a null result shows what it could have
found. docs/statistics.md gives the definitions.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Sequence

import numpy as np

from spd_bench.leaderboard.collect import StoredRecord
from spd_bench.leaderboard.display import _decimals, number
from spd_bench.leaderboard.stats import CONFIDENCE, RNG_SEED, Interval, item_matrix
from spd_bench.leaderboard.table import BASE, Column, ModelTable, Row

SECTION_TITLE = "Paired comparisons"
RAW_SD = "raw_sd"
REFERENCES = (RAW_SD, BASE)  # the control that isolates SPD's projection, then the untouched model
N_PAIRED_RESAMPLES = 5000
ALPHA = round(1 - CONFIDENCE, 10)
POWER = 0.8
MDE_FACTOR = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)  # 1.960 + 0.842
_MAX_DRAWS_PER_CHUNK = 2_000_000  # bounds bootstrap memory on large evaluation sets

SeedScores = dict[int | None, np.ndarray]  # seed (None: the base model) -> per-item scores


@dataclass(frozen=True)
class Comparison:
    """One method minus a reference on one column, in the metric's own units (accuracy as a fraction)."""

    method: str
    reference: str
    seeds: tuple[int, ...]  # the method's seeds that were paired
    n_items: int
    difference: float  # mean over paired seeds of the mean per-item difference
    interval: Interval
    se: float  # standard deviation of the bootstrap differences
    p_value: float
    p_holm: float  # Holm-adjusted over the cells of its table

    @property
    def mde(self) -> float:
        """Smallest true difference a two-sided test at ALPHA finds with POWER, given this cell's SE."""
        return MDE_FACTOR * self.se


@dataclass(frozen=True)
class ComparisonTable:
    """Every compared method against one reference, for one model: one Holm family."""

    model: str
    reference: str
    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[str, str, str], Comparison]  # (method, task, domain)

    def cell(self, row: Row, column: Column) -> Comparison | None:
        return self.cells.get((row.method, column.task, column.domain))

    def n_items(self, column: Column) -> int | None:
        """The column's item count (every pair in a column scores the same items)."""
        counts = {c.n_items for key, c in self.cells.items() if key[1:] == (column.task, column.domain)}
        return counts.pop() if len(counts) == 1 else None


# Statistics -----------------------------------------------------------------------------------


def paired_differences(scores: SeedScores, reference: SeedScores) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Per-seed, per-item differences (method minus reference), one row per paired seed.

    Seeds pair where both have them; the base model, evaluated once with no seed, pairs with
    every seed. None when no seed pairs or the two scored different numbers of items.
    """
    if None in reference:
        seeds = sorted(s for s in scores if s is not None)
        against = {s: reference[None] for s in seeds}
    else:
        seeds = sorted(s for s in set(scores) & set(reference) if s is not None)
        against = reference
    if not seeds or len({len(scores[s]) for s in seeds} | {len(against[s]) for s in seeds}) != 1:
        return None
    return tuple(seeds), np.stack([scores[s] - against[s] for s in seeds])


def _item_counts(rng: np.random.Generator, n_items: int, size: int) -> np.ndarray:
    """How often each item is drawn in each of ``size`` resamples of n_items items with replacement."""
    draws = rng.integers(0, n_items, size=(size, n_items)) + n_items * np.arange(size)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n_items).reshape(size, n_items).astype(float)


def _seed_weights(rng: np.random.Generator, n_seeds: int, size: int) -> np.ndarray:
    """Each seed's share in each of ``size`` resamples of n_seeds seeds with replacement."""
    draws = rng.integers(0, n_seeds, size=(size, n_seeds))
    return (draws[:, :, None] == np.arange(n_seeds)).mean(axis=1)


def bootstrap_differences(diffs: Sequence[np.ndarray], column_key: str, keys: Sequence[str]) -> list[np.ndarray]:
    """N_PAIRED_RESAMPLES resampled mean differences for each (seeds x items) difference matrix.

    Each resample draws seeds with replacement, then items with replacement; the drawn items
    apply to every drawn seed and to both methods, which keeps the pairing by item. The item
    draws are seeded by ``column_key`` and shared by every comparison on that column; the seed
    draws by each comparison's key, so a cell does not depend on which other rows are shown.
    All matrices must have the same number of items.
    """
    n_items = diffs[0].shape[1]
    item_rng = np.random.default_rng([RNG_SEED, zlib.crc32(f"{column_key}|{n_items}".encode())])
    seed_rngs = [np.random.default_rng([RNG_SEED, zlib.crc32(key.encode())]) for key in keys]
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n_items)
    parts: list[list[np.ndarray]] = [[] for _ in diffs]
    for start in range(0, N_PAIRED_RESAMPLES, chunk):
        size = min(chunk, N_PAIRED_RESAMPLES - start)
        counts = _item_counts(item_rng, n_items, size)
        for diff, rng, out in zip(diffs, seed_rngs, parts, strict=True):
            per_seed = counts @ diff.T / n_items  # (size, seeds): mean difference on the drawn items
            out.append((_seed_weights(rng, diff.shape[0], size) * per_seed).sum(axis=1))
    return [np.concatenate(out) for out in parts]


def p_value(draws: np.ndarray) -> float:
    """Two-sided: the smaller share of resampled differences at or below 0 and at or above 0, doubled.

    Floored at 1/B (nothing rarer can be seen in B resamples) and capped at 1.
    """
    tail = min(float(np.mean(draws <= 0)), float(np.mean(draws >= 0)))
    return min(1.0, max(1.0 / len(draws), 2.0 * tail))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values: the i-th smallest is max over j <= i of (m - j + 1) p_(j), capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted.tolist()


def summarise(method: str, reference: str, seeds: tuple[int, ...], diff: np.ndarray, draws: np.ndarray) -> Comparison:
    """Point estimate, percentile interval, SE and p-value of one paired comparison (Holm is set per table)."""
    tail = 100 * ALPHA / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    p = p_value(draws)
    return Comparison(
        method=method,
        reference=reference,
        seeds=seeds,
        n_items=diff.shape[1],
        difference=float(diff.mean()),
        interval=Interval(float(low), float(high), "paired bootstrap"),
        se=float(np.std(draws, ddof=1)),
        p_value=p,
        p_holm=p,
    )


# Tables ---------------------------------------------------------------------------------------


def seed_scores(records: list[StoredRecord], metric: str) -> SeedScores | None:
    """One method's per-item scores on a column, by seed; None unless every record has them for ``metric``.

    Samples files hold the primary metric's per-item scores, so another metric has none. Two
    records of one seed (training sources mixed with --allow-mixed) cannot be paired either.
    """
    seeds = [s.record.seed for s in records]
    if not records or len(set(seeds)) < len(seeds) or any(s.record.primary_metric != metric for s in records):
        return None
    matrix = item_matrix([s.item_scores() for s in records])
    return None if matrix is None else dict(zip(seeds, matrix, strict=True))


def _column_records(records: list[StoredRecord], column: Column) -> dict[str, list[StoredRecord]]:
    """method -> records of one column; the base model's record joins every column of its task."""
    by_method: dict[str, list[StoredRecord]] = defaultdict(list)
    for s in records:
        if s.record.task == column.task and (s.record.domain == column.domain or s.record.method == BASE):
            by_method[s.record.method].append(s)
    return by_method


def _column_comparisons(
    model: str, reference: str, rows: list[Row], column: Column, records: list[StoredRecord]
) -> dict[tuple[str, str, str], Comparison]:
    by_method = _column_records(records, column)
    reference_scores = seed_scores(by_method.get(reference, []), column.metric)
    if reference_scores is None:
        return {}
    paired: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
    for row in rows:
        scores = seed_scores(by_method.get(row.method, []), column.metric)
        pair = paired_differences(scores, reference_scores) if scores is not None else None
        if pair is not None:
            paired[row.method] = pair
    if not paired:
        return {}
    column_key = f"{model}|{column.task}|{column.domain}|{column.metric}"
    keys = [f"{model}|{method}|vs|{reference}|{column.task}|{column.domain}|{column.metric}" for method in paired]
    draws = bootstrap_differences([diff for _, diff in paired.values()], column_key, keys)
    return {
        (method, column.task, column.domain): summarise(method, reference, seeds, diff, d)
        for (method, (seeds, diff)), d in zip(paired.items(), draws, strict=True)
    }


def _comparison_table(table: ModelTable, records: list[StoredRecord], reference: str) -> ComparisonTable | None:
    rows = [r for r in table.rows if r.method not in (BASE, reference)]
    if not rows or all(r.method != reference for r in table.rows):
        return None
    cells: dict[tuple[str, str, str], Comparison] = {}
    for column in table.columns:
        cells.update(_column_comparisons(table.model, reference, rows, column, records))
    if not cells:
        return None
    adjusted = holm([c.p_value for c in cells.values()])
    cells = {key: replace(c, p_holm=p) for (key, c), p in zip(cells.items(), adjusted, strict=True)}
    return ComparisonTable(table.model, reference, rows, table.columns, cells)


def compare_methods(tables: list[ModelTable], stored: list[StoredRecord]) -> list[ComparisonTable]:
    """Per model, every other method against raw_sd, then every trained method against base, where present.

    A table appears only when at least one of its cells has per-item scores on both sides.
    """
    compared = []
    for table in tables:
        records = [s for s in stored if s.record.model == table.model]
        for reference in REFERENCES:
            result = _comparison_table(table, records, reference)
            if result is not None:
                compared.append(result)
    return compared


# Text shared by every format ------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonText:
    value: str  # "+0.4"
    interval: str  # "[-1.2, 2.0]"
    p: str  # "p=0.62"
    holm: str  # "(Holm 1.00)"
    mde: str  # "MDE 2.8"
    significant: bool  # Holm-adjusted p below ALPHA
    details: str  # seeds, items, SE: for tooltips

    @property
    def tests(self) -> str:
        return f"{self.p} {self.holm}"


def p_text(p: float) -> str:
    """Two decimals, three below 0.1 (where the 0.05 line is), '<0.001' below that."""
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def comparison_text(table: ComparisonTable, row: Row, column: Column) -> ComparisonText | None:
    cell = table.cell(row, column)
    if cell is None:
        return None
    d, scale = _decimals(column.higher_is_better), column.scale
    seeds = f"seeds {', '.join(str(s) for s in cell.seeds)}"
    return ComparisonText(
        value=number(cell.difference, scale, d, signed=True),
        interval=f"[{number(cell.interval.low, scale, d)}, {number(cell.interval.high, scale, d)}]",
        p="p" + ("" if cell.p_value < 0.001 else "=") + p_text(cell.p_value),
        holm=f"(Holm {p_text(cell.p_holm)})",
        mde=f"MDE {number(cell.mde, scale, d)}",
        significant=cell.p_holm < ALPHA,
        details=f"{seeds}; {cell.n_items} items; SE {number(cell.se, scale, d + 1)}",
    )


def items_label(table: ComparisonTable, column: Column) -> str:
    """'500 items', or '' for a column without comparisons."""
    n_items = table.n_items(column)
    return "" if n_items is None else f"{n_items} items"


def column_label(table: ComparisonTable, column: Column) -> str:
    """The metric and, where the column has comparisons, its item count."""
    return ", ".join(p for p in (column.metric_label, items_label(table, column)) if p)


def title(table: ComparisonTable) -> str:
    return f"{table.model}: versus {table.reference}"


def reading(table: ComparisonTable) -> str:
    """The one line under each comparison table that says how to read it."""
    pairing = "its single evaluation paired with every seed" if table.reference == BASE else "paired by seed"
    return (
        f"How to read: each cell is the row's method minus {table.reference} ({pairing}, and by item;"
        " percentage points, metric units for ↓ columns), [95% interval], two-sided p"
        f" (Holm over the {len(table.cells)} cells of this table; bold where below {ALPHA:g}),"
        f" MDE = smallest true difference detected with {POWER:.0%} power at alpha {ALPHA:g};"
        f" paired bootstrap, {N_PAIRED_RESAMPLES} resamples of seeds then items, seed {RNG_SEED};"
        " —: no per-item scores to pair."
    )
