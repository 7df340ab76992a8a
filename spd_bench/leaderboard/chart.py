"""PNG bar chart: each method's change against the base model per task, with 95% intervals.

One panel per model and unit, since percentage points and NLL cannot share an axis. Drawn on
a bare Figure (Agg canvas), so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import io

from spd_bench.leaderboard.table import BASE, Column, Leaderboard, ModelTable


def _panels(board: Leaderboard) -> list[tuple[ModelTable, list[Column], str]]:
    panels = []
    for table in board.tables:
        for higher, unit in ((True, "points"), (False, "metric units, lower is better")):
            columns = [c for c in table.columns if c.higher_is_better == higher]
            if columns:
                panels.append((table, columns, unit))
    return panels


def render_png(board: Leaderboard) -> bytes:
    from matplotlib.figure import Figure

    panels = _panels(board)
    widest = max(len(columns) for _, columns, _ in panels)
    fig = Figure(figsize=(max(6.0, 1.6 * widest + 2), 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    methods = [r.method for t in board.tables for r in t.rows if r.method != BASE]
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(methods))}  # one colour per method in every panel
    for ax, (table, columns, unit) in zip(axes, panels, strict=True):
        rows = [r for r in table.rows if r.method != BASE]
        width = 0.8 / max(1, len(rows))
        for i, row in enumerate(rows):
            xs, heights, low_err, high_err = [], [], [], []
            for j, column in enumerate(columns):
                cell = table.cell(row, column)
                if cell is None or cell.stats.delta is None:
                    continue
                delta = cell.stats.delta * column.scale
                xs.append(j - 0.4 + width * (i + 0.5))
                heights.append(delta)
                interval = cell.stats.delta_interval
                # max(0, ...): the interval is centred on the paired seeds' difference, which can sit off the bar.
                low_err.append(max(0.0, delta - interval.low * column.scale) if interval else 0.0)
                high_err.append(max(0.0, interval.high * column.scale - delta) if interval else 0.0)
            ax.bar(xs, heights, width, yerr=[low_err, high_err], capsize=3, label=row.label, color=colors[row.method])
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(columns)), [f"{c.task}\n{c.metric_label} ({c.domain})" for c in columns])
        ax.set_ylabel(f"change vs base ({unit})")
        ax.set_title(table.model)
        if rows:
            ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
