"""A regular (non-editable) install carries the task definitions, baselines and entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_wheel_installs_and_works_outside_the_checkout(tmp_path: Path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("spd_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "spd_bench/task_defs/gsm8k.yaml" in names and "spd_baselines/ssd.py" in names
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "spd_bench").rglob("*.py")}
    assert modules <= set(names), f"not in the wheel (add the package to pyproject.toml): {sorted(modules - set(names))}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = (
        "import spd_bench, spd_baselines\n"
        f"assert spd_bench.__file__.startswith({str(target)!r}), spd_bench.__file__\n"
        "from spd_bench.tasks import expand_tasks, get_task\n"
        "assert expand_tasks(['paper']) == ['bbh', 'codealpaca', 'gsm8k', 'mbpp', 'mmlu', 'svamp'], expand_tasks(['paper'])\n"
        "assert get_task('humaneval').training_source == 'mbpp_train'\n"
        "from spd_bench.registry import METHODS\n"
        "assert METHODS.source('ssd') == 'baselines' and METHODS.get('ssd').name == 'ssd'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
