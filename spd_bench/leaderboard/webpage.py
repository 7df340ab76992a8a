"""A self-contained HTML page of the leaderboard: inline CSS and JS, no network, sortable columns.

Clicking a column header sorts the rows of each method group by that column, best first
(lower-is-better columns ascending); a second click reverses. Rows stay inside their group so
methods with an external signal are never ranked among those without. The paired comparisons
between methods follow the leaderboard, each table with the line that says how to read it.
"""

from __future__ import annotations

import html
import re

from spd_bench.leaderboard.compare import (
    SECTION_TITLE,
    ComparisonTable,
    ComparisonText,
    column_label,
    comparison_text,
    reading,
    title,
)
from spd_bench.leaderboard.diagnostics import READING, DiagnosticsTable
from spd_bench.leaderboard.diagnostics import SECTION_TITLE as DIAGNOSTICS_TITLE
from spd_bench.leaderboard.display import MISSING, CellText, cell_text, summary_header, summary_text
from spd_bench.leaderboard.table import DOMAIN_TITLES, Leaderboard, ModelTable

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1b1b; }
table.lb { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
table.lb th, table.lb td {
  padding: 0.3rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap;
}
table.lb th.method, table.lb td.method { text-align: left; }
table.lb thead th { background: #f4f4f4; }
table.lb th.sortable { cursor: pointer; }
table.lb th.sortable:hover { background: #e4e4e4; }
table.lb th[aria-sort="descending"]::after { content: " \\25BE"; }
table.lb th[aria-sort="ascending"]::after { content: " \\25B4"; }
table.lb tr.group th { text-align: left; font-style: italic; background: #fafafa; }
td .sd, td .ci, td .delta { color: #666; font-size: 0.8em; }
td.best .value { font-weight: bold; }
ul.notes, ul.legend { font-size: 0.85rem; color: #444; }
"""

_JS = """
function sortColumn(th) {
  const table = th.closest('table');
  const col = Number(th.dataset.col);
  const bestFirst = th.dataset.better === 'higher' ? 'descending' : 'ascending';
  const order = th.getAttribute('aria-sort') === bestFirst
    ? (bestFirst === 'descending' ? 'ascending' : 'descending') : bestFirst;
  table.querySelectorAll('th.sortable').forEach(h => h.removeAttribute('aria-sort'));
  th.setAttribute('aria-sort', order);
  const sign = order === 'descending' ? -1 : 1;
  table.querySelectorAll('tbody').forEach(body => {
    const rows = Array.from(body.querySelectorAll('tr.method-row'));
    const value = r => r.cells[col].dataset.value;
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === '' || y === '') return (x === '') - (y === '');
      return sign * (Number(x) - Number(y));
    });
    rows.forEach(r => body.appendChild(r));
  });
}
document.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => sortColumn(th)));
"""


def _code_spans(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def _td(text: CellText | None) -> str:
    if text is None:
        return f'<td data-value="">{MISSING}</td>'
    parts = [f'<span class="value">{html.escape(text.value)}</span>']
    parts += [f'<span class="sd">{html.escape(text.spread)}</span>'] if text.spread else []
    parts += [f'<span class="ci">{html.escape(text.interval)}</span>'] if text.interval else []
    parts += [f'<span class="delta">{html.escape(text.delta)}</span>'] if text.delta else []
    parts += ["†"] if text.short else []
    css = ' class="best"' if text.best else ""
    title = f' title="{html.escape(text.details)}"' if text.details else ""
    return f'<td{css}{title} data-value="{round(text.sort_value, 6)!r}">{" ".join(parts)}</td>'


def _th(col: int, better: str, label: str) -> str:
    return f'<th class="sortable" data-col="{col}" data-better="{better}" title="click to sort">{label}</th>'


def _table(table: ModelTable) -> list[str]:
    n_cols = 1 + len(table.columns) + len(table.summary_domains)
    spans = [(DOMAIN_TITLES[d], len(table.columns_in(d))) for d in ("in", "out")] + [
        ("summary", len(table.summary_domains))
    ]
    heads = [
        _th(
            i + 1,
            "higher" if c.higher_is_better else "lower",
            f"{html.escape(c.task)}<br>{html.escape(c.metric_label)}",
        )
        for i, c in enumerate(table.columns)
    ]
    heads += [
        _th(len(table.columns) + i + 1, "higher", html.escape(summary_header(d)))
        for i, d in enumerate(table.summary_domains)
    ]
    lines = [
        f"<section><h2>{html.escape(table.model)}</h2>",
        f'<table class="lb" data-model="{html.escape(table.model)}"><thead>',
        '<tr><th class="method" rowspan="2">Method</th>'
        + "".join(f'<th colspan="{w}">{t}</th>' for t, w in spans if w)
        + "</tr>",
        "<tr>" + "".join(heads) + "</tr>",
        "</thead>",
    ]
    for group, rows in table.groups():
        lines.append(f'<tbody data-group="{group}"><tr class="group"><th colspan="{n_cols}">{group}</th></tr>')
        for row in rows:
            cells = [_td(cell_text(table, row, c)) for c in table.columns]
            cells += [_td(summary_text(table, row, d)) for d in table.summary_domains]
            method = f'<td class="method">{html.escape(row.label)}</td>'
            lines.append(
                f'<tr class="method-row" data-method="{html.escape(row.method)}">{method}{"".join(cells)}</tr>'
            )
        lines.append("</tbody>")
    lines.append("</table>")
    lines.append('<ul class="notes">' + "".join(f"<li>{_code_spans(n)}</li>" for n in table.notes) + "</ul></section>")
    return lines


def _comparison_td(text: ComparisonText | None) -> str:
    """The difference, then interval, tests and verdict in the leaderboard's grey interval style."""
    if text is None:
        return f"<td>{MISSING}</td>"
    value = f"<strong>{html.escape(text.value)}</strong>" if text.significant else html.escape(text.value)
    parts = [f'<span class="value">{value}</span>']
    parts += [f'<span class="ci">{html.escape(part)}</span>'
              for part in (text.interval, text.tests, text.verdict, text.mark) if part]
    return f'<td title="{html.escape(text.details)}">{" ".join(parts)}</td>'


def _comparison(compared: ComparisonTable) -> list[str]:
    heads = "".join(
        f"<th>{html.escape(c.task)} ({c.domain})<br>{html.escape(column_label(compared, c))}</th>"
        for c in compared.columns
    )
    lines = [
        f"<section><h3>{html.escape(title(compared))}</h3>",
        f'<table class="lb comparison" data-versus="{html.escape(compared.reference)}"'
        f' data-compared-model="{html.escape(compared.model)}"><thead>',
        f'<tr><th class="method">Method</th>{heads}</tr>',
        "</thead><tbody>",
    ]
    for row in compared.rows:
        cells = "".join(_comparison_td(comparison_text(compared, row, c)) for c in compared.columns)
        lines.append(
            f'<tr data-method="{html.escape(row.method)}"><td class="method">{html.escape(row.label)}</td>{cells}</tr>'
        )
    lines += ["</tbody></table>", f'<ul class="notes"><li>{html.escape(reading(compared))}</li></ul></section>']
    return lines


def _diagnostics(table: DiagnosticsTable) -> list[str]:
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers[1:])
    lines = [
        f"<section><h3>{html.escape(table.title)}</h3>",
        f'<table class="lb diagnostics" data-model="{html.escape(table.model)}"'
        f' data-source="{html.escape(table.source)}"><thead>',
        f'<tr><th class="method">Method</th>{heads}</tr>',
        "</thead><tbody>",
    ]
    for row in table.rows:
        cells = "".join(f"<td>{html.escape(cell)}</td>" for cell in row.cells)
        lines.append(f'<tr data-method="{html.escape(row.method)}"><td class="method">{html.escape(row.label)}</td>{cells}</tr>')
    return lines + ["</tbody></table>", f'<ul class="notes"><li>{html.escape(READING)}</li></ul></section>']


def render_html(board: Leaderboard) -> str:
    body = [line for table in board.tables for line in _table(table)]
    legend = '<ul class="legend">' + "".join(f"<li>{html.escape(line)}</li>" for line in board.legend) + "</ul>"
    comparisons = [line for compared in board.comparisons for line in _comparison(compared)]
    if comparisons:
        comparisons.insert(0, f"<h2>{SECTION_TITLE}</h2>")
    diagnosed = [line for table in board.diagnostics for line in _diagnostics(table)]
    if diagnosed:
        diagnosed.insert(0, f"<h2>{DIAGNOSTICS_TITLE}</h2>")
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8"><title>spd-bench leaderboard</title>',
                f"<style>{_CSS}</style></head><body>",
                "<h1>spd-bench leaderboard</h1>",
                *body,
                legend,
                *comparisons,
                *diagnosed,
                f"<script>{_JS}</script>",
                "</body></html>",
            ]
        )
        + "\n"
    )
