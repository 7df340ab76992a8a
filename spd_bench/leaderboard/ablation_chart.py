"""PNG of an ablation: the metric against each option value with 95% intervals, references as bands.

One panel per (swept method, varied option, evaluation column); raw_sd and spd_random, which
do not depend on the swept options, are horizontal lines with their intervals as shaded bands.
Drawn on a bare Figure (Agg canvas), like chart.py, so pyplot's global state is left alone.
"""

from __future__ import annotations

import io

from spd_bench.leaderboard.ablation import Ablation, axis_label, value_text
from spd_bench.leaderboard.stats import CellStats
from spd_bench.leaderboard.table import Column

_REFERENCE_COLORS = {"raw_sd": "C1", "spd_random": "C2"}


def _reference(ax: object, name: str, stats: CellStats, column: Column) -> None:
    color = _REFERENCE_COLORS.get(name, "C3")
    ax.axhline(stats.mean * column.scale, color=color, linestyle="--", linewidth=1, label=name)  # type: ignore[attr-defined]
    if stats.interval is not None:
        ax.axhspan(stats.interval.low * column.scale, stats.interval.high * column.scale,  # type: ignore[attr-defined]
                   color=color, alpha=0.15, linewidth=0)


def plot_reading(ablation: Ablation) -> str:
    """The line under the plot that says how to read it."""
    layout = ("each row of panels varies one option, the others at their default" if ablation.mode == "one_at_a_time"
              and len(ablation.axes) > 1 else "one point per setting of the options")
    return (f"How to read: {layout}; points: the primary metric, mean over seeds, with 95% interval bars"
            " (percentage points for accuracies); dashed lines: raw_sd and spd_random, run once, with their"
            " 95% intervals as shaded bands.")


def render_ablation_png(ablation: Ablation) -> bytes:
    from matplotlib.figure import Figure

    panels = [(method, section) for method in dict.fromkeys(r.method for s in ablation.sections for r in s.rows)
              for section in ablation.sections if any(r.method == method for r in section.rows)]
    n_cols = max(1, len(ablation.columns))
    fig = Figure(figsize=(4.2 * n_cols + 1, 3.0 * len(panels) + 0.8), layout="constrained")
    axes = fig.subplots(len(panels), n_cols, squeeze=False)
    for (method, section), row_axes in zip(panels, axes, strict=True):
        rows = [r for r in section.rows if r.method == method]
        ticks = [",".join(value_text(r.values[a]) for a in section.axes) for r in rows]
        for ax, column in zip(row_axes, ablation.columns, strict=False):
            xs, ys, low, high = [], [], [], []
            for x, row in enumerate(rows):
                cell = row.cells.get((column.task, column.domain))
                if cell is None:
                    continue
                mean = cell.stats.mean * column.scale
                interval = cell.stats.interval
                xs.append(x)
                ys.append(mean)
                # max(0, ...): the interval is centred on the per-item mean, which can differ from the recorded metric.
                low.append(max(0.0, mean - interval.low * column.scale) if interval else 0.0)
                high.append(max(0.0, interval.high * column.scale - mean) if interval else 0.0)
            ax.errorbar(xs, ys, yerr=[low, high], fmt="o-", capsize=3, color="C0", label=method)
            for name, by_column in ablation.references.items():
                stats = by_column.get((column.task, column.domain))
                if stats is not None:
                    _reference(ax, name, stats, column)
            ax.set_xticks(range(len(rows)), ticks)
            ax.set_xlim(-0.5, len(rows) - 0.5)
            bottom, top = ax.get_ylim()
            if top - bottom < 1e-6:  # every value equal: a readable axis around it, not a 1e-17 offset
                ax.set_ylim(bottom - 1.0, top + 1.0)
            ax.set_xlabel(", ".join(axis_label(a) for a in section.axes))
            ax.set_ylabel(f"{column.metric_label} ({'points' if column.higher_is_better else 'metric units'})")
            ax.set_title(f"{method}: {column.task} ({column.domain})", fontsize="medium")
            ax.legend(fontsize="small")
    fig.supxlabel(plot_reading(ablation), fontsize="small", wrap=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
