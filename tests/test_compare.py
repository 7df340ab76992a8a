"""Paired comparisons between methods, checked against independent computations with known answers.

The procedure (stats.estimate) is checked against scipy's t-tests in the cases where it must
reduce to one (one seed; no item variation; identical seeds) and against the textbook two-way
ANOVA otherwise; Holm against a hand computation and the step-down procedure; verdicts against
their definitions; and the generated sentences (findings.md) against the tables they come from.
tests/test_statistics_coverage.py checks the procedure's coverage by simulation.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from conftest import REPO, spd_bench_cmd
from spd_bench.config import make_config
from spd_bench.errors import UserError
from spd_bench.leaderboard import build_leaderboard
from spd_bench.leaderboard.ablation import build_ablation
from spd_bench.leaderboard.ablation_formats import write_ablation
from spd_bench.leaderboard.compare import Comparison, compared, corrected
from spd_bench.leaderboard.findings import FINDINGS_FILE
from spd_bench.leaderboard.formats import COMPARISONS_CSV, render_latex, render_markdown
from spd_bench.leaderboard.stats import (
    ITEMS_ONLY,
    SEEDS_AND_ITEMS,
    SEEDS_ONLY,
    Estimate,
    Scores,
    estimate,
    holm,
    pair,
    paired_differences,
    verdict,
)

MAIN = REPO / "tests" / "fixtures" / "records" / "main"
SECTION = "\n## Paired comparisons\n"
SENTENCE = re.compile(
    r"^- (?P<subject>.+?) vs (?P<reference>\S+) on (?P<task>\S+) \((?P<where>[^,]+), (?P<domain>in-domain|out-of-domain),"
    r" (?P<metric>[^)]+)\):"
    r" (?P<value>[+-]\d+\.\d+) (?P<unit>\S+) \[(?P<low>-?\d+\.\d+), (?P<high>-?\d+\.\d+)\], (?P<verdict>[^(]+?)"
    r"(?:, (?:better|worse))? \(Holm p(?:=|<)(?P<p>[\d.]+);"
)


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


def _found(matrix: np.ndarray) -> Estimate:
    result = estimate(matrix)
    assert result is not None
    return result


# The procedure against scipy and the textbook ANOVA -------------------------------------------


def test_one_seed_is_scipys_paired_t_test_over_items() -> None:
    method, reference = shifted(2000, 60, 45, seed=2)  # +0.75 points
    result = _found((method - reference)[None, :])
    t_test = scipy_stats.ttest_rel(method, reference)
    ci = t_test.confidence_interval(0.95)
    assert result.procedure == ITEMS_ONLY and result.df == 1999
    assert result.mean == pytest.approx(15 / 2000)
    assert (result.interval.low, result.interval.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert result.p_value == pytest.approx(t_test.pvalue, rel=1e-9)


def test_without_item_variation_it_is_the_t_test_over_seed_means() -> None:
    """Each seed's items all differ by the same amount: no item variance, t(S - 1) over the seed-level differences."""
    seed_deltas = np.array([0.02, 0.05, -0.01, 0.04])
    result = _found(np.repeat(seed_deltas[:, None], 50, axis=1))
    t_test = scipy_stats.ttest_1samp(seed_deltas, 0.0)
    ci = t_test.confidence_interval(0.95)
    assert result.procedure == SEEDS_AND_ITEMS and result.df == pytest.approx(3)
    assert (result.interval.low, result.interval.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert result.p_value == pytest.approx(t_test.pvalue, rel=1e-9)
    values_only = _found(seed_deltas[:, None])  # per-seed values without per-item scores
    assert values_only.procedure == SEEDS_ONLY
    assert (values_only.interval.low, values_only.interval.high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_seeds_that_agree_leave_the_item_t_test() -> None:
    """Three identical seeds: no seed variance, so the interval is the one-seed item-level t."""
    method, reference = shifted(300, 40, 10, seed=3)
    diff = method - reference
    repeated, once = _found(np.stack([diff, diff, diff])), _found(diff[None, :])
    assert repeated.df == pytest.approx(299) and repeated.se == pytest.approx(once.se)
    assert repeated.p_value == pytest.approx(once.p_value)


def test_variance_is_the_seed_spread_plus_the_anova_item_component() -> None:
    """se^2 = (MS_seeds + max(0, MS_items - MS_residual)) / (n S), sums of squares written out by hand;
    df lies between S - 1 and n - 1, weighted by the two parts' shares."""
    rng = np.random.default_rng(4)
    n_seeds, n_items = 3, 400
    diff = rng.normal(0.0, 0.5, n_items)[None, :] + np.array([[0.0], [0.1], [0.3]]) + rng.normal(0, 0.3, (3, n_items))
    grand = diff.mean()
    ss_seeds = n_items * sum((row.mean() - grand) ** 2 for row in diff)
    ss_items = n_seeds * sum((diff[:, i].mean() - grand) ** 2 for i in range(n_items))
    ss_total = ((diff - grand) ** 2).sum()
    ms_seeds, ms_items = ss_seeds / (n_seeds - 1), ss_items / (n_items - 1)
    ms_residual = (ss_total - ss_seeds - ss_items) / ((n_seeds - 1) * (n_items - 1))
    seed_part, item_part = ms_seeds / (n_items * n_seeds), (ms_items - ms_residual) / (n_items * n_seeds)
    result = _found(diff)
    assert result.se**2 == pytest.approx(seed_part + item_part, rel=1e-9)
    share = seed_part / (seed_part + item_part)
    assert result.df == pytest.approx(1 / (share / (n_seeds - 1) + (1 - share) / (n_items - 1)), rel=1e-9)
    assert n_seeds - 1 < result.df < n_items - 1
    items_only_se = diff.mean(axis=0).std(ddof=1) / np.sqrt(n_items)
    assert result.se > 2 * items_only_se  # the seed spread is in the interval, not only the items
    half = scipy_stats.t.ppf(0.975, result.df) * result.se
    assert result.interval.high - result.interval.low == pytest.approx(2 * half)


def test_degenerate_cases() -> None:
    zeros = _found(np.zeros((3, 10)))
    assert zeros.p_value == 1.0 and (zeros.interval.low, zeros.interval.high) == (0.0, 0.0)
    assert _found(np.full((3, 10), 0.1)).p_value < 1e-12  # every seed and item differs by exactly 0.1
    assert estimate(np.array([[0.3]])) is None  # one seed, one value: nothing to estimate from


def test_pairing_by_seed_and_with_the_base_model() -> None:
    a = {s: np.full(4, float(s)) for s in (1, 2, 3)}
    raw = {s: np.full(4, 10.0 * s) for s in (2, 3, 4)}
    seeds, diff = paired_differences(a, raw)
    assert seeds == (2, 3) and diff.tolist() == [[-18.0] * 4, [-27.0] * 4]
    base = {None: np.array([0.0, 1.0, 0.0, 1.0])}
    seeds, diff = paired_differences(a, base)
    assert seeds == (1, 2, 3) and diff[0].tolist() == [1.0, 0.0, 1.0, 0.0] and diff[2].tolist() == [3.0, 2.0, 3.0, 2.0]
    seeds, diff = paired_differences(base, a)  # the base model on the method's side pairs the same way
    assert seeds == (1, 2, 3) and diff[0].tolist() == [-1.0, 0.0, -1.0, 0.0]
    assert paired_differences(a, {5: np.zeros(4)}) is None  # no shared seed
    assert paired_differences(a, {None: np.zeros(5)}) is None  # different items
    with_items = Scores(a, {s: np.array([v[0]]) for s, v in a.items()})
    values_only = Scores(None, {s: np.array([5.0]) for s in (1, 2, 3)})
    seeds, diff = pair(with_items, values_only)  # one side lacks per-item scores: both pair on the values
    assert seeds == (1, 2, 3) and diff.shape == (3, 1) and diff[:, 0].tolist() == [-4.0, -3.0, -2.0]


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
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == _holm_step_down_rejects(p, alpha)


def test_verdicts_follow_holm_then_the_margin() -> None:
    def cell(mean: float, se: float) -> Estimate:
        return Estimate(mean, se, 10.0, SEEDS_AND_ITEMS, 3, 100)

    half = scipy_stats.t.ppf(0.975, 10.0)
    assert verdict(cell(0.05, 0.01), 0.001, 0.02) == "higher"  # significant wins even inside the margin
    assert verdict(cell(-0.05, 0.01), 0.001, None) == "lower"
    assert verdict(cell(0.0, 0.019 / half), 0.9, 0.02) == "equivalent"  # interval +-0.019 inside +-0.02
    assert verdict(cell(0.0, 0.021 / half), 0.9, 0.02) == "inconclusive"  # +-0.021 crosses the margin
    assert verdict(cell(0.0, 0.001), 0.9, None) == "inconclusive"  # no margin (metric-unit column)
    assert verdict(cell(0.05, 0.01), 0.06, 0.2) == "equivalent"  # unadjusted p tiny, Holm not: not "higher"


def test_corrected_sets_holm_and_verdicts_per_family() -> None:
    scores = {s: np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]) + 0.01 * s for s in (1, 2, 3)}
    ref = Scores({s: np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]) for s in (1, 2, 3)}, {s: np.array([0.5]) for s in (1, 2, 3)})
    alike = Scores({s: np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0]) for s in (1, 2, 3)}, {s: np.array([0.5]) for s in (1, 2, 3)})
    raw = {"up": compared("up", "ref", Scores(scores, {s: np.array([0.5]) for s in (1, 2, 3)}), ref),
           "same": compared("same", "ref", alike, ref)}
    assert all(isinstance(c, Comparison) for c in raw.values())
    fixed = corrected(raw, {"up": 0.02, "same": 0.02})  # type: ignore[arg-type]
    assert [c.p_holm for c in fixed.values()] == pytest.approx(holm([c.p_value for c in raw.values()]))
    assert fixed["same"].verdict == "equivalent" and fixed["same"].margin == 0.02


