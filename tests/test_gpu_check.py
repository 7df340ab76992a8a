"""benchmarks/gpu_check.py runs end to end (its CPU smoke form), so the prepared GPU check does not rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_the_gpu_check_runs_on_cpu_and_reports_every_variant(tmp_path: Path):
    out = tmp_path / "figures.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dtype", "float32",
               "--shape", "tiny", "--prompts", "4", "--new-tokens", "8", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(row["model"], row["variant"]): row for row in report["rows"]}
    assert set(rows) == {(model, variant) for model in ("random Qwen2 (tiny)", "organism")
                         for variant in ("base", "folded SPD", "adapter")}
    for row in rows.values():
        assert row["hf_tok_per_s"] > 0 and row["vllm_tok_per_s"] > 0
        assert row["greedy_agreement"] >= 0.75, row  # float32 on CPU: the engines agree but for rare ties
    assert report["environment"]["vllm"] and "| model | variant |" in result.stdout
