"""Cell statistics: mean over seeds, spread, 95% intervals and change against the base model.

On small evaluation sets most of the noise comes from which items were drawn, so intervals are
bootstrapped over evaluation items whenever per-item scores exist; otherwise the spread over
seeds gives a t-interval. Resampling is seeded per cell, so tables are reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
RNG_SEED = 0
_MAX_DRAWS_PER_CHUNK = 2_000_000  # bounds bootstrap memory on large evaluation sets


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "bootstrap" (over items) or "t" (over seeds)

    def shifted(self, by: float) -> Interval:
        return Interval(self.low + by, self.high + by, self.method)

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class CellStats:
    """One (model, method, task, metric) cell, in the metric's own units (accuracy as a fraction)."""

    mean: float
    sd: float | None  # over seeds; None for a single evaluation
    n_seeds: int
    interval: Interval | None  # None: one evaluation and no per-item scores
    delta: float | None = None  # mean minus the base model's mean
    delta_rel: float | None = None  # delta / base mean
    delta_interval: Interval | None = None
    best: bool = False


def item_matrix(item_scores: list[list[float] | None]) -> np.ndarray | None:
    """Per-item scores, one row per seed; None unless every seed scored the same number of items.

    Shared by the cell intervals (seed-averaged) and the paired comparisons (seed by seed).
    """
    if not item_scores or any(s is None or len(s) == 0 for s in item_scores):
        return None
    if len({len(s) for s in item_scores if s is not None}) != 1:
        return None
    return np.asarray(item_scores, dtype=float)


def seed_average(item_scores: list[list[float] | None]) -> np.ndarray | None:
    """Per-item scores averaged over seeds; None unless every seed scored the same number of items."""
    matrix = item_matrix(item_scores)
    return None if matrix is None else matrix.mean(axis=0)


def t_interval(values: list[float]) -> Interval | None:
    """Student-t interval of the mean over seeds; None below two seeds."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return Interval(mean - half, mean + half, "t")


def bootstrap_interval(item_scores: np.ndarray, key: str) -> Interval:
    """Percentile interval of the item mean, resampling items with replacement.

    ``key`` names the cell: it seeds the generator, so each cell is reproducible on its own.
    """
    rng = np.random.default_rng([RNG_SEED, zlib.crc32(key.encode())])
    n = len(item_scores)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // n)
    means: list[np.ndarray] = []
    for start in range(0, N_RESAMPLES, chunk):
        size = min(chunk, N_RESAMPLES - start)
        means.append(item_scores[rng.integers(0, n, size=(size, n))].mean(axis=1))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return Interval(float(low), float(high), "bootstrap")


def describe(values: list[float], items: np.ndarray | None, key: str) -> CellStats:
    """Mean, spread and interval of one cell from its per-seed values and seed-averaged items."""
    interval = bootstrap_interval(items, key) if items is not None else t_interval(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return CellStats(mean=float(np.mean(values)), sd=sd, n_seeds=len(values), interval=interval)


def against_base(
    cell: CellStats, items: np.ndarray | None, base: CellStats, base_items: np.ndarray | None, key: str
) -> CellStats:
    """Add the change against the base model.

    With per-item scores on both sides the change is bootstrapped on paired items (the same
    items are drawn for both); otherwise the cell's interval is shifted by the base mean.
    """
    delta = cell.mean - base.mean
    if items is not None and base_items is not None and len(items) == len(base_items):
        delta_interval: Interval | None = bootstrap_interval(items - base_items, key + "/delta")
    else:
        delta_interval = cell.interval.shifted(-base.mean) if cell.interval else None
    delta_rel = delta / base.mean if base.mean != 0 else None
    return dataclasses.replace(cell, delta=delta, delta_rel=delta_rel, delta_interval=delta_interval)


def best_of(cells: dict[str, CellStats], higher_is_better: bool) -> str | None:
    """The key of the best cell, only when its interval clears the runner-up's; else None."""
    if len(cells) < 2:
        return None
    ranked = sorted(cells, key=lambda k: cells[k].mean, reverse=higher_is_better)
    best, runner_up = cells[ranked[0]], cells[ranked[1]]
    if best.mean == runner_up.mean or best.interval is None or runner_up.interval is None:
        return None
    return None if best.interval.overlaps(runner_up.interval) else ranked[0]
