"""The training-corpus and subspace diagnostics table: one per (model, training source), one row
per trained method, each number the mean over seeds with its spread.

Built from the ``diagnostics`` of the records (docs/diagnostics.md); a record carries its cell's
diagnostics once per task, so each (method, seed) counts once. With no diagnostics in any record
(older records) there is no table, and the leaderboard's files are what they were before.
Every format renders the same ``DiagnosticsTable`` text, so they all show the same numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from spd_bench.leaderboard.collect import StoredRecord
from spd_bench.leaderboard.display import MISSING, number

SECTION_TITLE = "Training-corpus and subspace diagnostics"
DIAGNOSTICS_CSV = "leaderboard_diagnostics.csv"  # beside leaderboard.csv: the numbers of these tables
NOT_COMPUTED = "n/c"  # the diagnostic says why in the record (e.g. code needs execution)
READING = (
    "How to read: mean over seeds ± sd, from each method's generated training corpus (before curation) and,"
    " for projected methods, its projection on the first training prompts; correct % is judged against labels"
    " for reporting only; same as raw_sd = completions identical to raw_sd's at the same seed (100 % means"
    " the projection changed nothing it sampled); kept energy near 100 % and KL near 0 mean the projection"
    " barely touched the model; n/c = not computed (see the record); docs/diagnostics.md."
)


@dataclass(frozen=True)
class Measure:
    """One column: where the number lives in ``record.diagnostics``, and how it is shown."""

    header: str
    path: tuple[str, ...]
    scale: float  # 100 for shares shown in percent
    decimals: int
    scientific: bool = False


MEASURES = (
    Measure("correct %", ("corpus", "correct_share"), 100.0, 1),
    Measure("empty %", ("corpus", "empty_share"), 100.0, 1),
    Measure("truncated %", ("corpus", "truncated_share"), 100.0, 1),
    Measure("mean tokens", ("corpus", "mean_tokens"), 1.0, 1),
    Measure("distinct-1", ("corpus", "distinct_1"), 1.0, 3),
    Measure("distinct-2", ("corpus", "distinct_2"), 1.0, 3),
    Measure("same as raw_sd %", ("corpus", "identical_to_raw_sd"), 100.0, 1),
    Measure("gradient energy %", ("subspace", "gradient_energy"), 100.0, 1),
    Measure("kept K energy %", ("subspace", "kept_energy", "k"), 100.0, 1),
    Measure("kept V energy %", ("subspace", "kept_energy", "v"), 100.0, 1),
    Measure("KL(unproj ‖ proj)", ("subspace", "kl_unprojected_to_projected"), 1.0, 2, scientific=True),
)


@dataclass(frozen=True)
class DiagnosticsRow:
    method: str
    label: str  # method, with its external signal when it has one (as the leaderboard's rows)
    seeds: tuple[int, ...]
    values: tuple[Any, ...]  # per measure: a list of per-seed values (numbers or "not computed" texts)
    cells: tuple[str, ...]  # per measure: the shown text


@dataclass(frozen=True)
class DiagnosticsTable:
    model: str
    source: str
    rows: tuple[DiagnosticsRow, ...]

    @property
    def title(self) -> str:
        return f"{self.model}, trained on {self.source}"

    @property
    def headers(self) -> list[str]:
        return ["Method", *(m.header for m in MEASURES)]


def lookup(diagnostics: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a record's diagnostics, None where any part is missing."""
    value: Any = diagnostics
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def shown(measure: Measure, value: float) -> str:
    """One number as the tables show it."""
    if measure.scientific:
        return f"{value * measure.scale:.{measure.decimals}e}"
    return number(value, measure.scale, measure.decimals)


def _cell(measure: Measure, values: list[Any]) -> str:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return NOT_COMPUTED if any(isinstance(v, str) for v in values) else MISSING
    text = shown(measure, statistics.fmean(numbers))
    if len(numbers) > 1:
        text += f" ±{shown(measure, statistics.stdev(numbers))}"
    return text


def diagnostics_tables(stored: list[StoredRecord]) -> list[DiagnosticsTable]:
    """One table per (model, training source) that has diagnostics, rows in the records' method order."""
    cells: dict[tuple[str, str], dict[str, dict[int, StoredRecord]]] = defaultdict(lambda: defaultdict(dict))
    for entry in stored:
        record = entry.record
        if record.diagnostics and record.training_source is not None and record.seed is not None:
            cells[(record.model, record.training_source)][record.method].setdefault(record.seed, entry)
    tables = []
    for (model, source), by_method in cells.items():
        rows = []
        for method, by_seed in by_method.items():
            seeds = tuple(sorted(by_seed))
            values = tuple([lookup(by_seed[s].record.diagnostics, m.path) for s in seeds] for m in MEASURES)
            signal = by_seed[seeds[0]].record.external_signal
            rows.append(DiagnosticsRow(method=method, label=f"{method} ({signal})" if signal else method, seeds=seeds,
                                       values=values, cells=tuple(_cell(m, v) for m, v in zip(MEASURES, values))))
        tables.append(DiagnosticsTable(model=model, source=source, rows=tuple(rows)))
    return tables


def render_csv(tables: list[DiagnosticsTable]) -> str:
    """Tidy: one row per (model, source, method, measure), in the units shown (percent for shares)."""
    import pandas as pd

    rows = []
    for table in tables:
        for row in table.rows:
            for measure, values in zip(MEASURES, row.values):
                numbers = [float(v) * measure.scale for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
                rows.append({
                    "model": table.model, "training_source": table.source, "method": row.method, "measure": measure.header,
                    "mean": statistics.fmean(numbers) if numbers else None,
                    "sd": statistics.stdev(numbers) if len(numbers) > 1 else None,
                    "n_seeds": len(numbers), "seeds": ";".join(str(s) for s in row.seeds),
                    "note": next((v for v in values if isinstance(v, str)), None),
                })
    return pd.DataFrame.from_records(rows).to_csv(index=False, lineterminator="\n")
