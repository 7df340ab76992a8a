"""Whole runs with --backend vllm (vLLM's CPU build): records scored by lm-eval and EvalPlus through
the engine, a second run served from the cache, and bad input refused at plan time."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from helpers import records

CHEAP = ("--set", "method_options.spd.n_calibration=8", "--set", "train.epochs=1", "--seeds", "1", "--no-leaderboard",
         "--quiet")


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    command = spd_bench_cmd("--plugin", str(ARITH_PLUGIN), "run", "--output", str(tmp_path / "out"),
                            "--cache-dir", str(tmp_path / "cache"), *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _check_records(out: Path, expected: int) -> None:
    found = records(out)
    assert len(found) == expected
    for name in found:
        record = json.loads((out / name).read_text())
        assert record["eval_settings"]["backend"] == "vllm"
        assert record["provenance"]["engine"]["backend"] == "vllm" and record["provenance"]["engine"]["vllm"]
        native = record["native"]
        if record["eval_settings"]["scorer"] == "evalplus":  # EvalPlus's eval-results, one verdict per item
            verdicts = [row[0]["base_status"] == "pass" for row in native["results"]["eval"].values()]
            assert record["metrics"]["pass@1"] == pytest.approx(sum(verdicts) / len(verdicts)), name
        else:  # lm-eval's results JSON decides the metrics
            results = native["lm_eval_results"]
            for metric, value in record["metrics"].items():  # "exact_match/strict-match", "acc" (filter none)
                assert results[metric.replace("/", ",", 1) if "/" in metric else f"{metric},none"] == value, (name, metric)


@pytest.mark.slow
@pytest.mark.parametrize("model, tasks, n_records", [
    ("tiny-qwen2", "arith", 3),  # biased k/v: the folded projection carries the bias
    ("organism", "synth_math,synth_code,synth_mc", 18),
])
def test_a_vllm_run_scores_through_lm_eval_and_evalplus_and_reruns_from_cache(tmp_path: Path, model: str, tasks: str,
                                                                               n_records: int):
    args = ("--backend", "vllm", "--model", model, "--methods", "base,raw_sd,spd", "--tasks", tasks, "--limit", "6",
            "--n-train", "12", "--allow-code-execution", *CHEAP)
    first = run(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    _check_records(tmp_path / "out", n_records)
    again = run(tmp_path, *[a for a in args if a != "--quiet"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "served from cache: no model work done" in again.stdout, again.stdout[-2000:]


def test_bad_input_for_vllm_is_refused_in_one_line_before_model_work(tmp_path: Path):
    cases = [
        (("--methods", "spd", "--set", "method_options.spd.generation=hooks"), {}, "generation = hooks needs forward hooks"),
        (("--methods", "base", "--backend", "vlm"), {}, "unknown backend 'vlm': did you mean vllm"),
    ]
    blocker = tmp_path / "no_vllm"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['vllm'] = None  # as if not installed\n")
    cases.append((("--methods", "base"), {"PYTHONPATH": str(blocker)}, "vLLM is not installed: pip install"))
    diff_llama = tmp_path / "diff-llama"
    diff_llama.mkdir()
    from transformers import DiffLlamaConfig

    DiffLlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, vocab_size=300).save_pretrained(diff_llama)
    cases.append((("--methods", "base", "--model", str(diff_llama)), {}, "has no implementation of DiffLlamaForCausalLM"))
    for args, env, expected in cases:
        result = run(tmp_path, "--backend", "vllm", "--tasks", "arith", "--model", "tiny-llama", *args, env=env,
                     timeout=120)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, result.stderr[-2000:])
        assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "sample").exists()
