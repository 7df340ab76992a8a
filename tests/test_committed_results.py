"""The committed leaderboard is exactly what `spd-bench leaderboard` rebuilds from the committed records."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO
from spd_bench.leaderboard import build_leaderboard


def test_committed_markdown_and_csv_match_a_rebuild(tmp_path: Path):
    results = REPO / "results"
    assert (results / "records").is_dir(), "results/records is missing: commit the CPU default run's records"
    board = build_leaderboard(results, tmp_path, ["md", "csv"])
    for name in ("leaderboard.md", "leaderboard.csv"):
        assert (tmp_path / name).read_text() == (results / name).read_text(), f"results/{name} is stale: run `spd-bench leaderboard`"
    assert board.tables


def test_committed_png_decodes_to_the_rebuilt_chart(tmp_path: Path):
    """The committed chart is a real image: it decodes, has the rebuilt chart's size, and shows bars."""
    import numpy as np
    from matplotlib.image import imread

    build_leaderboard(REPO / "results", tmp_path, ["png"])
    committed = imread(REPO / "results" / "leaderboard.png")
    rebuilt = imread(tmp_path / "leaderboard.png")
    assert committed.shape == rebuilt.shape and committed.shape[0] > 200 and committed.shape[1] > 400
    rgb = committed[..., :3]
    not_white = (rgb < 0.95).any(axis=-1).mean()
    assert 0.01 < not_white < 0.9, f"{not_white:.1%} of the pixels are drawn"
    colours = {tuple(pixel) for pixel in (rgb.reshape(-1, 3) * 255).round().astype(int)[::97]}
    assert len(colours) > 5  # axes, text and several bar colours, not one flat fill
    assert np.abs(committed - rebuilt).mean() < 0.01, "results/leaderboard.png is stale: run `spd-bench leaderboard`"


def test_committed_diagnostics_and_rank_sweep_match_a_rebuild(tmp_path: Path):
    """The diagnostics table and the organism's rank-sweep ablation are what `spd-bench leaderboard`
    rebuilds from the committed records alone."""
    from spd_bench.leaderboard.ablation_formats import build_ablations

    results = REPO / "results"
    build_leaderboard(results, tmp_path, ["csv"])
    name = "leaderboard_diagnostics.csv"
    assert (tmp_path / name).read_text() == (results / name).read_text(), f"results/{name} is stale: run `spd-bench leaderboard`"
    sweep = results / "sweeps" / "rank_fraction"
    assert (sweep / "sweep.json").is_file(), "results/sweeps/rank_fraction is missing: commit the organism's rank sweep"
    (ablation,) = [a for a in build_ablations(results, tmp_path, ["md", "csv"]) if a.name == "rank_fraction"]
    for name in ("ablation.md", "ablation.csv"):
        rebuilt = tmp_path / "sweeps" / "rank_fraction" / name
        assert rebuilt.read_text() == (sweep / name).read_text(), f"results/sweeps/rank_fraction/{name} is stale"
    assert "How to read" in (sweep / "ablation.md").read_text()


def test_a_nested_results_folder_keeps_its_own_board(tmp_path: Path):
    """results/smollm2/ (a run's own output folder, with its own records/) is not mixed into the main board."""
    import shutil

    only = tmp_path / "only"
    shutil.copytree(REPO / "results" / "records", only / "records")
    nested = tmp_path / "nested"
    shutil.copytree(REPO / "results" / "records", nested / "records")
    shutil.copytree(REPO / "results" / "records", nested / "smollm2" / "records")
    build_leaderboard(only, tmp_path / "a", ["md"])
    build_leaderboard(nested, tmp_path / "b", ["md"])
    assert (tmp_path / "a" / "leaderboard.md").read_text() == (tmp_path / "b" / "leaderboard.md").read_text()
