"""The one inference procedure of every table: means, differences, 95% intervals, p-values, Holm, verdicts.

A benchmark number has two sources of noise: which training runs (seeds) were drawn and which
evaluation items were drawn. With 3-10 seeds the first needs Student-t quantiles and the second
is shared by every seed (all seeds score the same items), so it never shows in the spread over
seeds. ``estimate`` therefore takes a seeds-by-items matrix (scores, or paired differences),
uses the spread of the seed means with the item variance added, and a t quantile whose degrees
of freedom go from S - 1 (seed noise dominates) to n - 1 (item noise dominates) with their
shares of the variance. docs/statistics.md argues the choice; tests/test_statistics_coverage.py
checks its coverage by simulation. The same function gives the leaderboard's cell intervals, the
change against base, the bold marks, the paired comparison tables and the sweep tables.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA = round(1 - CONFIDENCE, 10)

# How an estimate was made, from the richest data to the poorest (shown in CSVs and tooltips).
SEEDS_AND_ITEMS = "seeds+items t"  # the procedure: seed-level spread plus the shared item variance
ITEMS_ONLY = "items t (1 seed)"  # one seed (or the base model): training-run variance cannot be seen
SEEDS_ONLY = "seeds t (no items)"  # no per-item scores: the shared item variance cannot be seen

HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE = "higher", "lower", "equivalent", "inconclusive"

SeedScores = dict[int | None, np.ndarray]  # seed (None: the base model's single evaluation) -> scores


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # one of SEEDS_AND_ITEMS, ITEMS_ONLY, SEEDS_ONLY


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and items with its standard error and the t degrees of freedom for it."""

    mean: float
    se: float
    df: float
    procedure: str
    n_seeds: int
    n_items: int  # 1 where only per-seed values exist

    @property
    def interval(self) -> Interval:
        half = float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, self.df)) * self.se
        return Interval(self.mean - half, self.mean + half, self.procedure)

    @property
    def p_value(self) -> float:
        """Two-sided, against a true value of 0."""
        if self.se == 0.0:
            return 1.0 if self.mean == 0.0 else 0.0
        return float(2.0 * scipy_stats.t.sf(abs(self.mean) / self.se, self.df))


def _mean_squares(matrix: np.ndarray) -> tuple[float, float]:
    """(MS_items, MS_residual) of the two-way ANOVA of seeds x items."""
    n_seeds, n_items = matrix.shape
    seed_means, item_means, grand = matrix.mean(axis=1), matrix.mean(axis=0), matrix.mean()
    ms_items = n_seeds * float(item_means.var(ddof=1))
    residual = matrix - seed_means[:, None] - item_means[None, :] + grand
    return ms_items, float((residual**2).sum()) / ((n_seeds - 1) * (n_items - 1))


def _item_variance(matrix: np.ndarray) -> float:
    """Variance of the overall mean due to the items, which every seed shares.

    Two-way ANOVA of seeds x items: (MS_items - MS_residual) / (n S) estimates var(item effect) / n
    without the seed-by-item noise, which the seed spread already holds. Clipped at 0.
    """
    n_seeds, n_items = matrix.shape
    ms_items, ms_residual = _mean_squares(matrix)
    return max(0.0, ms_items - ms_residual) / (n_items * n_seeds)


def _share_weighted_df(seed_part: float, item_part: float, n_seeds: int, n_items: int) -> float:
    """1 / df = sum over the two variance parts of (share of the variance) / (its own df).

    S - 1 where the seeds dominate, n - 1 where the items do. Satterthwaite's squared shares
    raise the df too fast when the seed part rests on 2-4 df and covers 92% at S = 3 in the
    simulation; the plain shares keep coverage and the p-value's calibration (docs/statistics.md).
    """
    total = seed_part + item_part
    if total == 0.0:
        return float(n_seeds - 1)
    return 1.0 / (seed_part / total / (n_seeds - 1) + item_part / total / max(1, n_items - 1))


def estimate(matrix: np.ndarray) -> Estimate | None:
    """The mean of a seeds x items matrix with its SE and df; None with one seed and one item.

    Two or more seeds: var = var(seed means) / S + item variance (``_item_variance``), t with
    share-weighted df. One seed: item-level t with n - 1 df, which cannot include the variance
    between training runs. One column (per-seed values without per-item scores): t(S - 1) over
    seeds, which cannot include the items' shared variance.
    """
    n_seeds, n_items = matrix.shape
    mean = float(matrix.mean())
    if n_seeds >= 2:
        seed_part = float(matrix.mean(axis=1).var(ddof=1)) / n_seeds
        item_part = _item_variance(matrix) if n_items >= 2 else 0.0
        if seed_part + item_part == 0.0 and n_items >= 2:
            # 0/1 scores whose seed means coincide (each seed changes as many items) and an item part
            # clipped at 0: fall back to what the seed-by-item noise alone puts into the mean, rather
            # than a zero-width interval that claims certainty
            seed_part = _mean_squares(matrix)[1] / (n_items * n_seeds)
        df = _share_weighted_df(seed_part, item_part, n_seeds, n_items)
        procedure = SEEDS_AND_ITEMS if n_items >= 2 else SEEDS_ONLY
        return Estimate(mean, math.sqrt(seed_part + item_part), df, procedure, n_seeds, n_items)
    if n_items >= 2:
        se = math.sqrt(float(matrix[0].var(ddof=1)) / n_items)
        return Estimate(mean, se, float(n_items - 1), ITEMS_ONLY, 1, n_items)
    return None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values: the i-th smallest is max over j <= i of (m - j + 1) p_(j), capped at 1."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted.tolist()


