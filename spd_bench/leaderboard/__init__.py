"""Leaderboards built only from stored result records: no model is loaded, nothing is re-scored.

``build_leaderboard`` reads the records under a results folder, checks they are comparable,
computes per-cell statistics and the paired comparisons between methods, and writes the
requested formats; ``render_terminal`` prints it.
"""

from __future__ import annotations

from pathlib import Path

from spd_bench.errors import UserError
from spd_bench.leaderboard.ablation import sweep_folders
from spd_bench.leaderboard.ablation_formats import build_ablations
from spd_bench.leaderboard.collect import (
    check_comparable,
    check_duplicates,
    equivalence_margin,
    load_stored,
    main_record_files,
    select,
)
from spd_bench.leaderboard.compare import compare_methods
from spd_bench.leaderboard.diagnostics import diagnostics_tables
from spd_bench.leaderboard.formats import FORMATS, check_formats, write_outputs
from spd_bench.leaderboard.table import Leaderboard, build_tables
from spd_bench.leaderboard.terminal import render_terminal

__all__ = ["FORMATS", "Leaderboard", "build_ablations", "build_leaderboard", "check_formats", "main_record_files",
           "render_terminal", "sweep_folders"]


def build_leaderboard(
    results_dir: Path,
    out_dir: Path | None,
    formats: list[str],
    models: list[str] | None = None,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    metric: str | None = None,
    allow_mixed: bool = False,
) -> Leaderboard:
    """Build the leaderboard from ``results_dir`` and write ``leaderboard.<fmt>`` files into ``out_dir``.

    ``methods`` and ``tasks`` also set the order of rows and columns; the base model is always
    kept as the reference row. ``metric`` replaces each task's primary metric. Records whose
    evaluation settings differ within a task are refused unless ``allow_mixed``. The equivalence
    margin of the verdicts is the records' ``report.equivalence_margin``.
    """
    check_formats(formats)
    stored = select(load_stored(Path(results_dir)), models, methods, tasks)
    if not stored:
        raise UserError(f"no records in {results_dir} match the chosen models, methods and tasks; drop a filter")
    check_duplicates(stored)
    conflicts = check_comparable(stored, allow_mixed)
    tables = build_tables(stored, metric=metric, method_order=methods, task_order=tasks, conflicts=conflicts)
    if not tables:
        known = sorted({m for s in stored for m in s.record.metrics})
        raise UserError(f"no record has metric {metric!r}; the records have {', '.join(known)}")
    comparisons = compare_methods(tables, stored, equivalence_margin(stored))
    board = Leaderboard(tables, comparisons=comparisons, diagnostics=diagnostics_tables(stored))
    if out_dir is not None:
        board.files = write_outputs(board, Path(out_dir), formats)
    return board
