"""Coverage and type-I rate of the leaderboard's paired procedure against the bootstrap it replaced.

Synthetic per-item scores of two methods with known item and seed variance and a known true
difference, at 1, 3, 5 and 10 seeds: how often each procedure's 95% interval covers the truth,
and how often it calls a difference significant (p < 0.05) when there is none. Procedures:

- old: the paired bootstrap that spd-bench used before (seeds, then items, with replacement;
  percentile interval; kept here only, to measure it);
- seeds t: t(S - 1) over the seed-level differences, no item variance;
- Satterthwaite: the new variance with Satterthwaite's degrees of freedom;
- new: spd_bench.leaderboard.stats.estimate (the seed-level variance plus the item variance,
  share-weighted degrees of freedom).

    PYTHONPATH=. .venv/bin/python benchmarks/statistics_coverage.py [--experiments 2000] [--resamples 2000]

A second table sweeps the item share of the variance at S = 3 (continuous scores) and gives the
type-I rate of the three t procedures: the case that decides between their degrees of freedom.
tests/test_statistics_coverage.py checks the new procedure on the same scenarios.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from spd_bench.leaderboard.stats import ALPHA, estimate


@dataclass(frozen=True)
class Scenario:
    """Two methods scored on n items by S training runs each.

    binary: item i, seed s of a method passes with probability Phi(difficulty_i + method-item effect_i
    + seed effect_s + shift), difficulty ~ N(0, 1), method-item ~ N(0, item_sd^2), seed ~ N(0, seed_sd^2),
    each method its own draws; the true difference of pass rates is known in closed form.
    continuous: score = difficulty_i + method-item effect_i + seed effect_s + N(0, 1) noise + shift.
    """

    name: str
    binary: bool
    n_items: int
    item_sd: float
    seed_sd: float
    shift: float

    def truth(self, shift: float) -> float:
        """The population difference (method minus reference) for a method shifted by ``shift``."""
        if not self.binary:
            return shift
        scale = np.sqrt(1.0 + 1.0 + self.item_sd**2 + self.seed_sd**2)  # probit noise + difficulty + effects
        return float(scipy_stats.norm.cdf(shift / scale) - scipy_stats.norm.cdf(0.0))


SCENARIOS = (
    Scenario("binary, item and seed variance alike", True, 200, 0.4, 0.08, 0.1),
    Scenario("continuous, seed variance dominant", False, 200, 0.3, 0.3, 0.2),
)


def simulate(scenario: Scenario, n_seeds: int, n_experiments: int, shift: float,
             rng: np.random.Generator) -> np.ndarray:
    """Paired differences (method minus reference), experiments x seeds x items, fresh items and seeds each time."""
    shape_items, shape_seeds = (n_experiments, 1, scenario.n_items), (n_experiments, n_seeds, 1)
    difficulty = rng.normal(0.0, 1.0, shape_items)

    def scores(method_shift: float) -> np.ndarray:
        latent = (difficulty + rng.normal(0.0, scenario.item_sd, shape_items)
                  + rng.normal(0.0, scenario.seed_sd, shape_seeds) + method_shift)
        noise = rng.normal(0.0, 1.0, (n_experiments, n_seeds, scenario.n_items))
        return (latent + noise > 0).astype(float) if scenario.binary else latent + noise

    return scores(shift) - scores(0.0)


# The procedure spd-bench used before: a paired bootstrap over seeds, then items ----------------


def old_bootstrap(diff: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float, float]:
    """(low, high, p) of the old paired bootstrap: S seeds with replacement, then n items with replacement
    (the same items for every drawn seed), percentile interval, p = twice the smaller tail, floored at 1/B."""
    n_seeds, n_items = diff.shape
    draws = rng.integers(0, n_items, size=(resamples, n_items)) + n_items * np.arange(resamples)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * n_items).reshape(resamples, n_items)
    per_seed = counts @ diff.T / n_items
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    weights = (seeds[:, :, None] == np.arange(n_seeds)).mean(axis=1)
    means = (weights * per_seed).sum(axis=1)
    low, high = np.percentile(means, [100 * ALPHA / 2, 100 - 100 * ALPHA / 2])
    tail = min(float(np.mean(means <= 0)), float(np.mean(means >= 0)))
    return float(low), float(high), min(1.0, max(1.0 / resamples, 2.0 * tail))


# The t-based procedures ------------------------------------------------------------------------


def t_procedures(diff: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """(low, high, p) of the new procedure and of the two t variants it was chosen over."""
    found = estimate(diff)
    assert found is not None
    n_seeds, n_items = diff.shape
    out = {"new": (found.interval.low, found.interval.high, found.p_value)}
    if n_seeds < 2:
        return out
    seed_part = float(diff.mean(axis=1).var(ddof=1)) / n_seeds
    item_part = found.se**2 - seed_part
    satterthwaite = found.se**4 / (seed_part**2 / (n_seeds - 1) + item_part**2 / (n_items - 1))
    for name, se, df in (("seeds t", np.sqrt(seed_part), n_seeds - 1), ("Satterthwaite", found.se, satterthwaite)):
        half = float(scipy_stats.t.ppf(1 - ALPHA / 2, df)) * se
        p = float(2 * scipy_stats.t.sf(abs(found.mean) / se, df)) if se > 0 else float(found.mean == 0)
        out[name] = (found.mean - half, found.mean + half, p)
    return out


def measure(scenario: Scenario, n_seeds: int, experiments: int, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """Procedure -> (coverage of the truth under the shift, rejection rate at ALPHA under no difference)."""
    rng, resampling = np.random.default_rng([seed, n_seeds]), np.random.default_rng([seed, n_seeds, 1])
    truth = scenario.truth(scenario.shift)
    shifted = simulate(scenario, n_seeds, experiments, scenario.shift, rng)  # as tests/test_statistics_coverage.py
    null = simulate(scenario, n_seeds, experiments, 0.0, rng)
    covered: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for diff, diff0 in zip(shifted, null, strict=True):
        results = t_procedures(diff) | {"old": old_bootstrap(diff, resampling, resamples)}
        results0 = t_procedures(diff0) | {"old": old_bootstrap(diff0, resampling, resamples)}
        for name, (low, high, _) in results.items():
            covered[name] = covered.get(name, 0) + int(low <= truth <= high)
            rejected[name] = rejected.get(name, 0) + int(results0[name][2] < ALPHA)
    return {name: (covered[name] / experiments, rejected[name] / experiments) for name in covered}


def share_scenario(item_share: float, n_seeds: int = 3, n_items: int = 200, total: float = 0.05) -> Scenario:
    """Continuous scores whose mean difference has variance ``total``, ``item_share`` of it from the items.

    Per method, var(item effect) = a, var(seed effect) = b, noise 1: var(mean difference) = 2a/n + (2b + 2/n)/S.
    """
    item_var = item_share * total * n_items / 2
    seed_var = ((1 - item_share) * total - 2 / (n_items * n_seeds)) * n_seeds / 2
    return Scenario(f"item share {item_share:g}", False, n_items, float(np.sqrt(item_var)), float(np.sqrt(seed_var)), 0.0)


def share_sweep(experiments: int, seed: int) -> None:
    """Type-I rate at S = 3 of the t procedures as the items' share of the variance goes from 0 to 0.9."""
    names = ("seeds t", "Satterthwaite", "new")
    print(f"\nType-I rate at 3 seeds against the items' share of the variance ({experiments} experiments per row)")
    print("| item share | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for share in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        null = simulate(share_scenario(share), 3, experiments, 0.0, np.random.default_rng([seed, 3, int(100 * share)]))
        rates = {name: 0 for name in names}
        for diff in null:
            for name, (_, _, p) in t_procedures(diff).items():
                rates[name] += int(p < ALPHA)
        print(f"| {share:g} | " + " | ".join(f"{rates[n] / experiments:.3f}" for n in names) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=2000, help="simulated experiments per cell")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples of the old procedure (it used 5000; 2000 keeps the run near 10 minutes)")
    parser.add_argument("--sweep-experiments", type=int, default=8000, help="null experiments per item share")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = ("old", "seeds t", "Satterthwaite", "new")
    start = time.time()
    print(f"{args.experiments} experiments per row; 95% intervals; type-I = share with p < {ALPHA:g} under no difference")
    print("| scenario | seeds | " + " | ".join(f"{n} coverage | {n} type-I" for n in names) + " |")
    print("|---|---:|" + "---:|" * (2 * len(names)))
    for scenario in SCENARIOS:
        for n_seeds in (1, 3, 5, 10):
            found = measure(scenario, n_seeds, args.experiments, args.resamples, args.seed)
            cells = [f"{found[n][0]:.3f} | {found[n][1]:.3f}" if n in found else "— | —" for n in names]
            print(f"| {scenario.name} | {n_seeds} | " + " | ".join(cells) + " |", flush=True)
    share_sweep(args.sweep_experiments, args.seed)
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