# Tables from stored records -------------------------------------------------------------------


def test_fixture_tables_pair_every_seed_and_correct_over_each_table() -> None:
    board = build_leaderboard(MAIN, None, [])
    assert [(t.model, t.reference) for t in board.comparisons] == [
        ("organism", "raw_sd"), ("organism", "base"), ("tiny-lm", "base")]
    versus_raw, versus_base, _ = board.comparisons
    assert [r.method for r in versus_raw.rows] == ["spd", "rft"]
    assert [r.method for r in versus_base.rows] == ["raw_sd", "spd", "rft"]
    spd_math = versus_raw.cells[("spd", "synth_math", "in")]
    assert spd_math.seeds == (1, 2, 3) and spd_math.n_items == 20 and spd_math.estimate.procedure == SEEDS_AND_ITEMS
    assert spd_math.difference == pytest.approx(46 / 60 - 28 / 60)  # 15, 16, 15 against 9, 10, 9 of 20 correct
    assert versus_base.cells[("spd", "synth_nll", "out")].difference == pytest.approx(1.60 - 2.00)
    mc = versus_raw.cells[("spd", "synth_mc", "in")]  # no per-item scores: paired by seed on the values
    assert mc.estimate.procedure == SEEDS_ONLY and mc.seeds == (1, 2)
    for table in board.comparisons:
        cells = list(table.cells.values())
        assert [c.p_holm for c in cells] == pytest.approx(holm([c.p_value for c in cells]))
        for c in cells:
            assert (c.p_holm < 0.05) == (c.verdict in ("higher", "lower"))
            assert c.verdict != "higher" or c.difference > 0
    assert len(versus_raw.cells) == 2 * 4 and len(versus_base.cells) == 3 * 4
    assert versus_raw.cells[("spd", "synth_nll", "out")].margin is None  # a metric-unit column has no margin
    assert spd_math.margin == pytest.approx(0.02)  # the default margin, 2 points


