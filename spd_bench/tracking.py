"""Experiment trackers (``run --tracker trackio|wandb|mlflow``): every cell of a run as one tracker run.

A cell (model, method, training source, seed) is logged from its result records once they are
written, so what a tracker shows is exactly what the records hold: the run's config and the
method's options, each stage's time and whether it came from the cache, the fine-tune's curve
(one point per logged optimizer step) and the final metrics of every task. Logging from the
records also covers cells computed on Ray workers and cells served from the cache. Live curves
during a fine-tune are the trainer's own integration (``train.report_to``, docs/training.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from spd_bench.config import installed
from spd_bench.errors import UserError
from spd_bench.results import ResultRecord, cell_name

TRACKER_PACKAGES = {"trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}  # --tracker name -> pip package
DEFAULT_PROJECT = "spd-bench"


def check_trackers(names: Iterable[str]) -> list[str]:
    """The trackers named, each known and importable; checked before any work so a missing one writes nothing."""
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in TRACKER_PACKAGES:
            raise UserError(f"--tracker {name!r} is not one of {', '.join(TRACKER_PACKAGES)}")
        if not installed(name):
            raise UserError(f"--tracker {name}: {name} is not installed; pip install {TRACKER_PACKAGES[name]}"
                            f" (or pip install 'spd-bench[{name}]'), or leave --tracker {name} out")
    return chosen


@dataclass
class CellLog:
    """What a tracker receives for one cell: built from its records only."""

    name: str  # e.g. organism/spd/synth_math_train/seed1
    config: dict[str, Any]
    curve: list[dict[str, float]] = field(default_factory=list)  # per logged step: step, train/loss, ...
    summary: dict[str, float] = field(default_factory=dict)  # metrics/<task>/<metric>, seconds/<stage>, ...


def _curve(training: dict[str, Any]) -> list[dict[str, float]]:
    """The trainer's logged points as tracker rows: numeric fields under train/, keyed by step."""
    rows = []
    for point in training.get("train_curve", []):
        if "step" not in point:
            continue
        row = {f"train/{k}": float(v) for k, v in point.items()
               if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if row:
            rows.append({"step": int(point["step"]), **row})
    return rows


def cell_logs(records: Iterable[ResultRecord]) -> list[CellLog]:
    """One CellLog per cell, in the order the cells' first records come."""
    cells: dict[str, CellLog] = {}
    for record in records:
        name = f"{record.model}/{cell_name(record)}"
        log = cells.get(name)
        if log is None:
            log = cells[name] = CellLog(
                name=name,
                config={"model": record.model, "method": record.method, "training_source": record.training_source,
                        "seed": record.seed, "method_options": record.method_info.get("options", {}),
                        "external_signal": record.external_signal, "config_hash": record.config_hash,
                        "run_config": record.config},
                curve=_curve(record.method_info.get("training", {})),
            )
            for key, value in record.method_info.get("budget", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    log.summary[f"budget/{key}"] = float(value)
        for metric, value in record.metrics.items():
            log.summary[f"metrics/{record.task}/{metric}"] = float(value)
        seconds = record.provenance.get("stage_seconds", {})
        cached = record.provenance.get("stage_cached", {})
        for stage, value in seconds.items():
            key = f"seconds/score/{record.task}" if stage == "score" else f"seconds/{stage}"
            log.summary[key] = float(value)
            log.summary[key.replace("seconds/", "cached/", 1)] = float(bool(cached.get(stage)))
    return list(cells.values())


def _log_trackio(cell: CellLog, project: str) -> None:
    import trackio

    trackio.init(project=project, name=cell.name, config=cell.config, embed=False)
    try:
        for row in cell.curve:
            trackio.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        trackio.log(cell.summary, step=cell.curve[-1]["step"] + 1 if cell.curve else 0)
    finally:
        trackio.finish()


def _log_wandb(cell: CellLog, project: str) -> None:
    import wandb

    run = wandb.init(project=project, name=cell.name, config=cell.config, reinit="create_new")
    try:
        for row in cell.curve:
            run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        run.summary.update(cell.summary)
    finally:
        run.finish()


def _mlflow_names(values: dict[str, float]) -> dict[str, float]:
    """MLflow metric names allow letters, digits, ``_ - . / `` and space: ``pass@1`` becomes ``pass_at_1``."""
    return {re.sub(r"[^\w\-./ ]", "_", key.replace("@", "_at_")): value for key, value in values.items()}


def _log_mlflow(cell: CellLog, project: str) -> None:
    import mlflow

    from spd_bench.leaderboard.display import flatten

    mlflow.set_experiment(project)
    with mlflow.start_run(run_name=cell.name):
        mlflow.log_params({name: str(value)[:6000] for name, value in flatten(cell.config)})  # MLflow's limit
        for row in cell.curve:
            mlflow.log_metrics(_mlflow_names({k: v for k, v in row.items() if k != "step"}), step=row["step"])
        mlflow.log_metrics(_mlflow_names(cell.summary))


LOGGERS: dict[str, Callable[[CellLog, str], None]] = {
    "trackio": _log_trackio, "wandb": _log_wandb, "mlflow": _log_mlflow,
}


def log_cells(records: Iterable[ResultRecord], trackers: list[str], project: str = DEFAULT_PROJECT) -> list[str]:
    """Log every cell of ``records`` to each tracker; returns the names of the cells logged."""
    cells = cell_logs(records)
    for tracker in trackers:
        for cell in cells:
            LOGGERS[tracker](cell, project)
    return [cell.name for cell in cells]
