"""Paired comparisons between methods, checked against independent computations with known answers.

Constructed data fixes the true difference (one method is the other plus a shift on a known
subset of items), scipy gives the single-seed paired references, the two-stage bootstrap's
variance is computed exactly by enumerating every seed draw, and Holm is checked against a
hand computation and the step-down procedure written out from its definition.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from conftest import REPO, spd_bench_cmd
from spd_bench.leaderboard import build_leaderboard
from spd_bench.leaderboard.compare import (
    MDE_FACTOR,
    N_PAIRED_RESAMPLES,
    Comparison,
    bootstrap_differences,
    holm,
    paired_differences,
    summarise,
)
from spd_bench.leaderboard.formats import COMPARISONS_CSV, render_latex, render_markdown

MAIN = REPO / "tests" / "fixtures" / "records" / "main"
SECTION = "\n## Paired comparisons\n"


def compare(scores: dict, reference: dict, key: str = "cell") -> Comparison:
    """The library's comparison of two methods given per-seed item scores."""
    paired = paired_differences(scores, reference)
    assert paired is not None
    seeds, diff = paired
    (draws,) = bootstrap_differences([diff], "column", [key])
    return summarise("a", "b", seeds, diff, draws)


def shifted(n: int, up: int, down: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference scoring 0/1 at random, and a method equal to it except on a known subset of items:
    ``up`` of the reference's failures are passes, ``down`` of its passes failures; true difference (up - down) / n.
    """
    rng = np.random.default_rng(seed)
    reference = (rng.random(n) < 0.5).astype(float)
    method = reference.copy()
    method[np.flatnonzero(reference == 0)[:up]] = 1.0
    method[np.flatnonzero(reference == 1)[:down]] = 0.0
    return method, reference


# Statistics on constructed data ---------------------------------------------------------------


def test_known_shift_gives_the_exact_difference_and_the_paired_t_width() -> None:
    n, k = 2000, 100  # true difference 100 / 2000 = 0.05
    method, reference = shifted(n, k, 0, seed=1)
    result = compare({1: method}, {1: reference})
    assert result.difference == pytest.approx(k / n, abs=1e-12)
    assert result.interval.low < k / n < result.interval.high
    differences = method - reference
    analytic_se = np.std(differences, ddof=1) / np.sqrt(n)
    assert result.se == pytest.approx(analytic_se, rel=0.05)
    t_ci = scipy_stats.ttest_rel(method, reference).confidence_interval(0.95)
    assert result.interval.high - result.interval.low == pytest.approx(t_ci.high - t_ci.low, rel=0.08)
    scipy_boot = scipy_stats.bootstrap(
        (method, reference),
        lambda a, b, axis=-1: np.mean(a - b, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=N_PAIRED_RESAMPLES,
        random_state=0,
    ).confidence_interval
    assert abs(result.interval.low - scipy_boot.low) < 0.2 * analytic_se
    assert abs(result.interval.high - scipy_boot.high) < 0.2 * analytic_se
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert MDE_FACTOR == pytest.approx(z)
    assert result.mde == pytest.approx(z * analytic_se, rel=0.05)


def test_p_value_follows_the_paired_t_test_and_hits_its_bounds() -> None:
    method, reference = shifted(2000, 60, 45, seed=2)  # +0.75 points, SE about 0.5: p near 0.15
    result = compare({1: method}, {1: reference})
    assert result.difference == pytest.approx(15 / 2000)
    t_test = scipy_stats.ttest_rel(method, reference).pvalue
    assert 0.05 < t_test < 0.5 and result.p_value == pytest.approx(t_test, abs=0.03)
    identical = compare({1: reference, 2: reference}, {1: reference, 2: reference})
    assert identical.p_value == 1.0 and identical.difference == 0.0 and identical.se == 0.0
    assert (identical.interval.low, identical.interval.high) == (0.0, 0.0)
    large, _ = shifted(2000, 600, 0, seed=2)
    assert compare({1: large}, {1: reference}).p_value == 1 / N_PAIRED_RESAMPLES  # the floor


def test_seed_resampling_gives_the_exact_two_stage_bootstrap_variance() -> None:
    """Var = Var over seed draws of the conditional mean + mean over seed draws of var_items / n, enumerated."""
    rng = np.random.default_rng(3)
    n, n_seeds = 400, 3
    item_effect = rng.normal(0.0, 0.5, n)
    diff = np.stack([item_effect + offset + rng.normal(0.0, 0.3, n) for offset in (0.0, 0.1, 0.3)])
    means, variances = [], []
    for draw in itertools.product(range(n_seeds), repeat=n_seeds):
        rows = diff[list(draw)].mean(axis=0)
        means.append(rows.mean())
        variances.append(rows.var() / n)
    exact_se = np.sqrt(np.var(means) + np.mean(variances))
    (draws,) = bootstrap_differences([diff], "column", ["cell"])
    result = summarise("a", "b", (1, 2, 3), diff, draws)
    assert result.se == pytest.approx(exact_se, rel=0.05)
    assert draws.mean() == pytest.approx(diff.mean(), abs=4 * exact_se / np.sqrt(len(draws)))
    items_only_se = diff.mean(axis=0).std(ddof=1) / np.sqrt(n)
    assert result.se > 2 * items_only_se  # the seed spread is in the interval, not only the items
    assert result.difference == pytest.approx(diff.mean())


def test_pairing_by_seed_and_with_the_base_model() -> None:
    a = {s: np.full(4, float(s)) for s in (1, 2, 3)}
    raw = {s: np.full(4, 10.0 * s) for s in (2, 3, 4)}
    seeds, diff = paired_differences(a, raw)
    assert seeds == (2, 3) and diff.tolist() == [[-18.0] * 4, [-27.0] * 4]
    base = {None: np.array([0.0, 1.0, 0.0, 1.0])}
    seeds, diff = paired_differences(a, base)
    assert seeds == (1, 2, 3) and diff[0].tolist() == [1.0, 0.0, 1.0, 0.0] and diff[2].tolist() == [3.0, 2.0, 3.0, 2.0]
    assert paired_differences(a, {5: np.zeros(4)}) is None  # no shared seed
    assert paired_differences(a, {None: np.zeros(5)}) is None  # different items


def test_bootstrap_is_seeded_and_each_cell_reproducible_on_its_own() -> None:
    rng = np.random.default_rng(4)
    first, second = rng.normal(size=(3, 50)), rng.normal(size=(2, 50))
    alone = bootstrap_differences([first], "column", ["first"])[0]
    together = bootstrap_differences([first, second], "column", ["first", "second"])
    assert np.array_equal(alone, together[0])  # other rows of the table do not change a cell
    assert np.array_equal(together[1], bootstrap_differences([second], "column", ["second"])[0])
    assert not np.array_equal(alone, bootstrap_differences([first], "other column", ["first"])[0])
    assert not np.array_equal(alone, bootstrap_differences([first], "column", ["other cell"])[0])
    assert len(alone) == N_PAIRED_RESAMPLES


def _holm_step_down_rejects(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure from its definition: walk up the sorted p-values while p_(j) <= alpha / (m - j + 1)."""
    rejected = set()
    for j, i in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
        if p[i] > alpha / (len(p) - j):
            break
        rejected.add(i)
    return rejected


def test_holm_matches_a_hand_computation_and_the_step_down_procedure() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2]
    rng = np.random.default_rng(5)
    for _ in range(50):
        p = (rng.random(12) ** 3).tolist()
        adjusted = holm(p)
        for alpha in (0.01, 0.05, 0.1, 0.2):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == _holm_step_down_rejects(p, alpha)