def verdict(estimate: Estimate, p_holm: float, margin: float | None) -> str:
    """higher / lower where significant after Holm; equivalent where the 95% interval lies inside
    (-margin, +margin); inconclusive otherwise. ``margin`` None: the column has no margin."""
    if p_holm < ALPHA:
        return HIGHER if estimate.mean > 0 else LOWER
    interval = estimate.interval
    if margin is not None and -margin < interval.low and interval.high < margin:
        return EQUIVALENT
    return INCONCLUSIVE


# Scores of one method on one column -----------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """One method's scores on one column, by seed: per-item scores where every record has them, and
    the metric's value (as a one-element array), so two methods can always be paired on the latter."""

    items: SeedScores | None
    values: SeedScores

    def matrix(self) -> np.ndarray:
        """Seeds x items (or seeds x 1 without per-item scores), rows in seed order."""
        chosen = self.items if self.items is not None else self.values
        return np.stack([chosen[s] for s in sorted(chosen, key=lambda s: -1 if s is None else s)])


def item_matrix(item_scores: list[list[float] | None]) -> np.ndarray | None:
    """Per-item scores, one row per seed; None unless every seed scored the same number of items."""
    if not item_scores or any(s is None or len(s) == 0 for s in item_scores):
        return None
    if len({len(s) for s in item_scores if s is not None}) != 1:
        return None
    return np.asarray(item_scores, dtype=float)


def make_scores(seeds: list[int | None], values: list[float], item_scores: list[list[float] | None]) -> Scores | None:
    """Scores of records listed in the same order; None when two records share a seed (mixed sources)."""
    if not seeds or len(set(seeds)) < len(seeds):
        return None
    matrix = item_matrix(item_scores)
    items = None if matrix is None else dict(zip(seeds, matrix, strict=True))
    return Scores(items, {s: np.array([v], dtype=float) for s, v in zip(seeds, values, strict=True)})


def _at(scores: SeedScores, seed: int) -> np.ndarray | None:
    """A seed's scores; the base model's single evaluation stands for every seed."""
    return scores[None] if None in scores else scores.get(seed)


def paired_differences(scores: SeedScores, reference: SeedScores) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Per-seed, per-item differences (scores minus reference), one row per paired seed.

    Seeds pair where both have them; the base model, evaluated once with no seed, pairs with
    every seed of the other side. None when no seed pairs or the two scored different items.
    """
    seeds = sorted(s for s in set(scores) | set(reference)
                   if s is not None and _at(scores, s) is not None and _at(reference, s) is not None)
    if not seeds:
        return None
    rows = [(_at(scores, s), _at(reference, s)) for s in seeds]
    if len({len(a) for a, _ in rows} | {len(b) for _, b in rows}) != 1:
        return None
    return tuple(seeds), np.stack([a - b for a, b in rows])


def pair(scores: Scores, reference: Scores) -> tuple[tuple[int, ...], np.ndarray] | None:
    """Differences paired by seed and by item where both have per-item scores, else by seed on the values."""
    if scores.items is not None and reference.items is not None:
        paired = paired_differences(scores.items, reference.items)
        if paired is not None:
            return paired
    return paired_differences(scores.values, reference.values)


# Leaderboard cells ----------------------------------------------------------------------------


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


def describe(values: list[float], scores: Scores | None) -> CellStats:
    """Mean and spread of one cell's per-seed values, and the interval of ``estimate`` on its scores."""
    found = estimate(scores.matrix()) if scores is not None else None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    interval = found.interval if found is not None else None
    return CellStats(mean=float(np.mean(values)), sd=sd, n_seeds=len(values), interval=interval)


def against_base(cell: CellStats, scores: Scores | None, base: CellStats, base_scores: Scores | None) -> CellStats:
    """Add the change against the base model, its interval paired with the base's single evaluation."""
    paired = pair(scores, base_scores) if scores is not None and base_scores is not None else None
    found = estimate(paired[1]) if paired is not None else None
    delta_rel = (cell.mean - base.mean) / base.mean if base.mean != 0 else None
    return dataclasses.replace(cell, delta=cell.mean - base.mean, delta_rel=delta_rel,
                               delta_interval=found.interval if found is not None else None)


def best_versus_runner_up(means: dict[str, float], scores: dict[str, Scores | None],
                          higher_is_better: bool) -> tuple[str, Estimate] | None:
    """The best method by mean and the paired estimate of (best - runner-up), oriented so that
    positive means better; None without a runner-up, with a tie, or when the two cannot be paired."""
    if len(means) < 2:
        return None
    ranked = sorted(means, key=lambda k: means[k], reverse=higher_is_better)
    best, runner_up = ranked[0], ranked[1]
    if means[best] == means[runner_up] or scores.get(best) is None or scores.get(runner_up) is None:
        return None
    paired = pair(scores[best], scores[runner_up])  # type: ignore[arg-type]
    found = estimate(paired[1] if higher_is_better else -paired[1]) if paired is not None else None
    return None if found is None else (best, found)