def test_every_format_appends_the_section_with_its_reading_line(tmp_path: Path) -> None:
    from dataclasses import replace

    board = build_leaderboard(MAIN, tmp_path, ["md", "csv", "tex"])
    markdown = (tmp_path / "leaderboard.md").read_text()
    before, _, section = markdown.partition(SECTION)
    assert before == render_markdown(replace(board, comparisons=[]))  # the leaderboard as it was
    assert section.count("\n_How to read: ") == 3 and "### organism: versus raw_sd" in section
    assert "| spd | **+30.0** [" in section and " higher |" in section  # Holm-adjusted p below 0.05: bold
    assert "Holm over the 8 cells of this table" in section and "Holm over the 12 cells of this table" in section
    assert "MDE" not in markdown and "§ no per-item scores" in section
    frame = pd.read_csv(tmp_path / COMPARISONS_CSV)
    assert len(frame) == 8 + 12 + 1 and set(frame.versus) == {"raw_sd", "base"}
    row = frame[(frame.versus == "raw_sd") & (frame.method == "spd") & (frame.task == "synth_math")].iloc[0]
    assert row.difference == pytest.approx(30.0) and row.n_items == 20 and row.holm_family_size == 8
    assert row.verdict == "higher" and row.procedure == SEEDS_AND_ITEMS and row.equivalence_margin == 2.0
    assert scipy_stats.t.ppf(0.975, row.df) * row.se == pytest.approx((row.ci_high - row.ci_low) / 2, abs=2e-3)
    tex = render_latex(board)
    outer = r"\\caption\{Paired comparisons: [^}]*\}\n\\begin\{tabular\}\{(lr+)\}\n(.*?)\n\\end\{tabular\}\n"
    tables = re.findall(outer, tex, re.S)
    assert len(tables) == 3
    for spec, body in tables:
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert len(rows) >= 3 and all(line.count(" & ") + 1 == len(spec) for line in rows)


