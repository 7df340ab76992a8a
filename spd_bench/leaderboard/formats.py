"""Text formats of the leaderboard (Markdown, tidy CSV, LaTeX) and writing every format to disk.

The paired comparisons between methods follow the leaderboard in every format; in CSV, whose
one tidy table cannot hold a second one, they go to their own file (COMPARISONS_CSV), and beside
the Markdown their sentences go to findings.md (findings.py), for READMEs to quote. Files are
written to a temporary name beside the target and renamed into place, so a reader never sees
half a table and an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from spd_bench.errors import UserError
from spd_bench.leaderboard.compare import (
    SECTION_TITLE,
    ComparisonTable,
    ComparisonText,
    column_label,
    comparison_text,
    reading,
    title,
)
from spd_bench.leaderboard.diagnostics import DIAGNOSTICS_CSV, READING, DiagnosticsTable
from spd_bench.leaderboard.diagnostics import SECTION_TITLE as DIAGNOSTICS_TITLE
from spd_bench.leaderboard.diagnostics import render_csv as render_diagnostics_csv
from spd_bench.leaderboard.display import MISSING, CellText, cell_text, rounded, summary_header, summary_text
from spd_bench.leaderboard.findings import FINDINGS_FILE, render_findings
from spd_bench.leaderboard.stats import SEEDS_ONLY
from spd_bench.leaderboard.table import DOMAIN_TITLES, Leaderboard, ModelTable
from spd_bench.store import atomic_write_bytes

COMPARISONS_CSV = "leaderboard_vs_raw_sd.csv"  # beside leaderboard.csv: every paired comparison


# Markdown -------------------------------------------------------------------------------------


def _md_cell(text: CellText | None) -> str:
    if text is None:
        return MISSING
    value = f"**{text.value}**" if text.best else text.value
    return " ".join(p for p in (value, text.spread, text.interval, text.delta) if p) + (" †" if text.short else "")


def _md_table(table: ModelTable) -> list[str]:
    headers = ["Method"] + [f"{c.task} ({c.domain})<br>{c.metric_label}" for c in table.columns]
    headers += [summary_header(d) for d in table.summary_domains]
    lines = [f"### {table.model}", "", "| " + " | ".join(headers) + " |", "|---" + "|---:" * (len(headers) - 1) + "|"]
    for group, rows in table.groups():
        lines.append(f"| *{group}* |" + " |" * (len(headers) - 1))
        for row in rows:
            cells = [_md_cell(cell_text(table, row, c)) for c in table.columns]
            cells += [_md_cell(summary_text(table, row, d)) for d in table.summary_domains]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- {note}" for note in table.notes)
    return lines


def _md_comparison_cell(text: ComparisonText | None) -> str:
    if text is None:
        return MISSING
    value = f"**{text.value}**" if text.significant else text.value
    return f"{value} {text.summary}"


def _md_comparison(compared: ComparisonTable) -> list[str]:
    headers = ["Method"] + [f"{c.task} ({c.domain})<br>{column_label(compared, c)}" for c in compared.columns]
    lines = [f"### {title(compared)}", "", "| " + " | ".join(headers) + " |"]
    lines.append("|---" + "|---:" * (len(headers) - 1) + "|")
    for row in compared.rows:
        cells = [_md_comparison_cell(comparison_text(compared, row, c)) for c in compared.columns]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return lines + ["", f"_{reading(compared)}_"]


def _md_diagnostics(board: Leaderboard) -> str:
    """The diagnostics section (docs/diagnostics.md): nothing when no record has diagnostics."""
    if not board.diagnostics:
        return ""
    lines = ["", f"## {DIAGNOSTICS_TITLE}"]
    for table in board.diagnostics:
        lines += ["", f"### {table.title}", "", "| " + " | ".join(table.headers) + " |"]
        lines.append("|---" + "|---:" * (len(table.headers) - 1) + "|")
        lines += [f"| {row.label} | " + " | ".join(row.cells) + " |" for row in table.rows]
        lines += ["", f"_{READING}_"]
    return "\n".join(lines) + "\n"


def render_markdown(board: Leaderboard) -> str:
    lines = ["## Leaderboard", ""]
    for table in board.tables:
        lines.extend(_md_table(table))
        lines.append("")
    lines.extend(f"_{line}_  " for line in board.legend)
    text = "\n".join(lines).rstrip() + "\n"
    if not board.comparisons:
        return text + _md_diagnostics(board)
    section = [f"## {SECTION_TITLE}"] + [line for c in board.comparisons for line in ["", *_md_comparison(c)]]
    return text + "\n" + "\n".join(section) + "\n" + _md_diagnostics(board)


# CSV ------------------------------------------------------------------------------------------


def render_csv(board: Leaderboard) -> str:
    """Tidy: one row per (model, method, task, domain, metric), in display units."""
    import pandas as pd

    records = []
    for table in board.tables:
        shown = {(c.task, c.domain, c.metric) for c in table.columns}
        for cell in table.cells.values():
            s, scale = cell.stats, (100.0 if cell.higher_is_better else 1.0)
            records.append(
                {
                    "model": cell.model,
                    "method": cell.method,
                    "group": "external signal" if cell.external_signal else "no external signal",
                    "external_signal": cell.external_signal,
                    "task": cell.task,
                    "domain": cell.domain,
                    "metric": cell.metric,
                    "shown": (cell.task, cell.domain, cell.metric) in shown,
                    "higher_is_better": cell.higher_is_better,
                    "unit": "points" if cell.higher_is_better else "metric",
                    "mean": rounded(s.mean, scale),
                    "sd": rounded(s.sd, scale),
                    "n_seeds": s.n_seeds,
                    "seeds": ";".join(str(x) for x in cell.seeds),
                    "ci_low": rounded(s.interval.low, scale) if s.interval else None,
                    "ci_high": rounded(s.interval.high, scale) if s.interval else None,
                    "ci_method": s.interval.method if s.interval else None,
                    "delta": rounded(s.delta, scale),
                    "delta_rel": rounded(s.delta_rel),
                    "delta_ci_low": rounded(s.delta_interval.low, scale) if s.delta_interval else None,
                    "delta_ci_high": rounded(s.delta_interval.high, scale) if s.delta_interval else None,
                    "best": s.best,
                    "data_layer": ";".join(cell.data_layers),
                }
            )
    frame = pd.DataFrame.from_records(records)
    frame = frame.sort_values(["model", "task", "domain", "metric", "method"], kind="stable")
    return frame.to_csv(index=False, lineterminator="\n")


_COMPARISON_FIELDS = [
    "model", "versus", "method", "task", "domain", "metric", "higher_is_better", "unit", "seeds", "n_items",
    "difference", "ci_low", "ci_high", "se", "df", "procedure", "p_value", "p_holm", "holm_family_size", "verdict",
    "equivalence_margin",
]


def render_comparisons_csv(board: Leaderboard) -> str:
    """Tidy: one row per (model, reference, method, column), in display units; p-values as fractions."""
    import pandas as pd

    records = []
    for compared in board.comparisons:
        for row in compared.rows:
            for column in compared.columns:
                cell = compared.cell(row, column)
                if cell is None:
                    continue
                scale = column.scale
                records.append(
                    {
                        "model": compared.model,
                        "versus": compared.reference,
                        "method": row.method,
                        "task": column.task,
                        "domain": column.domain,
                        "metric": column.metric,
                        "higher_is_better": column.higher_is_better,
                        "unit": "points" if column.higher_is_better else "metric",
                        "seeds": ";".join(str(x) for x in cell.seeds),
                        "n_items": None if cell.estimate.procedure == SEEDS_ONLY else cell.n_items,
                        "difference": rounded(cell.difference, scale),
                        "ci_low": rounded(cell.interval.low, scale),
                        "ci_high": rounded(cell.interval.high, scale),
                        "se": rounded(cell.estimate.se, scale),
                        "df": rounded(cell.estimate.df),
                        "procedure": cell.estimate.procedure,
                        "p_value": rounded(cell.p_value),
                        "p_holm": rounded(cell.p_holm),
                        "holm_family_size": len(compared.cells),
                        "verdict": cell.verdict,
                        "equivalence_margin": rounded(cell.margin, scale),
                    }
                )
    return pd.DataFrame.from_records(records, columns=_COMPARISON_FIELDS).to_csv(index=False, lineterminator="\n")


# LaTeX ----------------------------------------------------------------------------------------

_TEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "↓": r"$\downarrow$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "§": r"\S{}",
    "—": "---",
}


def tex_escape(text: str) -> str:
    """Escape text for LaTeX; `code spans` become \\texttt."""
    parts = re.split(r"`([^`]*)`", text)
    out = []
    for i, part in enumerate(parts):
        escaped = "".join(_TEX_CHARS.get(ch, ch) for ch in part)
        out.append(rf"\texttt{{{escaped}}}" if i % 2 else escaped)
    return "".join(out)


def _tex_cell(text: CellText | None) -> str:
    if text is None:
        return "---"
    value = rf"\textbf{{{text.value}}}" if text.best else text.value
    spread = text.spread.replace("±", r"$\pm$")
    extra = " ".join(p for p in (spread, text.interval, text.delta) if p)
    dagger = r"$^\dagger$" if text.short else ""
    if not extra:
        return value + dagger
    # A nested one-column tabular puts interval and change under the value, halving the width.
    return rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}{value}{dagger}\\{{\tiny {extra}}}\end{{tabular}}"


def _tex_open(caption: str, n_cols: int) -> list[str]:
    """The opening lines every LaTeX table here shares: float, caption, a label column then numbers."""
    return [
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        rf"\caption{{{caption}}}",
        r"\begin{tabular}{l" + "r" * (n_cols - 1) + "}",
        r"\toprule",
    ]


def _tex_table(table: ModelTable) -> list[str]:
    n_cols = 1 + len(table.columns) + len(table.summary_domains)
    spans: list[tuple[str, int]] = [(DOMAIN_TITLES[d].capitalize(), len(table.columns_in(d))) for d in ("in", "out")]
    spans.append(("Mean", len(table.summary_domains)))
    group_cells, rules, start = [], [], 2
    for span_title, width in spans:
        if width:
            group_cells.append(rf"\multicolumn{{{width}}}{{c}}{{{span_title}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
    tasks = [tex_escape(c.task) for c in table.columns] + [DOMAIN_TITLES[d] for d in table.summary_domains]
    metrics = [tex_escape(c.metric_label) for c in table.columns] + [""] * len(table.summary_domains)
    lines = [
        *_tex_open(f"Leaderboard: {tex_escape(table.model)}", n_cols),
        " & " + " & ".join(group_cells) + r" \\",
        "".join(rules),
        "Method & " + " & ".join(tasks) + r" \\",
        " & " + " & ".join(metrics) + r" \\",
    ]
    for group, rows in table.groups():
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{n_cols}}}{{l}}{{\emph{{{group.capitalize()}}}}} \\")
        for row in rows:
            cells = [_tex_cell(cell_text(table, row, c)) for c in table.columns]
            cells += [_tex_cell(summary_text(table, row, d)) for d in table.summary_domains]
            lines.append(tex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip"]
    lines += [tex_escape(note) + r"\par" for note in table.notes]
    lines.append(r"\end{table}")
    return lines


def _tex_comparison_cell(text: ComparisonText | None) -> str:
    if text is None:
        return "---"
    value = rf"\textbf{{{text.value}}}" if text.significant else text.value
    extra = tex_text(text.summary)
    return rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}{value}\\{{\tiny {extra}}}\end{{tabular}}"


def _tex_comparison(compared: ComparisonTable) -> list[str]:
    n_cols = 1 + len(compared.columns)
    tasks = [f"{tex_escape(c.task)} ({c.domain})" for c in compared.columns]
    labels = [tex_escape(column_label(compared, c)) for c in compared.columns]
    lines = [
        *_tex_open(f"{SECTION_TITLE}: {tex_escape(title(compared))}", n_cols),
        "Method & " + " & ".join(tasks) + r" \\",
        " & " + " & ".join(labels) + r" \\",
        r"\midrule",
    ]
    for row in compared.rows:
        cells = [_tex_comparison_cell(comparison_text(compared, row, c)) for c in compared.columns]
        lines.append(tex_escape(row.label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", tex_escape(reading(compared)) + r"\par"]
    lines.append(r"\end{table}")
    return lines


def tex_text(text: str) -> str:
    """Table text for LaTeX: escaped, and the symbols text mode lacks set in math mode."""
    return tex_escape(text).replace("±", r"$\pm$").replace("‖", r"$\|$").replace("Δ", r"$\Delta$")


def _tex_diagnostics(table: DiagnosticsTable) -> list[str]:
    lines = [
        *_tex_open(f"{DIAGNOSTICS_TITLE}: {tex_escape(table.title)}", len(table.headers)),
        " & ".join(tex_text(h) for h in table.headers) + r" \\",
        r"\midrule",
    ]
    lines += [tex_text(row.label) + " & " + " & ".join(tex_text(c) for c in row.cells) + r" \\" for row in table.rows]
    return lines + [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", tex_text(READING) + r"\par", r"\end{table}"]


def render_latex(board: Leaderboard) -> str:
    """Tables for ``\\input`` in a paper; they need ``\\usepackage{booktabs}``."""
    lines = ["% Leaderboard tables built by spd-bench from stored result records; needs \\usepackage{booktabs}."]
    for table in board.tables:
        lines.extend(_tex_table(table))
        lines.append("")
    lines.append(r"{\scriptsize")
    lines += [tex_escape(line) + r"\par" for line in board.legend]
    lines.append("}")
    for compared in board.comparisons:
        lines += ["", *_tex_comparison(compared)]
    for diagnosed in board.diagnostics:
        lines += ["", *_tex_diagnostics(diagnosed)]
    return "\n".join(lines) + "\n"


# Writing --------------------------------------------------------------------------------------


def _html(board: Leaderboard) -> bytes:
    from spd_bench.leaderboard.webpage import render_html

    return render_html(board).encode()


def _png(board: Leaderboard) -> bytes:
    from spd_bench.leaderboard.chart import render_png

    return render_png(board)


RENDERERS: dict[str, Callable[[Leaderboard], bytes]] = {
    "md": lambda board: render_markdown(board).encode(),
    "csv": lambda board: render_csv(board).encode(),
    "tex": lambda board: render_latex(board).encode(),
    "html": _html,
    "png": _png,
}
FORMATS = tuple(RENDERERS)
COMPANIONS: dict[str, list[tuple[str, Callable[[Leaderboard], bytes | None]]]] = {
    "md": [(FINDINGS_FILE, lambda board: render_findings(board.comparisons).encode())],
    "csv": [(COMPARISONS_CSV, lambda board: render_comparisons_csv(board).encode()),
            (DIAGNOSTICS_CSV,  # only when some record has diagnostics
             lambda board: render_diagnostics_csv(board.diagnostics).encode() if board.diagnostics else None)],
}  # format -> (file name, renderer) of the files written beside leaderboard.<format>; None: nothing to write


def check_formats(formats: list[str]) -> None:
    for name in formats:
        if name not in RENDERERS:
            raise UserError(f"unknown leaderboard format {name!r}: choose from {', '.join(FORMATS)} (comma-separated)")


def write_outputs(board: Leaderboard, out_dir: Path, formats: list[str]) -> dict[str, Path]:
    """Write ``leaderboard.<format>`` for each format, and its companion file if it has one.

    Returns format -> path, and companion file name -> path.
    """
    check_formats(formats)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in formats:
        path = out_dir / f"leaderboard.{name}"
        atomic_write_bytes(path, RENDERERS[name](board))
        written[name] = path
        for file_name, render in COMPANIONS.get(name, []):
            content = render(board)
            if content is not None:
                atomic_write_bytes(out_dir / file_name, content)
                written[file_name] = out_dir / file_name
    return written
