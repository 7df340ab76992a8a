"""The leaderboard's inference procedure (stats.estimate) checked by simulation.

Synthetic per-item scores of two methods with known seed and item variance and a known true
difference (benchmarks/statistics_coverage.py, which also measures the bootstrap it replaced):
at S = 3, 5 and 10 seeds the nominal 95% interval must cover the truth in at least 93% of
2,000 simulated experiments, and under no difference the p-value must be uniform. Tolerance for
uniformity: the share of p below 0.05 and below 0.10 within 3.5 binomial standard deviations of
0.05 and 0.10 (2,000 experiments: 0.033-0.067 and 0.076-0.124), and a Kolmogorov-Smirnov test
against the uniform distribution with p above 0.01. Fixed seeds: the test is deterministic.
A procedure known to be wrong (a t-test over seeds that leaves out the item variance) must fail
the coverage bar, so the bar can fail.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np
import pytest
from scipy import stats as scipy_stats

from conftest import REPO
from spd_bench.leaderboard.stats import ITEMS_ONLY, SEEDS_AND_ITEMS, estimate

EXPERIMENTS = 2000
MIN_COVERAGE = 0.93
TOLERANCE_SD = 3.5


def _benchmark() -> ModuleType:
    """benchmarks/statistics_coverage.py, whose scenarios and simulator the documented table used."""
    spec = importlib.util.spec_from_file_location("statistics_coverage", REPO / "benchmarks" / "statistics_coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()


def _within_binomial(rate: float, level: float) -> bool:
    return abs(rate - level) <= TOLERANCE_SD * np.sqrt(level * (1 - level) / EXPERIMENTS)


def _coverage(diffs: np.ndarray, truth: float) -> float:
    intervals = [estimate(d).interval for d in diffs]  # type: ignore[union-attr]
    return float(np.mean([i.low <= truth <= i.high for i in intervals]))


@pytest.mark.parametrize("n_seeds", [3, 5, 10])
@pytest.mark.parametrize("scenario", BENCH.SCENARIOS, ids=lambda s: s.name)
def test_the_interval_covers_and_the_p_value_is_uniform(scenario, n_seeds: int) -> None:
    rng = np.random.default_rng([0, n_seeds])
    shifted = BENCH.simulate(scenario, n_seeds, EXPERIMENTS, scenario.shift, rng)
    assert {estimate(d).procedure for d in shifted[:5]} == {SEEDS_AND_ITEMS}  # type: ignore[union-attr]
    coverage = _coverage(shifted, scenario.truth(scenario.shift))
    assert coverage >= MIN_COVERAGE, f"{scenario.name}, {n_seeds} seeds: coverage {coverage:.3f}"
    null = BENCH.simulate(scenario, n_seeds, EXPERIMENTS, 0.0, rng)
    p = np.array([estimate(d).p_value for d in null])  # type: ignore[union-attr]
    for level in (0.05, 0.10):
        assert _within_binomial(float(np.mean(p < level)), level), f"type-I at {level}: {np.mean(p < level):.3f}"
    assert scipy_stats.kstest(p, "uniform").pvalue > 0.01


def test_one_seed_falls_back_to_items_and_covers_when_runs_agree() -> None:
    """S = 1: item-level paired t. Calibrated when training runs do not vary, which it cannot check."""
    scenario = BENCH.Scenario("one seed, no seed variance", True, 200, 0.4, 0.0, 0.1)
    diffs = BENCH.simulate(scenario, 1, EXPERIMENTS, scenario.shift, np.random.default_rng(1))
    first = estimate(diffs[0])
    assert first is not None and first.procedure == ITEMS_ONLY and first.df == 199
    assert _coverage(diffs, scenario.truth(scenario.shift)) >= MIN_COVERAGE


def test_the_bar_fails_a_seed_only_t_test_when_items_vary() -> None:
    """scipy's one-sample t over the seed means (no item variance) under-covers where items vary: the bar bites."""
    scenario = BENCH.Scenario("items dominant", True, 200, 0.6, 0.02, 0.1)
    diffs = BENCH.simulate(scenario, 10, EXPERIMENTS, scenario.shift, np.random.default_rng(2))
    truth = scenario.truth(scenario.shift)
    seed_only = [scipy_stats.ttest_1samp(d.mean(axis=1), 0.0).confidence_interval(0.95) for d in diffs]
    assert np.mean([ci.low <= truth <= ci.high for ci in seed_only]) < MIN_COVERAGE
    assert _coverage(diffs, truth) >= MIN_COVERAGE


def test_coinciding_seed_means_do_not_give_a_zero_width_interval():
    """Each seed changes two different items by +1: the seed means coincide and the item part clips
    at 0, yet the difference is not known exactly."""
    matrix = np.zeros((3, 500))
    for seed in range(3):
        matrix[seed, [2 * seed, 2 * seed + 1]] = 1.0
    found = estimate(matrix)
    assert found is not None and found.se > 0 and found.p_value > 0.05