# Tables from stored records -------------------------------------------------------------------


def test_fixture_tables_pair_every_seed_and_correct_over_each_table() -> None:
    board = build_leaderboard(MAIN, None, [])
    assert [(t.model, t.reference) for t in board.comparisons] == [("organism", "raw_sd"), ("organism", "base")]
    versus_raw, versus_base = board.comparisons  # tiny-lm has no per-item scores: no table
    assert [r.method for r in versus_raw.rows] == ["spd", "rft"]
    assert [r.method for r in versus_base.rows] == ["raw_sd", "spd", "rft"]
    spd_math = versus_raw.cells[("spd", "synth_math", "in")]
    assert spd_math.seeds == (1, 2, 3) and spd_math.n_items == 20
    assert spd_math.difference == pytest.approx(46 / 60 - 28 / 60)  # 15, 16, 15 against 9, 10, 9 of 20 correct
    assert versus_base.cells[("spd", "synth_nll", "out")].difference == pytest.approx(1.60 - 2.00)
    assert not any(task == "synth_mc" for _, task, _ in versus_raw.cells)  # its records have no per-item scores
    for table in board.comparisons:
        cells = list(table.cells.values())
        assert [c.p_holm for c in cells] == pytest.approx(holm([c.p_value for c in cells]))
    assert len(versus_raw.cells) == 2 * 3 and len(versus_base.cells) == 3 * 3


