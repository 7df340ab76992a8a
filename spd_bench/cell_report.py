"""``spd-bench report CELL``: one cell's numbers from its records alone (no model work).

For the cell (method, training source, seed) and each task it was scored on: the metric against
the base model and against raw_sd at the same seed, the training budget and the loss curve's ends,
and every diagnostic the records carry (docs/diagnostics.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError
from spd_bench.leaderboard.collect import StoredRecord, load_stored
from spd_bench.leaderboard.display import flatten
from spd_bench.results import ResultRecord, cell_name

REFERENCE = "raw_sd"
BASE = "base"
_LABEL = re.compile(r"^(?P<method>[^/]+)/(?P<source>[^/]+)/seed(?P<seed>-?\d+)$")


@dataclass(frozen=True)
class CellQuery:
    """The cell asked for; a part left as None matches any value (a unique match is required)."""

    method: str | None = None
    source: str | None = None
    seed: int | None = None
    model: str | None = None

    def describe(self) -> str:
        parts = [self.method or "?", self.source or "*", "*" if self.seed is None else f"seed{self.seed}"]
        name = self.method if self.method == BASE else "/".join(parts)
        return f"{name} on {self.model}" if self.model else str(name)


def parse_cell(text: str | None, method: str | None = None, source: str | None = None, seed: int | None = None,
               model: str | None = None) -> CellQuery:
    """``METHOD/SOURCE/seedN`` (as runs print cells) or ``base``, else the parts given as options."""
    if text is None:
        if method is None:
            raise UserError("name a cell: spd-bench report METHOD/SOURCE/seedN, or --method M [--source S] [--seed N]")
        return CellQuery(method, source, seed, model)
    if method is not None or source is not None or seed is not None:
        raise UserError(f"give the cell either as {text!r} or with --method/--source/--seed, not both")
    if text == BASE:
        return CellQuery(BASE, None, None, model)
    match = _LABEL.match(text)
    if match is None:
        raise UserError(f"cell {text!r} is not METHOD/SOURCE/seedN (e.g. spd/gsm8k_train/seed1) or base")
    return CellQuery(match["method"], match["source"], int(match["seed"]), model)


def _matches(record: ResultRecord, query: CellQuery) -> bool:
    return (record.method == query.method and (query.source is None or record.training_source == query.source)
            and (query.seed is None or record.seed == query.seed) and (query.model is None or record.model == query.model))


def find_cell(stored: list[StoredRecord], query: CellQuery) -> list[ResultRecord]:
    """The cell's records, one per task; a missing or ambiguous cell names the cells there are."""
    found = [s.record for s in stored if _matches(s.record, query)]
    cells = sorted({(s.record.model, cell_name(s.record)) for s in stored})
    chosen = sorted({(r.model, cell_name(r)) for r in found})
    if len(chosen) != 1:
        problem = (f"no cell {query.describe()}" if not chosen
                   else f"{len(chosen)} cells match {query.describe()} (name the source, seed or --model)")
        listed = chosen or cells
        several_models = len({model for model, _ in cells}) > 1
        names = [f"{name} ({model})" if several_models else name for model, name in listed]
        raise UserError(f"{problem}; cells: {', '.join(names)}")
    return sorted(found, key=lambda r: (r.domain, r.task))


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _reference(stored: list[StoredRecord], record: ResultRecord, method: str) -> ResultRecord | None:
    seed = None if method == BASE else record.seed
    source = None if method == BASE else record.training_source
    return next((s.record for s in stored if s.record.method == method and s.record.model == record.model
                 and s.record.task == record.task and s.record.seed == seed and s.record.training_source == source), None)


def _versus(record: ResultRecord, other: ResultRecord | None) -> str:
    metric = record.primary_metric
    if other is None or metric not in other.metrics:
        return "—"
    difference = record.metrics[metric] - other.metrics[metric]
    return f"{_number(other.metrics[metric])} ({difference:+.4g})"


def render_report(stored: list[StoredRecord], query: CellQuery) -> str:
    """The report of one cell as plain text."""
    records = find_cell(stored, query)
    first = records[0]
    lines = [f"cell {cell_name(first)} on {first.model} (external signal: {first.external_signal or 'none'})", "",
             "metrics (primary metric per task; vs: the other's value and this cell's difference)"]
    for record in records:
        vs_base = _versus(record, _reference(stored, record, BASE))
        line = (f"  {record.task} ({record.domain}) {record.primary_metric}: {_number(record.metrics[record.primary_metric])}"
                f" | base {vs_base}")
        if record.seed is not None and record.method != REFERENCE:
            line += f" | {REFERENCE} seed {record.seed} {_versus(record, _reference(stored, record, REFERENCE))}"
        lines.append(line)
    info = first.method_info
    training = info.get("training") or {}
    lines += ["", "budget: " + (", ".join(f"{k} {_number(v)}" for k, v in (info.get("budget") or {}).items()) or "none (untrained)")]
    if training:
        steps = len(training.get("train_curve") or [])
        lines.append(f"training: loss first {_number(training.get('loss_first'))}, last {_number(training.get('loss_last'))}"
                     f" ({steps} logged steps)")
    lines += ["", "diagnostics (docs/diagnostics.md)"]
    if not first.diagnostics:
        lines.append("  none recorded (an untrained cell, or a record written before diagnostics existed)")
    for part in ("corpus", "subspace"):
        if part in first.diagnostics:
            value = first.diagnostics[part]
            lines.append(f"  {part}:" + ("" if value else " none (no projectors)"))
            lines += [f"    {key}: {_number(item)}" for key, item in flatten(value or {}) if key]
    return "\n".join(lines) + "\n"


def cell_report(results: Path, query: CellQuery) -> str:
    """Read the records under ``results`` and report the cell ``query`` names."""
    return render_report(load_stored(Path(results)), query)
