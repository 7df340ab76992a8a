"""The text of each table cell, shared by every output format so they all show the same numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spd_bench.leaderboard.stats import CellStats
from spd_bench.leaderboard.table import DOMAIN_TITLES, Column, ModelTable, Row

MISSING = "—"
CSV_DECIMALS = 4  # the tidy CSVs' numbers: more decimals than the tables show


@dataclass(frozen=True)
class CellText:
    value: str  # "45.2"
    spread: str  # "±1.3": standard deviation over seeds, or "" for a single evaluation
    interval: str  # "[41.0, 49.3]", or "" without an interval
    delta: str  # "+3.1", or "" for the base model
    best: bool
    short: bool  # fewer seeds than the method has elsewhere
    sort_value: float  # the shown value, unrounded, for sorting
    details: str = ""  # spread, seeds, interval kind, relative change: for tooltips

    def plain(self) -> str:
        return " ".join(p for p in (self.value, self.spread, self.interval, self.delta) if p) + (" †" if self.short else "")


def _decimals(higher_is_better: bool) -> int:
    """Points get one decimal; metrics like NLL live on a finer scale."""
    return 1 if higher_is_better else 3


def number(x: float, scale: float, decimals: int, signed: bool = False) -> str:
    value = round(x * scale, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def rounded(x: float | None, scale: float = 1.0) -> float | None:
    """A number as the tidy CSVs hold it: in display units, ``CSV_DECIMALS`` decimals, never -0.0."""
    return None if x is None else round(x * scale, CSV_DECIMALS) + 0.0


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping's leaves as (dotted key, value) pairs (an empty mapping is a leaf), so nested
    settings and diagnostics can be listed and compared field by field."""
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in flatten(item, f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, value)]


def cell_text(table: ModelTable, row: Row, column: Column) -> CellText | None:
    cell = table.cell(row, column)
    if cell is None:
        return None
    stats, d = cell.stats, _decimals(column.higher_is_better)
    interval = stats.interval
    return CellText(
        value=number(stats.mean, column.scale, d),
        spread="±" + number(stats.sd, column.scale, d) if stats.sd is not None else "",
        interval=f"[{number(interval.low, column.scale, d)}, {number(interval.high, column.scale, d)}]"
        if interval
        else "",
        delta=number(stats.delta, column.scale, d, signed=True) if stats.delta is not None else "",
        best=stats.best,
        short=table.short_of_seeds(row, column),
        sort_value=stats.mean * column.scale,
        details=_details(cell.stats, cell.seeds, column),
    )


def _details(stats: CellStats, seeds: tuple[int, ...], column: Column) -> str:
    d = _decimals(column.higher_is_better)
    parts = [f"sd {number(stats.sd, column.scale, d)}" if stats.sd is not None else "single evaluation"]
    if seeds:
        parts.append(f"seeds {', '.join(str(s) for s in seeds)}")
    parts.append(f"{stats.interval.method} interval" if stats.interval else "no interval")
    if stats.delta is not None:
        relative = f" ({stats.delta_rel:+.1%})" if stats.delta_rel is not None else ""
        parts.append(f"change vs base {number(stats.delta, column.scale, d, signed=True)}{relative}")
    return "; ".join(parts)


def summary_text(table: ModelTable, row: Row, domain: str) -> CellText | None:
    summary = table.summaries.get((row.method, domain))
    if summary is None:
        return None
    return CellText(
        value=number(summary.mean, 100.0, 1),
        spread="",
        interval="",
        delta=number(summary.delta, 100.0, 1, signed=True) if summary.delta is not None else "",
        best=False,
        short=False,
        sort_value=summary.mean * 100.0,
    )


def summary_header(domain: str) -> str:
    return f"mean {DOMAIN_TITLES[domain]}"