def test_every_format_appends_the_section_with_its_reading_line(tmp_path) -> None:
    board = build_leaderboard(MAIN, tmp_path, ["md", "csv", "tex"])
    markdown = (tmp_path / "leaderboard.md").read_text()
    before, _, section = markdown.partition(SECTION)
    assert before == render_markdown(dataclasses.replace(board, comparisons=[]))  # the leaderboard as it was
    assert section.count("\n_How to read: ") == 2 and "### organism: versus raw_sd" in section
    assert "| spd | **+30.0** [" in section  # Holm-adjusted p below 0.05: bold
    assert "Holm over the 6 cells of this table" in section and "Holm over the 9 cells of this table" in section
    frame = pd.read_csv(tmp_path / COMPARISONS_CSV)
    assert len(frame) == 6 + 9 and set(frame.versus) == {"raw_sd", "base"}
    row = frame[(frame.versus == "raw_sd") & (frame.method == "spd") & (frame.task == "synth_math")].iloc[0]
    assert row.difference == pytest.approx(30.0) and row.n_items == 20 and row.holm_family_size == 6
    assert row.mde == pytest.approx(MDE_FACTOR * row.se, abs=1e-3)
    tex = render_latex(board)
    outer = r"\\caption\{Paired comparisons: [^}]*\}\n\\begin\{tabular\}\{(lr+)\}\n(.*?)\n\\end\{tabular\}\n"
    tables = re.findall(outer, tex, re.S)
    assert len(tables) == 2
    for spec, body in tables:
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert len(rows) >= 3 and all(line.count(" & ") + 1 == len(spec) for line in rows)


def test_committed_results_gain_the_section_and_keep_the_existing_tables(tmp_path) -> None:
    """`spd-bench leaderboard` on results/: leaderboard.csv and the existing Markdown are unchanged."""
    results = REPO / "results"
    done = subprocess.run(
        spd_bench_cmd("leaderboard", "--results", str(results), "--out", str(tmp_path), "--format", "md,csv"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Paired comparison, organism: versus raw_sd" in done.stdout
    assert (tmp_path / "leaderboard.csv").read_text() == (results / "leaderboard.csv").read_text()
    rebuilt, committed = (tmp_path / "leaderboard.md").read_text(), (results / "leaderboard.md").read_text()
    assert SECTION in rebuilt
    assert rebuilt.partition(SECTION)[0] == committed.partition(SECTION)[0]
    assert "### organism: versus raw_sd" in rebuilt and "### organism: versus base" in rebuilt
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    shown = board[board["shown"]].set_index(["method", "task", "domain"])["mean"]
    versus = pd.read_csv(tmp_path / COMPARISONS_CSV)
    spd = versus[(versus.versus == "raw_sd") & (versus.method == "spd")]
    assert len(spd) == 6 and set(spd.seeds) == {"1;2;3"}
    for row in spd.itertuples():  # every seed is shared, so the paired difference is the difference of means
        expected = shown[("spd", row.task, row.domain)] - shown[("raw_sd", row.task, row.domain)]
        assert row.difference == pytest.approx(expected, abs=1e-3)
        assert row.ci_low < row.difference < row.ci_high and 0.0 < row.p_value <= row.p_holm <= 1.0
