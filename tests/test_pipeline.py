"""End-to-end runs through the real console script on a tiny model and a plugin task."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from helpers import records

pytestmark = pytest.mark.slow

METHODS = "base,raw_sd,spd,spd_random"


def run_cmd(out: Path, cache: Path, *extra: str) -> list[str]:
    return spd_bench_cmd(
        "--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--model", "tiny-qwen2", "--methods", METHODS,
        "--tasks", "arith", "--seeds", "1,2", "--output", str(out), "--cache-dir", str(cache), "--no-leaderboard",
        "--set", "method_options.spd.n_calibration=8", "--set", "method_options.spd_random.n_calibration=8",
        "--set", "train.epochs=2", *extra,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    out, cache = root / "results", root / "cache"
    result = subprocess.run(run_cmd(out, cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, cache, result


def test_run_writes_one_record_per_cell_and_task(first_run):
    out, _, _ = first_run
    found = records(out)
    # base once, three trained methods x two seeds
    assert len(found) == 1 + 3 * 2
    record = json.loads((out / "records/tiny-qwen2/arith/spd-seed1.json").read_text())
    assert record["method_info"]["options"]["rank_fraction"] == 0.5
    assert record["method_info"]["options"]["layers"] == "last_mid"
    assert record["method_info"]["budget"]["n_examples"] == 16
    curve = record["method_info"]["training"]["train_curve"]  # the fine-tune's curve travels with the record
    assert len(curve) >= 2 and all(point["loss"] > 0 and "learning_rate" in point for point in curve)
    assert record["method_info"]["training"]["loss_last"] == curve[-1]["loss"]
    assert record["config"]["train"]["epochs"] == 2
    assert set(record["provenance"]["versions"]) >= {"python", "torch", "transformers", "peft", "lm_eval", "evalplus"}
    assert record["eval_settings"]["data_layer"] == "synthetic"
    assert "lm_eval_task_config" in record["native"]
    assert record["metrics"]["exact_match/strict-match"] == record["native"]["lm_eval_results"]["exact_match,strict-match"]


def test_projectors_are_shared_across_seeds_but_random_ones_are_not(first_run):
    out, _, _ = first_run
    keys = {name: data["keys"] for name, data in records(out).items()}
    spd1, spd2 = keys["records/tiny-qwen2/arith/spd-seed1.json"], keys["records/tiny-qwen2/arith/spd-seed2.json"]
    rnd1, rnd2 = keys["records/tiny-qwen2/arith/spd_random-seed1.json"], keys["records/tiny-qwen2/arith/spd_random-seed2.json"]
    assert spd1["prepare"] == spd2["prepare"] and spd1["sample"] != spd2["sample"]
    assert rnd1["prepare"] != rnd2["prepare"]


def test_second_run_is_served_from_cache(first_run):
    out, cache, _ = first_run
    before = records(out)
    result = subprocess.run([c for c in run_cmd(out, cache) if c != "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "served from cache: no model work done" in result.stdout
    assert "computed" not in result.stdout
    assert records(out) == before


def rerun_seed1(first_run, out: Path, methods: str, setting: str) -> dict[str, dict[str, str]]:
    """Seed 1 of ``methods`` again on the first run's cache with one setting changed: cell -> stage -> state."""
    _, cache, _ = first_run
    cmd = [c for c in run_cmd(out, cache, "--set", setting) if c != "--quiet"]
    cmd[cmd.index("--methods") + 1], cmd[cmd.index("--seeds") + 1] = methods, "1"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    states: dict[str, dict[str, str]] = {}
    for stage, cell, state in re.findall(r"^\s*(\w+)\s+(\S+): (cached|computed)", result.stdout, re.MULTILINE):
        states.setdefault(cell, {})[stage] = state
    return states


def test_an_option_that_acts_after_sampling_reuses_the_samples(first_run, tmp_path: Path):
    """spd's loss mask changes fine-tuning only: projectors and samples come from the cache."""
    states = rerun_seed1(first_run, tmp_path, "spd,spd_random", "method_options.spd.loss_on=completion")
    assert states["spd/arith_train/seed1"] == {"prepare": "cached", "sample": "cached", "curate": "computed", "train": "computed"}


def test_the_sampling_batch_size_is_part_of_the_sample_key(first_run, tmp_path: Path):
    """Each batch draws from its own seeded generator, so another batch size gives other samples."""
    states = rerun_seed1(first_run, tmp_path, "raw_sd,spd,spd_random", "gen_batch_size=3")
    assert states["raw_sd/arith_train/seed1"]["sample"] == "computed"


def test_killed_run_resumes_to_identical_results(first_run, tmp_path: Path):
    reference, _, _ = first_run
    out, cache = tmp_path / "results", tmp_path / "cache"
    cmd = [c for c in run_cmd(out, cache) if c != "--quiet"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "train" in line and "raw_sd" in line:  # mid-run: some stages done, most not
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "records/tiny-qwen2/arith/spd-seed2.json").exists()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "cached" in result.stdout
    assert records(out) == records(reference)
    leftovers = [p for p in cache.rglob("*.tmp-*")]
    assert all(not p.joinpath("manifest.json").exists() for p in leftovers)


def test_a_filter_that_keeps_nothing_records_the_base_model(tmp_path: Path):
    """rft on a random model finds no correct sample: nothing is trained, and the record says so."""
    out, cache = tmp_path / "results", tmp_path / "cache"
    cmd = spd_bench_cmd(
        "--plugin", str(ARITH_PLUGIN), "--quiet", "run", "--model", "tiny-llama", "--methods", "base,rft",
        "--tasks", "arith", "--seeds", "1", "--output", str(out), "--cache-dir", str(cache), "--no-leaderboard",
        "--set", "method_options.rft.k=1",
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rft = json.loads((out / "records/tiny-llama/arith/rft-seed1.json").read_text())
    base = json.loads((out / "records/tiny-llama/arith/base.json").read_text())
    assert rft["method_info"]["budget"]["n_examples"] == 0 and rft["method_info"]["budget"]["n_kept"] == 0
    assert rft["method_info"]["external_signal"] == "labels"
    assert rft["metrics"] == base["metrics"]
