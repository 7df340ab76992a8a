"""Leaderboard from stored records: statistics, layout, refusals, and golden files per format.

The fixture records under tests/fixtures/records/ were written by hand with chosen numbers, so
the expected statistics below follow from those numbers, not from running the code.
Set UPDATE_GOLDEN=1 to rewrite tests/golden/ after an intended change in the output.
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as scipy_stats

from spd_bench.errors import UserError
from spd_bench.leaderboard import FORMATS, Leaderboard, build_leaderboard, render_terminal
from spd_bench.leaderboard.formats import COMPARISONS_CSV
from spd_bench.store import atomic_write_bytes
from spd_bench.leaderboard.findings import FINDINGS_FILE
from spd_bench.leaderboard.stats import (
    ITEMS_ONLY,
    SEEDS_AND_ITEMS,
    SEEDS_ONLY,
    CellStats,
    Scores,
    against_base,
    best_versus_runner_up,
    describe,
    item_matrix,
    make_scores,
)
from spd_bench.leaderboard.table import Column, ModelTable

HERE = Path(__file__).parent
MAIN = HERE / "fixtures" / "records" / "main"
MIXED = HERE / "fixtures" / "records" / "mixed"
GOLDEN = HERE / "golden"
T_975_DF1 = 12.706204736  # Student t quantiles from a printed table
T_975_DF2 = 4.302652730


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing; create it with UPDATE_GOLDEN=1"
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", "now", n=1))
        pytest.fail(f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it if intended):\n{diff[:4000]}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Leaderboard, Path]:
    out = tmp_path_factory.mktemp("board")
    return build_leaderboard(MAIN, out, list(FORMATS)), out


def table_of(board: Leaderboard, model: str) -> ModelTable:
    return next(t for t in board.tables if t.model == model)


def column(table: ModelTable, task: str) -> Column:
    return next(c for c in table.columns if c.task == task)


def stats(table: ModelTable, method: str, task: str) -> CellStats:
    row = next(r for r in table.rows if r.method == method)
    cell = table.cell(row, column(table, task))
    assert cell is not None
    return cell.stats


# Statistics -----------------------------------------------------------------------------------


def _values(values: list[float]) -> Scores:
    """Per-seed values without per-item scores, seeds 1..S."""
    return Scores(None, {i + 1: np.array([v]) for i, v in enumerate(values)})


def test_seed_values_alone_give_the_textbook_t_interval() -> None:
    values = [0.50, 0.55, 0.525]  # mean 0.525, sd 0.025
    half = T_975_DF2 * 0.025 / math.sqrt(3)
    interval = describe(values, _values(values)).interval
    assert interval is not None and interval.method == SEEDS_ONLY
    assert interval.low == pytest.approx(0.525 - half) and interval.high == pytest.approx(0.525 + half)
    assert describe([0.4], _values([0.4])).interval is None  # one evaluation, no items: no interval


def test_one_evaluation_with_items_gets_the_item_t_interval() -> None:
    items = np.array([1.0, 0.0] * 200)  # p = 0.5 over 400 items: half-width t_399 * 0.5 / sqrt(399)... as scipy says
    cell = describe([0.5], make_scores([None], [0.5], [items.tolist()]))
    expected = scipy_stats.ttest_1samp(items, 0.0).confidence_interval(0.95)
    assert cell.interval is not None and cell.interval.method == ITEMS_ONLY
    assert (cell.interval.low, cell.interval.high) == pytest.approx((expected.low, expected.high))
    constant = describe([0.7], make_scores([None], [0.7], [[0.7] * 30]))
    assert constant.interval is not None and constant.interval.low == pytest.approx(0.7) == constant.interval.high


def test_seeds_with_items_widen_the_item_interval_by_the_seed_spread() -> None:
    rng = np.random.default_rng(0)
    items = (rng.random((3, 200)) < 0.5).astype(float)
    spread = items + np.array([[0.0], [0.1], [0.2]])  # the same items, seeds 10 points apart
    alike, apart = describe([0.5] * 3, make_scores([1, 2, 3], [0.5] * 3, items.tolist())), \
        describe([0.6] * 3, make_scores([1, 2, 3], [0.6] * 3, spread.tolist()))
    assert alike.interval.method == apart.interval.method == SEEDS_AND_ITEMS  # type: ignore[union-attr]
    width = lambda c: c.interval.high - c.interval.low  # noqa: E731
    assert width(apart) > 2 * width(alike)


def test_item_matrix_needs_the_same_items_for_every_seed() -> None:
    assert item_matrix([[1.0, 0.0], [0.0, 0.0]]).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert item_matrix([[1.0, 0.0], [1.0]]) is None
    assert item_matrix([[1.0, 0.0], None]) is None
    assert item_matrix([]) is None
    assert make_scores([1, 1], [0.1, 0.2], []) is None  # one seed twice (mixed sources) cannot be paired


def test_best_is_tested_against_the_runner_up_by_the_paired_procedure() -> None:
    scores = {"a": _values([0.80, 0.82, 0.81]), "b": _values([0.60, 0.61, 0.62]), "c": _values([0.5, 0.1, 0.9])}
    means = {k: float(np.mean(list(v.values.values()))) for k, v in scores.items()}
    best, found = best_versus_runner_up(means, scores, True)
    expected = scipy_stats.ttest_rel([0.80, 0.82, 0.81], [0.60, 0.61, 0.62])
    assert best == "a" and found.mean == pytest.approx(0.2) and found.p_value == pytest.approx(expected.pvalue)
    lower_best, found = best_versus_runner_up({"a": 2.0, "b": 1.5}, {"a": _values([2.0, 2.1]), "b": _values([1.5, 1.4])},
                                              False)  # lower is better: the difference is oriented to "better"
    assert lower_best == "b" and found.mean == pytest.approx(0.6)
    assert best_versus_runner_up({"a": 0.8}, {"a": scores["a"]}, True) is None  # no runner-up
    assert best_versus_runner_up({"a": 0.8, "b": 0.8}, scores, True) is None  # a tie
    assert best_versus_runner_up(means, {**scores, "b": None}, True) is None  # nothing to pair with


def test_change_against_base_pairs_items_when_both_have_them() -> None:
    base_items, items = [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    base, cell = CellStats(0.5, None, 1, None), CellStats(1.0, None, 1, None)
    paired = against_base(cell, make_scores([1], [1.0], [items]), base, make_scores([None], [0.5], [base_items]))
    assert paired.delta == pytest.approx(0.5) and paired.delta_rel == pytest.approx(1.0)
    expected = scipy_stats.ttest_rel(items, base_items).confidence_interval(0.95)
    assert paired.delta_interval is not None and paired.delta_interval.method == ITEMS_ONLY
    assert (paired.delta_interval.low, paired.delta_interval.high) == pytest.approx((expected.low, expected.high))
    three = CellStats(0.45, 0.05, 3, None)
    seeds_only = against_base(three, _values([0.4, 0.45, 0.5]), base, Scores(None, {None: np.array([0.4])}))
    half = T_975_DF2 * 0.05 / math.sqrt(3)
    assert seeds_only.delta_interval.method == SEEDS_ONLY  # type: ignore[union-attr]
    assert seeds_only.delta_interval.low == pytest.approx(0.05 - half)  # type: ignore[union-attr]


# Layout and statistics on the fixture records -------------------------------------------------


def test_rows_group_methods_and_columns_group_domains(built: tuple[Leaderboard, Path]) -> None:
    organism = table_of(built[0], "organism")
    assert [r.method for r in organism.rows] == ["base", "raw_sd", "spd", "rft"]
    assert [(g, [r.method for r in rows]) for g, rows in organism.groups()] == [
        ("no external signal", ["base", "raw_sd", "spd"]),
        ("external signal", ["rft"]),
    ]
    assert [(c.task, c.domain) for c in organism.columns] == [
        ("synth_math", "in"),
        ("synth_mc", "in"),
        ("synth_nll", "out"),
        ("synth_ood", "out"),
    ]
    nll = column(organism, "synth_nll")
    assert (nll.metric, nll.higher_is_better, nll.metric_label, nll.scale) == ("nll", False, "nll ↓", 1.0)
    assert [t.model for t in built[0].tables] == ["organism", "tiny-lm"]


def test_cell_statistics_follow_from_the_fixture_numbers(built: tuple[Leaderboard, Path]) -> None:
    organism = table_of(built[0], "organism")
    raw_sd = stats(organism, "raw_sd", "synth_math")  # 9, 10, 9 of 20 items correct
    assert raw_sd.mean == pytest.approx(28 / 60)
    assert raw_sd.sd == pytest.approx(np.std([0.45, 0.50, 0.45], ddof=1))
    assert raw_sd.n_seeds == 3 and raw_sd.interval is not None and raw_sd.interval.method == SEEDS_AND_ITEMS
    assert raw_sd.delta == pytest.approx(28 / 60 - 0.40)
    assert raw_sd.delta_rel == pytest.approx((28 / 60 - 0.40) / 0.40)
    spd_mc = stats(organism, "spd", "synth_mc")  # seeds 0.775 and 0.800: seed 3 is missing
    half = T_975_DF1 * np.std([0.775, 0.800], ddof=1) / math.sqrt(2)
    assert spd_mc.n_seeds == 2 and spd_mc.interval is not None and spd_mc.interval.method == SEEDS_ONLY
    assert spd_mc.interval.low == pytest.approx(0.7875 - half)
    base_mc = stats(organism, "base", "synth_mc")  # one evaluation, no per-item scores
    assert base_mc.interval is None and base_mc.sd is None
    assert stats(organism, "spd", "synth_nll").delta == pytest.approx(1.60 - 2.00)


def _fixture_values(task: str, method: str, metric: str, seeds: tuple[int, ...]) -> list[float]:
    folder = MAIN / "records" / "organism" / task
    return [json.loads((folder / f"{method}-seed{s}.json").read_text())["metrics"][metric] for s in seeds]


def test_best_marks_follow_the_paired_test_with_holm_over_the_columns(built: tuple[Leaderboard, Path]) -> None:
    organism = table_of(built[0], "organism")
    best = {
        task: [r.method for r in organism.rows if stats(organism, r.method, task).best]
        for task in ("synth_math", "synth_mc", "synth_nll", "synth_ood")
    }
    # Best minus runner-up, paired by seed (and by item where recorded), Holm over the 4 columns:
    # synth_math: rft - spd = 10, 10, 15 points on seeds 1-3 (20 items): p = 0.011, the largest of the four;
    # synth_mc: spd - rft on the seeds both have (1, 2), no per-item scores: paired t(1) below;
    # synth_nll: rft - spd = 0.25, 0.24, 0.26 on every item of a seed (no item variance): paired t(2) below;
    # synth_ood: spd - rft = 45 points on every seed (no seed variance): item-level t(19), p < 0.001.
    nll = scipy_stats.ttest_rel(_fixture_values("synth_nll", "rft", "nll", (1, 2, 3)),
                                _fixture_values("synth_nll", "spd", "nll", (1, 2, 3))).pvalue
    with warnings.catch_warnings():  # the two seeds differ by almost the same amount: scipy warns, p is tiny
        warnings.simplefilter("ignore", RuntimeWarning)
        mc = scipy_stats.ttest_rel(_fixture_values("synth_mc", "spd", "acc", (1, 2)),
                                   _fixture_values("synth_mc", "rft", "acc", (1, 2))).pvalue
    assert 4 * nll < 0.05 and 2 * mc < 0.05  # significant after Holm whatever their rank among the four
    assert best == {"synth_math": ["rft"], "synth_mc": ["spd"], "synth_nll": ["spd"], "synth_ood": ["spd"]}
    hidden = stats(organism, "spd", "synth_mc")  # acc is shown; acc_norm, in the CSV only, is never marked
    norm = organism.cells[("spd", "synth_mc", "in", "acc_norm")].stats
    assert hidden.best and not norm.best


def test_short_seeds_and_summaries(built: tuple[Leaderboard, Path]) -> None:
    organism = table_of(built[0], "organism")
    spd = next(r for r in organism.rows if r.method == "spd")
    assert organism.short_of_seeds(spd, column(organism, "synth_mc"))
    assert not organism.short_of_seeds(spd, column(organism, "synth_math"))
    assert organism.summary_domains == ["in", "out"]
    assert organism.summaries[("spd", "in")].mean == pytest.approx((46 / 60 + 0.7875) / 2)
    assert organism.summaries[("spd", "out")].mean == pytest.approx(49 / 60)  # the NLL column is left out
    assert organism.summaries[("spd", "in")].delta == pytest.approx((46 / 60 + 0.7875) / 2 - (0.40 + 0.50) / 2)


def test_notes_name_layers_seeds_and_commands(built: tuple[Leaderboard, Path]) -> None:
    notes = "\n".join(table_of(built[0], "organism").notes)
    assert "synth_ood offline-mirror" in notes and "synth_math local" in notes
    assert "spd 3 (2 on synth_mc †)" in notes
    assert "--methods rft" in notes and "--methods base,raw_sd,spd" in notes
    assert "Means leave out lower-is-better columns: synth_nll" in notes


def test_csv_is_tidy_with_one_row_per_cell_and_metric(built: tuple[Leaderboard, Path]) -> None:
    import pandas as pd

    frame = pd.read_csv(built[1] / "leaderboard.csv")
    # organism: 4 methods x (synth_math, synth_ood, synth_nll: 1 metric; synth_mc: acc, acc_norm); tiny-lm: 2 cells
    assert len(frame) == 4 * (1 + 1 + 1 + 2) + 2
    assert not frame.duplicated(["model", "method", "task", "domain", "metric"]).any()
    acc_norm = frame[(frame.metric == "acc_norm") & (frame.method == "raw_sd")].iloc[0]
    assert not acc_norm["shown"] and acc_norm["mean"] == pytest.approx(55.0)  # 0.55, 0.575, 0.525 in points


def test_filters_and_metric_override(tmp_path: Path) -> None:
    tiny = build_leaderboard(MAIN, None, [], models=["tiny-lm"])
    assert [t.model for t in tiny.tables] == ["tiny-lm"] and tiny.files == {}
    only_spd = build_leaderboard(MAIN, None, [], methods=["spd"], tasks=["synth_ood", "synth_math"])
    organism = table_of(only_spd, "organism")
    assert [r.method for r in organism.rows] == ["base", "spd"]  # base stays as the reference
    assert [c.task for c in organism.columns] == ["synth_math", "synth_ood"]
    norm = table_of(build_leaderboard(MAIN, None, [], metric="acc_norm"), "organism")
    assert [(c.task, c.metric) for c in norm.columns] == [("synth_mc", "acc_norm")]
    assert any("Left out, no acc_norm metric" in n and "synth_math" in n for n in norm.notes)
    with pytest.raises(UserError, match="no record has metric 'bleu'"):
        build_leaderboard(MAIN, None, [], metric="bleu")
    with pytest.raises(UserError, match="did you mean tiny-lm"):
        build_leaderboard(MAIN, None, [], models=["tiny_lm"])
    with pytest.raises(UserError, match="unknown leaderboard format 'pdf'"):
        build_leaderboard(MAIN, tmp_path, ["md", "pdf"])


# Refusals -------------------------------------------------------------------------------------


def test_mixed_settings_are_refused_then_allowed() -> None:
    with pytest.raises(UserError) as info:
        build_leaderboard(MIXED, None, [])
    message = str(info.value)
    assert "\n" not in message
    assert "limit (20: base, spd seed 1, spd seed 2; 10: spd seed 3)" in message
    assert "n_items" in message and "--allow-mixed" in message
    board = build_leaderboard(MIXED, None, [], allow_mixed=True)
    organism = table_of(board, "organism")
    assert stats(organism, "spd", "synth_math").n_seeds == 3
    assert any(n.startswith("Mixed settings (allowed): records differ in limit") for n in organism.notes)


def test_corrupted_record_gives_one_line_error(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(MAIN, results)
    broken = results / "records" / "organism" / "synth_mc" / "spd-seed1.json"
    broken.write_text(broken.read_text()[:100])
    with pytest.raises(UserError) as info:
        build_leaderboard(results, None, [])
    assert "\n" not in str(info.value)
    assert str(broken) in str(info.value) and "not valid JSON" in str(info.value)


def test_corrupted_samples_file_gives_one_line_error(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(MAIN, results)
    samples = results / "records" / "organism" / "synth_math" / "spd-seed2.samples.jsonl"
    samples.write_text('{"doc_id": 0, "sco')
    with pytest.raises(UserError, match=r"spd-seed2\.samples\.jsonl: per-item samples are corrupted") as info:
        build_leaderboard(results, None, [])
    assert "\n" not in str(info.value)


def test_duplicate_record_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(MAIN, results)
    copy = results / "older" / "spd-seed1.json"
    copy.parent.mkdir()
    record = json.loads((results / "records" / "organism" / "synth_mc" / "spd-seed1.json").read_text())
    copy.write_text(json.dumps(record))
    with pytest.raises(UserError, match="same cell"):
        build_leaderboard(results, None, [])


def test_missing_results_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build_leaderboard(tmp_path / "nope", None, [])


# Files ----------------------------------------------------------------------------------------


def test_outputs_are_written_atomically(built: tuple[Leaderboard, Path], tmp_path: Path) -> None:
    assert sorted(p.name for p in built[1].iterdir()) == sorted([f"leaderboard.{f}" for f in FORMATS]
                                                                 + [COMPARISONS_CSV, FINDINGS_FILE])
    target = tmp_path / "leaderboard.md"
    target.write_text("previous")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "previous" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("fmt", ["md", "csv", "tex", "html"])
def test_text_formats_match_golden(built: tuple[Leaderboard, Path], fmt: str) -> None:
    check_golden(f"leaderboard.{fmt}", (built[1] / f"leaderboard.{fmt}").read_text())


def test_terminal_matches_golden(built: tuple[Leaderboard, Path]) -> None:
    console = Console(file=io.StringIO(), width=150, record=True, color_system=None)
    render_terminal(built[0], console)
    check_golden("terminal.txt", console.export_text())


def test_markdown_marks_best_and_missing_seed(built: tuple[Leaderboard, Path]) -> None:
    text = (built[1] / "leaderboard.md").read_text()
    spd_row = next(line for line in text.splitlines() if line.startswith("| spd |"))  # organism's table comes first
    assert "**78.8**" in spd_row and "†" in spd_row and "**81.7**" in spd_row
    assert "| *external signal* |" in text and "| rft (labels) |" in text
    assert "nll ↓" in text


def test_html_tooltips_give_spread_and_relative_change(built: tuple[Leaderboard, Path]) -> None:
    text = (built[1] / "leaderboard.html").read_text()
    # raw_sd on synth_math: 28/60 against base 0.40 is +6.7 points, +16.7% relative
    assert "seeds 1, 2, 3; seeds+items t interval; change vs base +6.7 (+16.7%)" in text
    assert "<script>" in text and "<style>" in text and "http" not in text  # self-contained


def test_png_is_a_nonempty_image(built: tuple[Leaderboard, Path]) -> None:
    data = (built[1] / "leaderboard.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 300 and height > 300
    assert len(data) > 10_000


def _tabular_rows_have_the_declared_columns(tex: str) -> None:
    """Every body row of each outer tabular fills exactly its declared columns (cells hold no '&')."""
    tables = re.findall(r"\\begin\{tabular\}\{(lr+)\}\n(.*?)\n\\end\{tabular\}", tex, re.S)
    assert len(tables) == 5  # two leaderboard tables, three comparison tables
    for spec, body in tables:
        rows = [line for line in body.splitlines() if line.endswith("\\\\") and "multicolumn" not in line]
        assert rows
        for line in rows:
            assert line.count(" & ") + 1 == len(spec), line


def test_latex_is_well_formed_and_compiles_when_pdflatex_exists(
    built: tuple[Leaderboard, Path], tmp_path: Path
) -> None:
    tex = (built[1] / "leaderboard.tex").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 5
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{78.8}" in tex
    _tabular_rows_have_the_declared_columns(tex)
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        warnings.warn(
            "pdflatex is not installed: leaderboard.tex was checked for structure but not compiled", stacklevel=1
        )
        return
    shutil.copy(built[1] / "leaderboard.tex", tmp_path / "leaderboard.tex")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
        "\\begin{document}\n\\input{leaderboard.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_records_from_different_backends_are_not_mixed_in_one_column(tmp_path: Path):
    """A column compares methods; outputs of two engines differ, so mixing them needs --allow-mixed."""
    import shutil

    from spd_bench.errors import UserError
    from spd_bench.leaderboard import build_leaderboard

    committed = Path(__file__).resolve().parents[1] / "results" / "records" / "organism" / "synth_math"
    folder = tmp_path / "records" / "organism" / "synth_math"
    shutil.copytree(committed, folder)
    record = folder / "raw_sd-seed1.json"
    data = json.loads(record.read_text())
    assert data["eval_settings"].get("backend", "hf") == "hf"
    data["eval_settings"]["backend"] = "vllm"
    record.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"synth_math: records differ in backend \(hf: .*; vllm: raw_sd"):
        build_leaderboard(tmp_path, None, [])
    board = build_leaderboard(tmp_path, None, [], allow_mixed=True)
    assert board.tables