def _with_margin(tmp_path: Path, margins: dict[str, float]) -> Path:
    """A copy of the fixture records whose configs set report.equivalence_margin (by method)."""
    results = tmp_path / "results"
    shutil.copytree(MAIN, results)
    for path in results.rglob("*.json"):
        record = json.loads(path.read_text())
        if record["method"] in margins:
            record["config"]["report"] = {"equivalence_margin": margins[record["method"]]}
            path.write_text(json.dumps(record))
    return results


def test_equivalence_comes_from_the_margin_in_the_records_config(tmp_path: Path) -> None:
    default = build_leaderboard(MAIN, None, [])
    wide = build_leaderboard(_with_margin(tmp_path, {m: 40.0 for m in ("base", "raw_sd", "spd", "rft")}), None, [])
    assert {c.verdict for t in default.comparisons for c in t.cells.values()} == {"higher", "lower", "inconclusive"}
    for before, after in zip(default.comparisons, wide.comparisons, strict=True):
        assert after.margin == 40.0
        for key, cell in after.cells.items():
            old = before.cells[key]
            inside = cell.margin is not None and -cell.margin < cell.interval.low and cell.interval.high < cell.margin
            expected = old.verdict if old.verdict != "inconclusive" else ("equivalent" if inside else "inconclusive")
            assert cell.verdict == expected
    rft_ood = wide.comparisons[0].cells[("rft", "synth_ood", "out")]  # +3.3 [-11.0, 17.7] points
    assert rft_ood.verdict == "equivalent"
    with pytest.raises(UserError, match=r"disagree on report.equivalence_margin \(1, 2\)") as info:
        build_leaderboard(_with_margin(tmp_path / "mixed", {"spd": 1.0}), None, [])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [0, -1.5, 101, float("nan")])
