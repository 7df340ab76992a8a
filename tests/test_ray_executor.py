"""`spd-bench run --executor ray`: the run's cells as tasks on a local 2-CPU Ray cluster give the
records and leaderboard of the local run, build each stage once, survive a killed worker, and refuse
bad executor options in one line before any model work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from helpers import ensure_arith_plugin, records
from spd_bench.config import make_config, parse_set
from spd_bench.engine.executors import (RaySettings, StoreOptions, check_settings, command_without_executor, plan_tasks,
                                        resolve_gpus)
from spd_bench.errors import UserError
from spd_bench.engine.plan import make_plan
from spd_bench.store import remove_leftovers

STAGES = ("prepare", "sample", "curate", "train", "score")
SETTINGS = ("--set", "train.epochs=2")
SPD_SETTINGS = ("--set", "method_options.spd.n_calibration=8")

# A method that hangs in its curate stage the first time (writing its pid first), and one that
# refuses to curate with a UserError: what a killed worker and a user's mistake look like in a task.
TEST_METHODS = textwrap.dedent("""
    import os, time
    from pathlib import Path
    from spd_bench.api import METHODS, Method, UserError

    class HangOnce(Method):
        name = "hang_once"
        description = "raw self-distillation that hangs in curate the first time (test plugin)"

        def curate(self, samples, ctx):
            flag = Path(os.environ["SPD_BENCH_TEST_FLAGS"]) / "hung"
            if not flag.exists():
                tmp = flag.with_name("hung.tmp")
                tmp.write_text(str(os.getpid()))
                tmp.rename(flag)
                time.sleep(600)
            return samples

    class Refuses(Method):
        name = "refuses"
        description = "refuses to curate (test plugin)"

        def curate(self, samples, ctx):
            raise UserError("refuses: this method refuses to curate (test plugin)")

    METHODS.register("hang_once", HangOnce, source="plugin")
    METHODS.register("refuses", Refuses, source="plugin")
""")


def command(root: Path, methods: str, seeds: str, *extra: str, plugins: tuple[Path, ...] = ()) -> list[str]:
    loads = [arg for plugin in (ARITH_PLUGIN, *plugins) for arg in ("--plugin", str(plugin))]
    return spd_bench_cmd(*loads, "run", "--model", "tiny-llama", "--methods", methods, "--tasks", "arith",
                         "--seeds", seeds, "--output", str(root / "out"), "--cache-dir", str(root / "cache"),
                         *SETTINGS, *(SPD_SETTINGS if "spd" in methods.split(",") else ()), *extra)


def start(cmd: list[str], **env: str) -> subprocess.Popen[str]:
    """The console script in its own session, so that whatever it leaves can be stopped with it."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)


def finish(process: subprocess.Popen[str], timeout: float = 420) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and the Ray processes it started
        out, err = process.communicate()
        pytest.fail(f"timed out:\n{out[-3000:]}\n{err[-3000:]}")


def stage_folders(cache: Path) -> list[Path]:
    stages = (*STAGES, "diagnose_corpus", "diagnose_subspace")  # the reporting stages are stored and logged too
    return sorted(p for stage in stages for p in (cache / stage).glob("*") if p.is_dir() and not p.name.startswith("."))


def computed_count(stdout: str) -> int:
    """N of the run's summary line "N stages computed (...s), M served from cache" (all stages of all tasks)."""
    line = next(line for line in stdout.splitlines() if " stages computed (" in line)
    return int(line.split()[0])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# ---- without a cluster ---------------------------------------------------------------------------
def test_records_keep_the_command_without_the_executor_options() -> None:
    argv = ["/x/bin/spd-bench", "--quiet", "run", "--executor", "ray", "--methods", "spd", "--ray-address=auto",
            "--gpus-per-cell", "1", "--cpus-per", "4", "--seeds", "1"]
    assert command_without_executor(argv) == "spd-bench --quiet run --methods spd --seeds 1"
    assert command_without_executor(["/x/bin/spd-bench", "run", "--executor=local"]) == "spd-bench run"
    assert command_without_executor(["pytest", "run"]) is None  # not the console script: nothing to keep


def test_tasks_are_the_base_cells_the_shared_projectors_and_one_per_trained_cell(tmp_path: Path) -> None:
    ensure_arith_plugin()
    config = make_config(parse_set([]), {"model": "tiny-llama", "methods": ["base", "raw_sd", "spd", "spd_random"],
                                         "tasks": ["arith"], "seeds": [1, 2], "output_dir": str(tmp_path / "out"),
                                         "cache_dir": str(tmp_path / "cache")})
    tasks = plan_tasks(make_plan(config))
    assert [(t.label, t.kind, t.after) for t in tasks] == [
        ("base", "cells", None),
        ("spd/arith_train/prepare", "prepare", None),  # shared across seeds: built once, first
        ("raw_sd/arith_train/seed1", "cells", None), ("raw_sd/arith_train/seed2", "cells", None),
        ("spd/arith_train/seed1", "cells", 1), ("spd/arith_train/seed2", "cells", 1),
        # spd_random's projectors depend on the seed: nothing shared, each cell prepares its own
        ("spd_random/arith_train/seed1", "cells", None), ("spd_random/arith_train/seed2", "cells", None),
    ]
    assert sum(len(t.cells) for t in tasks if t.kind == "cells") == len(make_plan(config).cells)
    # a cell that waits for its preparation reuses it even when the run recomputes everything
    assert StoreOptions(use_cache=False).after_preparation() == StoreOptions(
        use_cache=True, force=frozenset({"sample", "curate", "train", "score"}))
    assert StoreOptions(force=frozenset({"prepare", "train"})).after_preparation().force == {"train"}


