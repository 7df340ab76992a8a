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