def test_a_bad_equivalence_margin_is_refused_in_one_line(value: float) -> None:
    with pytest.raises(UserError, match=r"report.equivalence_margin = .* out of range: allowed points in \(0, 100\]") as info:
        make_config({"report": {"equivalence_margin": value}})
    assert "\n" not in str(info.value)
    assert make_config({"report": {"equivalence_margin": 1.5}}).report.equivalence_margin == 1.5
    assert make_config({}).hash() == make_config({"report": {"equivalence_margin": 1.5}}).hash()  # wording only


# Sentences ------------------------------------------------------------------------------------


def _sentences(text: str) -> list[dict[str, str]]:
    found = [m.groupdict() for line in text.splitlines() if (m := SENTENCE.match(line))]
    assert len(found) == sum(line.startswith("- ") for line in text.splitlines())  # every bullet parses
    return found


@pytest.mark.parametrize("margin", [None, 40.0])
def test_the_findings_sentences_agree_with_the_tables(tmp_path: Path, margin: float | None) -> None:
    """Every sentence of findings.md against its cell in the CSV and in the Markdown table; with a
    40-point margin (synthetic records' configs) some cells are 'equivalent within ±40.0'."""
    results = MAIN if margin is None else _with_margin(tmp_path, {m: margin for m in ("base", "raw_sd", "spd", "rft")})
    out = tmp_path / "out"
    build_leaderboard(results, out, ["md", "csv"])
    text = (out / FINDINGS_FILE).read_text()
    sentences = _sentences(text)
    frame = pd.read_csv(out / COMPARISONS_CSV, keep_default_na=False)
    assert len(sentences) == len(frame) == 21
    assert ("equivalent within ±40.0 points" in text) == (margin is not None)
    markdown = (out / "leaderboard.md").read_text().partition(SECTION)[2].replace("**", "")
    domains = {"in-domain": "in", "out-of-domain": "out"}
    for s in sentences:
        row = frame[(frame.model == s["where"]) & (frame.method == s["subject"]) & (frame.versus == s["reference"])
                    & (frame.task == s["task"]) & (frame.domain == domains[s["domain"]])]
        assert len(row) == 1, s
        row = row.iloc[0]
        digits = 1 if row.higher_is_better else 3
        assert float(s["value"]) == pytest.approx(round(row.difference, digits))
        assert (float(s["low"]), float(s["high"])) == pytest.approx((round(row.ci_low, digits), round(row.ci_high, digits)))
        assert s["verdict"].split(" within ")[0] == row.verdict  # "equivalent within ±2.0" in words, a code in CSV
        assert s["unit"] == ("points" if row.higher_is_better else row.metric)
        assert float(s["p"]) == pytest.approx(max(round(row.p_holm, 3 if row.p_holm < 0.1 else 2), 0.001), abs=1e-9)
        shown = f"{s['value']} [{s['low']}, {s['high']}] p"
        in_table = s["verdict"].removesuffix(" points")  # the table gives the unit in its reading line
        assert shown in markdown and in_table in markdown.split(shown, 1)[1].split("|")[0]  # the table's own text


def _synthetic_sweep(tmp_path: Path) -> Path:
    """A sweep folder built from the fixture records: two settings of spd (the fixture's spd, and its rft
    relabelled as spd) against the fixture's raw_sd and base as references."""
    sweep = tmp_path / "sweeps" / "rank"
    for folder, source, fraction in (("spd.rank_fraction=0.5", "spd", 0.5), ("spd.rank_fraction=0.25", "rft", 0.25),
                                     ("reference", "raw_sd", None), ("reference", "base", None)):
        for path in (MAIN / "records" / "organism").glob(f"*/{source}*.json"):
            record = json.loads(path.read_text())
            target = sweep / folder / "records" / "organism" / record["task"]
            target.mkdir(parents=True, exist_ok=True)
            name = path.name.replace(source, "spd", 1) if fraction is not None else path.name
            if record.get("samples_file"):
                samples = record["samples_file"]
                record["samples_file"] = samples.replace(source, "spd", 1) if fraction is not None else samples
                shutil.copy(path.parent / samples, target / record["samples_file"])
            if fraction is not None:
                record.update(method="spd", external_signal=None)
                record["method_info"] = {**record["method_info"], "external_signal": None,
                                         "options": {"rank_fraction": fraction}}
            (target / name).write_text(json.dumps(record))
    axis = "method_options.spd.rank_fraction"
    (sweep / "sweep.json").write_text(json.dumps({"axes": [axis], "values": {axis: [0.25, 0.5]}, "mode": "grid",
                                                  "methods": ["spd"]}))
    return sweep


