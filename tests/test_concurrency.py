"""Several processes on one cache: each stage is built once, a crashed builder blocks nobody,
and `--shard i/N` splits a run's cells exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from spd_bench.engine.plan import select_shard
from spd_bench.errors import UserError

BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from spd_bench.store import ArtifactStore, stage_key

    root = Path(sys.argv[1])

    def build(folder):
        with open(root / "builds.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(float(sys.argv[2]))
        (folder / "out.txt").write_text("built")
        return {"by": os.getpid()}

    artifact = ArtifactStore(root / "cache").get_or_build(stage_key("sample", 1, {"x": 1}), build)
    print(artifact.folder, artifact.cached, artifact.info["by"])
""")


def start_builder(root: Path, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(root), str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_processes_sharing_a_cache_build_a_stage_once(tmp_path: Path) -> None:
    builders = [start_builder(tmp_path, 2.0) for _ in range(3)]
    outputs = [b.communicate(timeout=120) for b in builders]
    assert all(b.returncode == 0 for b in builders), [err[-2000:] for _, err in outputs]
    assert len((tmp_path / "builds.log").read_text().split()) == 1
    folders, cached, builder = zip(*(out.split() for out, _ in outputs))
    assert len(set(folders)) == 1 and len(set(builder)) == 1  # everyone got the one build
    assert sorted(cached) == ["False", "True", "True"]


def test_a_builder_killed_mid_build_blocks_nobody(tmp_path: Path) -> None:
    stuck = start_builder(tmp_path, 600.0)
    deadline = time.monotonic() + 60
    while not (tmp_path / "builds.log").exists():  # it holds the stage's lock now
        assert time.monotonic() < deadline and stuck.poll() is None, stuck.stderr.read() if stuck.stderr else ""
        time.sleep(0.1)
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.wait()
    again = start_builder(tmp_path, 0.0)
    out, err = again.communicate(timeout=120)  # would hang if the dead builder's lock survived it
    assert again.returncode == 0, err[-2000:]
    assert out.split()[1] == "False" and len((tmp_path / "builds.log").read_text().split()) == 2


def test_shards_hold_every_cell_once() -> None:
    cells = list(range(11))
    shards = [select_shard(cells, f"{i}/3") for i in (1, 2, 3)]  # type: ignore[arg-type]
    assert sorted(c for shard in shards for c in shard) == cells
    assert select_shard(cells, "1/1") == cells  # type: ignore[arg-type]
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard"):
            select_shard(cells, bad)  # type: ignore[arg-type]


def run(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "run", "--model", "tiny-qwen2", "--methods", "base,raw_sd",
                      "--tasks", "arith", "--seeds", "1,2", "--output", str(tmp_path / "out"),
                      "--cache-dir", str(tmp_path / "cache"), "--no-leaderboard", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def records(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*.samples.jsonl"))}


@pytest.mark.slow
def test_two_runs_started_together_build_each_stage_once(tmp_path: Path) -> None:
    first, second = run(tmp_path), run(tmp_path)
    logs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [log[-3000:] for log in logs]
    computed = sum(line.count(": computed in") for log in logs for line in log.splitlines())
    stages = [p for stage in ("prepare", "sample", "curate", "train", "score")
              for p in (tmp_path / "cache" / stage).glob("*") if p.is_dir() and not p.name.startswith(".")]
    assert computed == len(stages)  # no stage was built by both
    assert len(records(tmp_path / "out")) == 3  # base, and raw_sd with seeds 1 and 2, scored on arith


@pytest.mark.slow
def test_shards_together_write_the_records_of_the_whole_run(tmp_path: Path) -> None:
    for shard in ("1/2", "2/2"):
        result = run(tmp_path, "--shard", shard)
        assert result.wait(timeout=900) == 0, result.stdout.read() if result.stdout else ""
    sharded = records(tmp_path / "out")
    whole = tmp_path / "whole"
    whole.mkdir()
    result = run(whole)
    assert result.wait(timeout=900) == 0
    assert sharded == records(whole / "out")