def test_cells_get_a_gpu_each_on_a_cluster_with_gpus_unless_told_otherwise() -> None:
    auto, cpu, cuda = (make_config(parse_set([]), {"device": device}) for device in ("auto", "cpu", "cuda"))
    assert resolve_gpus(RaySettings(), auto, cluster_gpus=8).gpus_per_cell == 1
    assert resolve_gpus(RaySettings(), auto, cluster_gpus=0).gpus_per_cell == 0
    assert resolve_gpus(RaySettings(), cpu, cluster_gpus=8).gpus_per_cell == 0
    assert resolve_gpus(RaySettings(gpus_per_cell=0.5), auto, cluster_gpus=8).gpus_per_cell == 0.5
    with pytest.raises(UserError, match="the Ray cluster has no GPUs"):
        resolve_gpus(RaySettings(), cuda, cluster_gpus=0)
    with pytest.raises(UserError, match="--gpus-per-cell 0"):
        check_settings(RaySettings(gpus_per_cell=0), cuda)
    with pytest.raises(UserError, match="--cpus-per-cell 0"):
        check_settings(RaySettings(cpus_per_cell=0), auto)


def test_the_first_failed_task_is_reported_in_one_line() -> None:
    from spd_bench.engine.executors import Task, TaskFailed, _raise_first

    tasks = [Task("base", "cells", []), Task("spd/s/prepare", "prepare", []), Task("spd/s/seed1", "cells", [], after=1)]
    boom = RuntimeError("boom\nsecond line of a traceback")
    with pytest.raises(TaskFailed) as failed:  # the preparation, not the cell that waited for it
        _raise_first(tasks, {2: boom, 1: boom})
    assert str(failed.value).startswith("spd/s/prepare failed in its Ray task: RuntimeError: boom (and 1 more task failed)")
    assert "\n" not in str(failed.value)
    with pytest.raises(UserError, match=r"^base: no data for arith$"):
        _raise_first(tasks, {0: UserError("no data for arith")})


