"""`run --tracker`: every cell reaches the experiment tracker with its config, timings, curve and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from helpers import ensure_arith_plugin
from spd_bench.cli import main
from spd_bench.errors import UserError
from spd_bench.results import load_record
from spd_bench.tracking import cell_logs, check_trackers

READ_TRACKIO = """
import json
from trackio.sqlite_storage import SQLiteStorage
out = {}
for project in SQLiteStorage.get_projects():
    for run in SQLiteStorage.get_runs(project):
        out[f"{project}|{run}"] = {"logs": SQLiteStorage.get_logs(project, run),
                                   "config": SQLiteStorage.get_run_config(project, run)}
print(json.dumps(out, default=str))
"""


def test_trackio_receives_every_cell_as_its_records_hold_it(model_cache: Path, tmp_path: Path):
    out, tracked = tmp_path / "results", tmp_path / "trackio"
    env = {**os.environ, "TRACKIO_DIR": str(tracked), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(spd_bench_cmd(
        "--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--model", "tiny-llama", "--methods", "base,raw_sd",
        "--tasks", "arith", "--seeds", "1", "--output", str(out), "--cache-dir", str(model_cache), "--no-leaderboard",
        "--tracker", "trackio", "--tracker-project", "arith-check"), capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 cells logged to trackio" in run.stdout
    read = subprocess.run([sys.executable, "-c", READ_TRACKIO], capture_output=True, text=True, env=env, timeout=120)
    assert read.returncode == 0, read.stderr[-3000:]
    logged = json.loads(read.stdout.strip().splitlines()[-1])
    assert set(logged) == {"arith-check|tiny-llama/base", "arith-check|tiny-llama/raw_sd/arith_train/seed1"}

    raw_sd = load_record(out / "records/tiny-llama/arith/raw_sd-seed1.json")
    entry = logged["arith-check|tiny-llama/raw_sd/arith_train/seed1"]
    curve = [point for point in raw_sd.method_info["training"]["train_curve"] if "loss" in point]
    losses = [row["train/loss"] for row in entry["logs"] if "train/loss" in row]
    assert curve and losses == pytest.approx([point["loss"] for point in curve])
    final = [row for row in entry["logs"] if "metrics/arith/" + raw_sd.primary_metric in row]
    assert len(final) == 1
    assert final[0]["metrics/arith/" + raw_sd.primary_metric] == pytest.approx(raw_sd.metrics[raw_sd.primary_metric])
    assert final[0]["seconds/train"] == pytest.approx(raw_sd.provenance["stage_seconds"]["train"])
    assert entry["config"]["method"] == "raw_sd" and entry["config"]["seed"] == 1
    assert entry["config"]["run_config"]["train"]["lr"] == raw_sd.config["train"]["lr"]


def test_cell_logs_group_tasks_of_a_cell(tmp_path: Path):
    """Two tasks of one cell are one tracker run; the score time is kept per task, the train time once."""
    fixture = Path(__file__).parent / "fixtures/records/main/records/organism"
    records = [load_record(fixture / task / "spd-seed1.json") for task in ("synth_math", "synth_ood")]
    (cell,) = cell_logs(records)
    assert cell.name == "organism/spd/" + records[0].training_source + "/seed1"
    for record in records:
        for metric, value in record.metrics.items():
            assert cell.summary[f"metrics/{record.task}/{metric}"] == value
    stages = records[0].provenance.get("stage_seconds", {})
    if "score" in stages:
        assert f"seconds/score/{records[0].task}" in cell.summary


def test_unknown_or_missing_tracker_stops_before_anything_is_written(tmp_path: Path, monkeypatch, capsys):
    with pytest.raises(UserError, match="not one of trackio, wandb, mlflow"):
        check_trackers(["tensorboardx"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    ensure_arith_plugin()
    out = tmp_path / "results"
    code = main(["run", "--model", "tiny-llama", "--methods", "base", "--tasks", "arith",
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--tracker", "wandb"])
    err = capsys.readouterr().err
    assert code == 2
    assert "wandb is not installed; pip install wandb" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "cache").exists()


def _one_cell() -> "CellLog":
    from spd_bench.tracking import CellLog

    return CellLog(name="m/spd/src/seed1", config={"method": "spd", "run_config": {"train": {"lr": 0.001}}},
                   curve=[{"step": 1, "train/loss": 0.5}, {"step": 2, "train/loss": 0.25}],
                   summary={"metrics/t/pass@1": 0.75, "seconds/train": 3.0})


def test_mlflow_receives_a_cell(tmp_path: Path, monkeypatch):
    """Runs where MLflow is installed (pip install 'spd-bench[mlflow]'); read back through MLflow's own client."""
    mlflow = pytest.importorskip("mlflow")
    from spd_bench.tracking import LOGGERS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    LOGGERS["mlflow"](_one_cell(), "proj")
    client = mlflow.tracking.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("proj").experiment_id])
    assert run.info.run_name == "m/spd/src/seed1"
    assert run.data.params["run_config.train.lr"] == "0.001"
    assert run.data.metrics["metrics/t/pass_at_1"] == 0.75
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0.5, 0.25]


def test_wandb_receives_a_cell_offline(tmp_path: Path, monkeypatch):
    """Runs where W&B is installed (pip install 'spd-bench[wandb]'), in its offline mode: the run is written locally."""
    pytest.importorskip("wandb")
    from spd_bench.tracking import LOGGERS

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    LOGGERS["wandb"](_one_cell(), "proj")
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