def test_sweep_sentences_agree_with_its_table_and_holm_covers_each_table(tmp_path: Path) -> None:
    ablation = build_ablation(_synthetic_sweep(tmp_path))
    (section,) = ablation.sections
    cells = [c.delta.paired for r in section.rows for c in r.cells.values() if c.delta and c.delta.paired]
    assert len(cells) == 2 * 4  # two settings x four columns, each paired with raw_sd
    assert [c.p_holm for c in cells] == pytest.approx(holm([c.p_value for c in cells]))  # one table: one family
    out = tmp_path / "out"
    out.mkdir()
    write_ablation(ablation, out, ["md", "csv"])
    frame = pd.read_csv(out / "ablation.csv", keep_default_na=False)
    paired = frame[frame.delta_p_holm != ""]
    sentences = _sentences((out / FINDINGS_FILE).read_text())
    assert len(sentences) == len(paired)
    for s in sentences:
        assert s["where"] == "sweep rank"
        setting = "spd.rank_fraction=" + s["subject"].split("=")[1].rstrip(")")
        row = paired[(paired.setting == setting) & (paired.task == s["task"])].iloc[0]
        digits = 1 if row.unit == "points" else 3
        assert float(s["value"]) == pytest.approx(round(float(row.delta_vs_raw_sd), digits))
        assert float(s["low"]) == pytest.approx(round(float(row.delta_ci_low), digits))
        assert s["verdict"].split(" within ")[0] == row.delta_verdict
    markdown = (out / "ablation.md").read_text()
    significant = paired[paired.delta_verdict.isin(["higher", "lower"])]
    assert len(significant) and markdown.count("**") == 2 * len(significant)  # bold: significant after Holm only
    assert "Holm over the Δ cells of each table" in markdown


def test_committed_results_gain_the_section_and_the_findings(tmp_path: Path) -> None:
    """`spd-bench leaderboard` on results/ (into a temporary folder): comparisons, findings, and every
    shared-seed difference equal to the difference of the rebuilt leaderboard's means."""
    results = REPO / "results"
    done = subprocess.run(
        spd_bench_cmd("leaderboard", "--results", str(results), "--out", str(tmp_path), "--format", "md,csv"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Paired comparison, organism: versus raw_sd" in done.stdout
    rebuilt = (tmp_path / "leaderboard.md").read_text()
    assert SECTION in rebuilt and "### organism: versus raw_sd" in rebuilt and "### organism: versus base" in rebuilt
    assert "spd vs raw_sd on synth_math" in (tmp_path / FINDINGS_FILE).read_text()
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    shown = board[board["shown"]].set_index(["method", "task", "domain"])["mean"]
    versus = pd.read_csv(tmp_path / COMPARISONS_CSV)
    spd = versus[(versus.versus == "raw_sd") & (versus.method == "spd")]
    assert len(spd) == 6 and set(spd.seeds) == {"1;2;3"}
    for row in spd.itertuples():  # every seed is shared, so the paired difference is the difference of means
        expected = shown[("spd", row.task, row.domain)] - shown[("raw_sd", row.task, row.domain)]
        assert row.difference == pytest.approx(expected, abs=1e-3)
        assert row.ci_low < row.difference < row.ci_high and 0.0 < row.p_value <= row.p_holm <= 1.0
