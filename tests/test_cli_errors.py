"""Bad input: one line naming the problem and the fix, exit code 2, nothing half-written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd


def run(tmp_path: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess:
    base = ["--plugin", str(ARITH_PLUGIN), "run", "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    if config is not None:
        path = tmp_path / "run.yaml"
        path.write_text(config)
        base += ["--config", str(path)]
    return subprocess.run(spd_bench_cmd(*base, *args), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, config, expected",
    [
        (["--tasks", "arithh", "--model", "tiny-llama"], None, "unknown task 'arithh': did you mean arith"),
        (["--methods", "base,rawsd", "--tasks", "arith"], None, "unknown method 'rawsd': did you mean raw_sd"),
        (["--model", "./no/such/model", "--methods", "base", "--tasks", "arith"], None, "has no config.json"),
        ([], "model: tiny-llama\nseeds: [1, 2\n", "malformed YAML"),
        (["--tasks", "arith", "--set", "train.epochs=many"], None, "train.epochs: expected an integer"),
        (["--tasks", "arith", "--set", "train.lr=,"], None, "is not a YAML value"),
        (["--tasks", "arith", "--methods", "spd", "--set", "method_options.spd.rank_fraction=high"], None,
         "method_options.spd.rank_fraction: expected a number"),
        (["--force", "sampling", "--tasks", "arith"], None, "is not a stage"),
        (["--methods", "exec_filter", "--tasks", "arith", "--model", "tiny-llama"], None, "pass --allow-code-execution"),
        (["--methods", "exec_filter", "--tasks", "arith", "--allow-code-execution"], None, "training source arith_train is 'math'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path: Path, args, config, expected):
    result = run(tmp_path, *args, config=config)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not list((tmp_path / "out").rglob("*.json")) if (tmp_path / "out").exists() else True
    assert not list((tmp_path / "cache").rglob("manifest.json")) if (tmp_path / "cache").exists() else True


def test_unwritable_output_folder(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    result = subprocess.run(
        spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "run", "--model", "tiny-llama", "--methods", "base", "--tasks", "arith",
                      "--output", str(blocker / "results"), "--cache-dir", str(tmp_path / "cache")),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "output folder" in result.stderr and "--output" in result.stderr


def test_code_tasks_need_explicit_permission_before_model_work(tmp_path: Path):
    result = run(tmp_path, "--tasks", "humaneval", "--methods", "base", "--model", "tiny-llama")
    assert result.returncode == 2
    assert "--allow-code-execution" in result.stderr
    assert not (tmp_path / "cache" / "models").exists()