def test_shard_with_ray_is_refused_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(command(tmp_path, "base", "1", "--executor", "ray", "--shard", "1/2"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [result.stderr.strip()] and "--shard" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_ray_options_without_ray_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(command(tmp_path, "base", "1", "--gpus-per-cell", "1"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--gpus-per-cell is an option of --executor ray" in result.stderr


def test_an_unreachable_cluster_is_refused_in_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(command(tmp_path, "base", "1", "--executor", "ray", "--ray-address", "127.0.0.1:1"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "--ray-address 127.0.0.1:1: no Ray cluster answers" in result.stderr
    assert time.monotonic() - started < 60  # not Ray's minutes of reconnecting
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # no model work, no files


def test_auto_without_a_cluster_on_this_node_is_refused_in_one_line(tmp_path: Path) -> None:
    from ray._private.services import canonicalize_bootstrap_address

    try:
        found = canonicalize_bootstrap_address("auto")
    except ConnectionError:
        found = None
    if found:
        pytest.skip(f"a Ray cluster runs on this machine ({found})")
    result = subprocess.run(command(tmp_path, "base", "1", "--executor", "ray", "--ray-address", "auto"),
                            capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert "--ray-address auto: no Ray cluster runs on this node" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


# ---- on a local cluster --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """base + raw_sd and spd with seeds 1 and 2, run locally and then with --executor ray on the same
    paths (so that the commands the leaderboards quote are the same); the local run is moved aside."""
    root = tmp_path_factory.mktemp("ray")
    methods, seeds = "base,raw_sd,spd", "1,2"
    started = time.monotonic()
    out, err = finish(start(command(root, methods, seeds)))
    local_seconds = time.monotonic() - started
    assert "result records" in out, err[-3000:]
    (root / "out").rename(root / "local-out")
    (root / "cache").rename(root / "local-cache")
    started = time.monotonic()
    process = start(command(root, methods, seeds, "--executor", "ray"))
    out, err = finish(process)
    assert process.returncode == 0, err[-3000:]
    return {"root": root, "stdout": out, "stderr": err, "driver": process.pid,
            "seconds": (local_seconds, time.monotonic() - started)}


@pytest.mark.slow
def test_a_ray_run_writes_the_records_and_leaderboard_of_a_local_run(local_and_ray: dict) -> None:
    root = local_and_ray["root"]
    local, ray = records(root / "local-out"), records(root / "out")
    assert len(ray) == 1 + 2 * 2  # base once, raw_sd and spd with two seeds, on arith
    assert ray == local  # metrics, per-item outputs and stage keys
    for name in ("leaderboard.md", "leaderboard.csv"):
        assert (root / "out" / name).read_bytes() == (root / "local-out" / name).read_bytes(), name
    record = json.loads((root / "out/records/tiny-llama/arith/spd-seed2.json").read_text())
    executor = record["provenance"]["executor"]
    assert executor["name"] == "ray" and executor["task"] == "spd/arith_train/seed2"
    assert executor["tasks"] == 5 + 1 and executor["workers"] == 2 and executor["nodes"] == 1
    assert "--executor" not in record["provenance"]["command"]
    local_record = json.loads((root / "local-out/records/tiny-llama/arith/spd-seed2.json").read_text())
    assert local_record["provenance"]["executor"]["name"] == "local"
    assert local_record["provenance"]["command"] == record["provenance"]["command"]
    print(f"local run {local_and_ray['seconds'][0]:.0f}s, ray run {local_and_ray['seconds'][1]:.0f}s")


@pytest.mark.slow
def test_a_ray_run_builds_each_stage_once(local_and_ray: dict) -> None:
    root = local_and_ray["root"]
    folders = stage_folders(root / "cache")
    assert {p.name for p in folders} == {p.name for p in stage_folders(root / "local-cache")}
    builders = []
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["key"] == folder.name
        builders.append(manifest["builder"]["pid"])
    # every stage built by one process, none twice: each task's stage log together computed as
    # many stages as there are folders, in the Ray workers (several), none in the driver
    assert computed_count(local_and_ray["stdout"]) == len(folders)
    assert local_and_ray["driver"] not in builders and len(set(builders)) >= 2
    assert not [p for p in (root / "cache").rglob("*.tmp-*")]


@pytest.mark.slow
def test_a_killed_worker_is_rerun_and_the_run_completes_with_the_same_results(tmp_path: Path) -> None:
    plugin = tmp_path / "test_methods.py"
    plugin.write_text(TEST_METHODS)
    flags = tmp_path / "flags"
    flags.mkdir()
    process = start(command(tmp_path / "ray", "base,hang_once", "1", "--executor", "ray", "--no-leaderboard",
                          plugins=(plugin,)),
                    SPD_BENCH_TEST_FLAGS=str(flags))
    deadline = time.monotonic() + 300
    while not (flags / "hung").exists():  # the worker is inside the curate stage, holding its lock
        if process.poll() is not None or time.monotonic() > deadline:
            finish(process, timeout=5)
            pytest.fail("the run never reached the hanging stage")
        time.sleep(0.2)
    worker = int((flags / "hung").read_text())
    os.kill(worker, signal.SIGKILL)
    out, err = finish(process)
    assert process.returncode == 0, err[-3000:]  # Ray ran the task again; the store resumed it
    curate = stage_folders(tmp_path / "ray" / "cache")
    curate = [p for p in curate if p.parent.name == "curate"]
    assert len(curate) == 1
    assert json.loads((curate[0] / "manifest.json").read_text())["builder"]["pid"] != worker
    # what the killed build left is not held by anyone: the next store to open removes it (the rerun may
    # have gone to a worker older than that folder, which leaves it alone)
    remove_leftovers(tmp_path / "ray" / "cache", before=time.time() + 1)
    assert not [p for p in (tmp_path / "ray" / "cache").rglob("*.tmp-*")]

    # the same run without a kill, locally ("hung" exists: nothing hangs)
    local = start(command(tmp_path / "local", "base,hang_once", "1", "--no-leaderboard", plugins=(plugin,)),
                  SPD_BENCH_TEST_FLAGS=str(flags))
    _, local_err = finish(local)
    assert local.returncode == 0, local_err[-3000:]
    assert records(tmp_path / "ray" / "out") == records(tmp_path / "local" / "out")


@pytest.mark.slow
def test_a_user_error_in_a_task_is_one_line_naming_the_cell(tmp_path: Path) -> None:
    plugin = tmp_path / "test_methods.py"
    plugin.write_text(TEST_METHODS)
    process = start(command(tmp_path, "refuses", "1", "--executor", "ray", plugins=(plugin,)),
                    SPD_BENCH_TEST_FLAGS=str(tmp_path))
    out, err = finish(process)
    assert process.returncode == 2, err[-3000:]
    assert error_lines(err) == ["error: refuses/arith_train/seed1: refuses: this method refuses to curate (test plugin)"]
    assert "Traceback" not in err + out


@pytest.mark.slow
def test_a_cell_no_node_can_hold_is_refused_before_model_work(tmp_path: Path) -> None:
    result = subprocess.run(command(tmp_path, "base", "1", "--executor", "ray", "--gpus-per-cell", "1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [result.stderr.strip()] and "--gpus-per-cell" in result.stderr
    assert not (tmp_path / "out").exists() and not stage_folders(tmp_path / "cache")
