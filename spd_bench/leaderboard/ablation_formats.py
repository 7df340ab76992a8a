"""An ablation (ablation.py) as Markdown, tidy CSV, LaTeX and HTML, and every format written beside its sweep.

The numbers of every format come from the same cell texts, so they always agree; each table
ends with the one line that says how to read it (``ablation.reading``). With Markdown, the
Δ raw_sd cells are also written as sentences (findings.md, findings.py) for READMEs to quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spd_bench.leaderboard.ablation import (
    VERSUS,
    Ablation,
    AblationCell,
    AblationRow,
    Section,
    axis_label,
    build_ablation,
    reading,
    sweep_folders,
    value_text,
)
from spd_bench.leaderboard.compare import describe_comparison, margin_reading
from spd_bench.leaderboard.display import MISSING, _decimals, number, rounded
from spd_bench.leaderboard.findings import FINDINGS_FILE, grouped, sentence
from spd_bench.leaderboard.formats import tex_text
from spd_bench.leaderboard.stats import CellStats
from spd_bench.leaderboard.table import Column
from spd_bench.store import atomic_write_bytes

ABLATION_FILE = "ablation"


def _interval(stats_low: float, stats_high: float, column: Column) -> str:
    d = _decimals(column.higher_is_better)
    return f"[{number(stats_low, column.scale, d)}, {number(stats_high, column.scale, d)}]"


def stats_text(stats: CellStats, column: Column) -> str:
    """'45.2 [41.0, 49.3]': the mean over seeds and its 95% interval, in display units."""
    value = number(stats.mean, column.scale, _decimals(column.higher_is_better))
    return value if stats.interval is None else f"{value} {_interval(stats.interval.low, stats.interval.high, column)}"


@dataclass(frozen=True)
class Shown:
    """One table cell: its value, what follows it (interval, verdict), and whether the value is bold."""

    value: str
    rest: str = ""
    bold: bool = False

    def plain(self) -> str:
        return f"{self.value} {self.rest}" if self.rest else self.value


def delta_text(cell: AblationCell | None, column: Column) -> Shown:
    """'+3.1 [-1.0, 7.0] inconclusive': the difference against raw_sd, its paired interval and verdict,
    bold where significant after Holm over the table."""
    if cell is None or cell.delta is None:
        return Shown(MISSING)
    if cell.delta.paired is not None:
        text = describe_comparison(cell.delta.paired, column)
        return Shown(text.value, " ".join(p for p in (text.interval, text.verdict, text.mark) if p), text.significant)
    return Shown(number(cell.delta.value, column.scale, _decimals(column.higher_is_better), signed=True))


def _title(ablation: Ablation, section: Section, method: str) -> str:
    return f"{ablation.name}: {method} by {', '.join(axis_label(a) for a in section.axes)}"


def _section_rows(section: Section, method: str) -> list[AblationRow]:
    return [row for row in section.rows if row.method == method]


def _methods(ablation: Ablation) -> list[str]:
    return list(dict.fromkeys(row.method for s in ablation.sections for row in s.rows))


def _table_rows(ablation: Ablation, section: Section, method: str) -> tuple[list[str], list[list[Shown]]]:
    """Header, then one row per setting and one per reference method."""
    header = [axis_label(a) for a in section.axes]
    for column in ablation.columns:
        header += [f"{column.task} ({column.domain}) {column.metric_label}", f"Δ {VERSUS}"]
    rows = []
    for row in _section_rows(section, method):
        line = [Shown(value_text(row.values[a])) for a in section.axes]
        for column in ablation.columns:
            cell = row.cells.get((column.task, column.domain))
            line += [Shown(stats_text(cell.stats, column) if cell else MISSING), delta_text(cell, column)]
        rows.append(line)
    for name, by_column in ablation.references.items():
        line = [Shown(f"{name} (reference)")] + [Shown("")] * (len(section.axes) - 1)
        for column in ablation.columns:
            stats = by_column.get((column.task, column.domain))
            line += [Shown(stats_text(stats, column) if stats else MISSING), Shown("")]
        rows.append(line)
    return header, rows


def _md(cell: Shown) -> str:
    return Shown(f"**{cell.value}**", cell.rest).plain() if cell.bold else cell.plain()


def _tex(cell: Shown) -> str:
    value = rf"\textbf{{{tex_text(cell.value)}}}" if cell.bold else tex_text(cell.value)
    return f"{value} {tex_text(cell.rest)}" if cell.rest else value


def _html(cell: Shown) -> str:
    from html import escape

    value = f"<strong>{escape(cell.value)}</strong>" if cell.bold else escape(cell.value)
    return f"{value} {escape(cell.rest)}" if cell.rest else value


def render_markdown(ablation: Ablation) -> str:
    lines = [f"## Ablation: {ablation.name}", ""]
    for method in _methods(ablation):
        for section in ablation.sections:
            if not _section_rows(section, method):
                continue
            header, body = _table_rows(ablation, section, method)
            lines += [f"### {_title(ablation, section, method)}", "", "| " + " | ".join(header) + " |",
                      "|---" * len(section.axes) + "|---:" * (len(header) - len(section.axes)) + "|"]
            lines += ["| " + " | ".join(_md(c) for c in cells) + " |" for cells in body]
            lines += ["", f"_{reading(ablation)}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_csv(ablation: Ablation) -> str:
    """Tidy: one row per (section, setting or reference, method, column), in display units."""
    import pandas as pd

    axes = list(ablation.axes)
    records = []

    def entry(section: str, setting: str, method: str, values: dict[str, str], column: Column, stats: CellStats,
              cell: AblationCell | None) -> dict[str, object]:
        delta = cell.delta if cell else None
        paired = delta.paired if delta else None
        return {
            "sweep": ablation.name, "varied": section, "setting": setting, "method": method,
            **{axis_label(a): values.get(a, "") for a in axes},
            "task": column.task, "domain": column.domain, "metric": column.metric,
            "unit": "points" if column.higher_is_better else "metric",
            "mean": rounded(stats.mean, column.scale), "ci_low": rounded(stats.interval.low, column.scale)
            if stats.interval else None, "ci_high": rounded(stats.interval.high, column.scale) if stats.interval else None,
            "ci_method": stats.interval.method if stats.interval else None, "n_seeds": stats.n_seeds,
            "seeds": ";".join(map(str, cell.seeds)) if cell else "",
            f"delta_vs_{VERSUS}": rounded(delta.value, column.scale) if delta else None,
            "delta_ci_low": rounded(delta.interval.low, column.scale) if delta and delta.interval else None,
            "delta_ci_high": rounded(delta.interval.high, column.scale) if delta and delta.interval else None,
            "delta_df": rounded(paired.estimate.df) if paired else None,
            "delta_procedure": paired.estimate.procedure if paired else None,
            "delta_p": rounded(paired.p_value) if paired else None,
            "delta_p_holm": rounded(paired.p_holm) if paired else None,
            "delta_verdict": paired.verdict if paired else None,
            "delta_equivalence_margin": rounded(paired.margin, column.scale) if paired else None,
        }

    for section in ablation.sections:
        varied = "+".join(axis_label(a) for a in section.axes)
        for row in section.rows:
            values = {a: value_text(v) for a, v in row.values.items()}
            for column in ablation.columns:
                cell = row.cells.get((column.task, column.domain))
                if cell is not None:
                    records.append(entry(varied, row.setting, row.method, values, column, cell.stats, cell))
    for name, by_column in ablation.references.items():
        for column in ablation.columns:
            stats = by_column.get((column.task, column.domain))
            if stats is not None:
                records.append(entry("reference", "reference", name, {}, column, stats, None))
    return pd.DataFrame.from_records(records).to_csv(index=False, lineterminator="\n")


def render_latex(ablation: Ablation) -> str:
    """Tables for ``\\input`` in a paper; they need ``\\usepackage{booktabs}``."""
    lines = ["% Ablation tables built by spd-bench from a sweep's stored result records; needs \\usepackage{booktabs}."]
    for method in _methods(ablation):
        for section in ablation.sections:
            if not _section_rows(section, method):
                continue
            header, body = _table_rows(ablation, section, method)
            lines += [r"\begin{table}[t]", r"\centering", r"\scriptsize",
                      rf"\caption{{{tex_text(_title(ablation, section, method))}}}",
                      r"\begin{tabular}{" + "l" * len(section.axes) + "r" * (len(header) - len(section.axes)) + "}",
                      r"\toprule", " & ".join(tex_text(h) for h in header) + r" \\", r"\midrule"]
            lines += [" & ".join(_tex(c) for c in cells) + r" \\" for cells in body]
            lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", tex_text(reading(ablation)) + r"\par",
                      r"\end{table}", ""]
    return "\n".join(lines)


def render_html(ablation: Ablation) -> str:
    """A standalone page: the tables, each with its reading line, and the plot beside it (ablation.png)."""
    from html import escape

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Ablation: {escape(ablation.name)}</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:2px 6px}td:not(:first-child){text-align:right}caption{caption-side:bottom;font-style:italic;"
             "text-align:left}</style></head><body>", f"<h2>Ablation: {escape(ablation.name)}</h2>"]
    for method in _methods(ablation):
        for section in ablation.sections:
            if not _section_rows(section, method):
                continue
            header, body = _table_rows(ablation, section, method)
            parts += [f"<h3>{escape(_title(ablation, section, method))}</h3><table>",
                      f"<caption>{escape(reading(ablation))}</caption>",
                      "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
            parts += ["<tr>" + "".join(f"<td>{_html(c)}</td>" for c in cells) + "</tr>" for cells in body]
            parts.append("</table>")
    parts += [f"<p><img src='{ABLATION_FILE}.png' alt='metric against each option value'></p>", "</body></html>"]
    return "\n".join(parts) + "\n"


def render_findings(ablation: Ablation) -> str:
    """findings.md of a sweep: per table, a sentence for each paired Δ raw_sd cell, grouped by verdict."""
    lines = [f"# Findings: sweep {ablation.name}", "",
             "Generated by `spd-bench leaderboard` from the Δ raw_sd cells of ablation.md (the same cells, the same"
             " numbers); quote these sentences rather than retyping them."]
    for method in _methods(ablation):
        for section in ablation.sections:
            pairs = []
            for row in _section_rows(section, method):
                subject = f"{method} ({', '.join(f'{axis_label(a)}={value_text(row.values[a])}' for a in section.axes)})"
                for column in ablation.columns:
                    cell = row.cells.get((column.task, column.domain))
                    paired = cell.delta.paired if cell is not None and cell.delta is not None else None
                    if paired is not None:
                        pairs.append((paired.verdict, sentence(subject, VERSUS, paired, column, f"sweep {ablation.name}")))
            if pairs:
                lines += ["", f"## {_title(ablation, section, method)}", "",
                          f"Holm over the {len(pairs)} Δ {VERSUS} cells of this table; {margin_reading(ablation.margin)}."]
                lines += grouped(pairs)
    return "\n".join(lines) + "\n"


def _png(ablation: Ablation) -> bytes:
    from spd_bench.leaderboard.ablation_chart import render_ablation_png

    return render_ablation_png(ablation)


RENDERERS: dict[str, Callable[[Ablation], bytes]] = {
    "md": lambda a: render_markdown(a).encode(),
    "csv": lambda a: render_csv(a).encode(),
    "tex": lambda a: render_latex(a).encode(),
    "html": lambda a: render_html(a).encode(),
    "png": _png,
}
ABLATION_FORMATS = tuple(RENDERERS)


def write_ablation(ablation: Ablation, out_dir: Path, formats: list[str]) -> dict[str, Path]:
    """``ablation.<format>`` in ``out_dir`` for each of ``formats``, and findings.md beside the Markdown."""
    written = {}
    for name in formats:
        if name in RENDERERS:
            path = out_dir / f"{ABLATION_FILE}.{name}"
            atomic_write_bytes(path, RENDERERS[name](ablation))
            written[name] = path
    if "md" in formats:
        atomic_write_bytes(out_dir / FINDINGS_FILE, render_findings(ablation).encode())
        written[FINDINGS_FILE] = out_dir / FINDINGS_FILE
    ablation.files = written
    return written


def build_ablations(results_dir: Path, out_dir: Path | None, formats: list[str]) -> list[Ablation]:
    """Every sweep under ``results_dir`` rebuilt from its records into ``<out_dir>/sweeps/<name>/``."""
    ablations = []
    for folder in sweep_folders(results_dir):
        ablation = build_ablation(folder)
        if out_dir is not None:
            write_ablation(ablation, Path(out_dir) / folder.parent.name / folder.name, formats)
        ablations.append(ablation)
    return ablations

