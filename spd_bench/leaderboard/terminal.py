"""The leaderboard as rich tables for the terminal, with the same cells, notes and paired comparisons as the files."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from spd_bench.leaderboard.compare import (
    ComparisonTable,
    ComparisonText,
    comparison_text,
    items_label,
    reading,
    title,
)
from spd_bench.leaderboard.diagnostics import READING, SECTION_TITLE as DIAGNOSTICS_TITLE, DiagnosticsTable
from spd_bench.leaderboard.display import MISSING, CellText, cell_text, summary_header, summary_text
from spd_bench.leaderboard.table import Leaderboard, ModelTable


def _cell(text: CellText | None) -> Text:
    if text is None:
        return Text(MISSING, style="dim")
    out = Text(text.value, style="bold green" if text.best else "")
    if text.spread:
        out.append(f" {text.spread}", style="dim")
    if text.short:
        out.append(" †")
    if text.interval:
        out.append(f"\n{text.interval}", style="dim")
    if text.delta:
        out.append(f"\n{text.delta}", style="red" if text.delta.startswith("-") else "cyan")
    return out


def terminal_table(table: ModelTable) -> Table:
    grid = Table(title=f"Leaderboard: {table.model}", title_justify="left", show_lines=False)
    grid.add_column("method", no_wrap=True)
    for column in table.columns:
        grid.add_column(f"{column.task}\n{column.metric_label}\n({column.domain})", justify="right")
    for domain in table.summary_domains:
        grid.add_column(summary_header(domain).replace(" ", "\n", 1), justify="right")
    width = len(table.columns) + len(table.summary_domains)
    for group, rows in table.groups():
        grid.add_row(Text(group, style="italic dim"), *[""] * width)
        for i, row in enumerate(rows):
            cells = [_cell(cell_text(table, row, c)) for c in table.columns]
            cells += [_cell(summary_text(table, row, d)) for d in table.summary_domains]
            grid.add_row(row.label, *cells, end_section=i == len(rows) - 1)
    return grid


def _comparison_cell(text: ComparisonText | None) -> Text:
    if text is None:
        return Text(MISSING, style="dim")
    out = Text(text.value, style="bold" if text.significant else "")
    out.append("\n" + "\n".join(p for p in (text.interval, text.p, text.holm, text.verdict, text.mark) if p), style="dim")
    return out


def comparison_table(compared: ComparisonTable) -> Table:
    grid = Table(title=f"Paired comparison, {title(compared)}", title_justify="left", show_lines=True)
    grid.add_column("method", no_wrap=True)
    for column in compared.columns:
        header = [column.task, column.metric_label, items_label(compared, column), f"({column.domain})"]
        grid.add_column("\n".join(h for h in header if h), justify="right")
    for row in compared.rows:
        grid.add_row(row.label, *[_comparison_cell(comparison_text(compared, row, c)) for c in compared.columns])
    return grid


def diagnostics_table(table: DiagnosticsTable) -> Table:
    grid = Table(title=f"{DIAGNOSTICS_TITLE}, {table.title}", title_justify="left")
    grid.add_column("method", no_wrap=True)
    for header in table.headers[1:]:
        grid.add_column(header, justify="right")
    for row in table.rows:
        grid.add_row(row.label, *row.cells)
    return grid


def render_terminal(board: Leaderboard, console: Console | None = None) -> None:
    """Print every model's table with its notes, the legend, the paired comparisons, then the diagnostics."""
    console = console or Console()
    for table in board.tables:
        console.print(terminal_table(table))
        for note in table.notes:
            console.print(Text(f"  {note}", style="dim"))
        console.print()
    for line in board.legend:
        console.print(Text(line, style="dim"))
    for compared in board.comparisons:
        console.print()
        console.print(comparison_table(compared))
        console.print(Text(f"  {reading(compared)}", style="dim"))
    for diagnosed in board.diagnostics:
        console.print()
        console.print(diagnostics_table(diagnosed))
        console.print(Text(f"  {READING}", style="dim"))
