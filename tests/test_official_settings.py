"""Official scoring settings: MATH-500 by math-verify equivalence (as lm-eval's MATH tasks), and
HumanEval+/MBPP+ with EvalPlus's extra tests when its release is reachable, base tests otherwise,
with EvalPlus's own samples and results files kept beside the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spd_bench.data import evalplus_release
from spd_bench.data.real import RELEASE
from spd_bench.engine.records import write_record
from spd_bench.errors import UserError
from spd_bench.rescore import score_samples_file
from spd_bench.results import EvalSettings, ResultRecord, load_record, record_files
from spd_bench.registry import TASKS
from spd_bench.tasks import DataContext, ensure_loaded, get_source, get_task, load_eval, load_source

# Two HumanEval+-format problems; a candidate returning abs(a) + b passes the base input and
# fails the plus input -4.
ADD = {"prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n", "entry_point": "add",
       "canonical_solution": "    return a + b\n", "contract": "", "atol": 0}
PLUS_PROBLEMS = [
    {**ADD, "task_id": "HumanEval/0", "base_input": [[1, 2], [3, 4]], "plus_input": [[-4, 1], [0, 0]]},
    {**ADD, "task_id": "HumanEval/1", "base_input": [[5, 5]], "plus_input": [[-1, -1]]},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def no_evalplus_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """EvalPlus's cache folder made empty and both override variables unset."""
    import evalplus.data.utils

    folder = tmp_path / "evalplus-cache"
    monkeypatch.setattr(evalplus.data.utils, "CACHE_DIR", str(folder))
    for release in evalplus_release.RELEASES.values():
        monkeypatch.delenv(release.override_env, raising=False)
    return folder


# ---- MATH-500: math-verify equivalence ------------------------------------------------------

def test_math500_scores_equivalent_answers_where_exact_match_does_not(tmp_path: Path) -> None:
    items = [{"id": f"m{n}", "prompt": f"Problem:\nP{n}\n\nSolution:", "answer": " ...", "label": label}
             for n, label in enumerate(["\\frac{1}{2}", "\\frac{1}{2}", "\\frac{1}{2}", "3"])]
    responses = ["so $x = \\boxed{0.5}$.", "hence \\boxed{\\dfrac12}", "\\boxed{\\frac{1}{2}}", "\\boxed{4}"]
    data = write_jsonl(tmp_path / "math.jsonl", items)
    samples = write_jsonl(tmp_path / "samples.jsonl",
                          [{"task_id": item["id"], "response": text} for item, text in zip(items, responses)])
    metrics = score_samples_file("math500", samples, cache_dir=tmp_path / "cache", limit=None,
                                 data={"math500": str(data)}, allow_code_execution=False)
    assert metrics["math_verify/response"] == pytest.approx(3 / 4)  # 0.5 = \dfrac12 = \frac{1}{2}; 4 != 3
    assert metrics["exact_match/boxed"] == pytest.approx(1 / 4)  # only the literal \frac{1}{2}


def test_only_math500_uses_the_boxed_format() -> None:
    """The CPU default suite scores with other formats, so its numbers do not move."""
    ensure_loaded()
    every = TASKS.names()
    assert {"synth_math", "synth_math_ood", "gsm8k"} <= set(every)
    boxed = [name for name in every if get_task(name).options.get("answer_format") == "boxed"]
    assert boxed == ["math500"]
    assert get_task("math500").scorer == "lmeval_generate"


# ---- HumanEval+: plus tests from EvalPlus's release, else base tests, said so -----------------

def test_humaneval_plus_release_runs_base_and_plus_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = write_jsonl(tmp_path / "HumanEvalPlus.jsonl", PLUS_PROBLEMS)
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(release))
    loaded = load_eval(get_task("humaneval"), DataContext(cache_dir=tmp_path / "cache"))
    assert loaded.layer == RELEASE and loaded.details["tests"].startswith("base and plus tests (HumanEval+ from")
    samples = write_jsonl(tmp_path / "samples.jsonl", [
        # EvalPlus's whole-program "solution" wins over a "completion" on the same line
        {"task_id": "HumanEval/0", "solution": "def add(a, b):\n    return abs(a) + b\n", "completion": "    return 0\n"},
        {"task_id": "HumanEval/1", "completion": "    return a + b\n"},
    ])
    metrics = score_samples_file("humaneval", samples, cache_dir=tmp_path / "cache", limit=None, data={},
                                 allow_code_execution=True)
    assert metrics["pass@1"] == 1.0  # base: both pass
    assert metrics["pass@1_plus"] == pytest.approx(0.5)  # plus: abs(a) + b fails on -4


def test_without_the_release_humaneval_runs_base_tests_and_says_why(tmp_path: Path, no_evalplus_cache: Path) -> None:
    problems, reason = evalplus_release.load("humaneval")
    assert problems is None and str(no_evalplus_cache) in reason and "prefetch --tasks humaneval" in reason
    base_only = write_jsonl(tmp_path / "he.jsonl", [{**p, "plus_input": []} for p in PLUS_PROBLEMS])
    loaded = load_eval(get_task("humaneval"), DataContext(cache_dir=tmp_path / "cache", paths={"humaneval": str(base_only)}))
    assert loaded.details["tests"] == "base tests only (HumanEval+ not reachable: --data humaneval names a file without plus_input)"
    with_plus = write_jsonl(tmp_path / "he_plus.jsonl", PLUS_PROBLEMS)
    loaded = load_eval(get_task("humaneval"), DataContext(cache_dir=tmp_path / "cache", paths={"humaneval": str(with_plus)}))
    assert loaded.details["tests"].startswith("base and plus tests (plus_input in")


def test_mbpp_training_prompts_leave_out_mbpp_plus_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MBPP+ rewrote some task texts, so its problems are matched to MBPP's training rows by task number too."""
    rows = [{"task_id": n, "text": f"Write a function that returns {n}.", "code": f"def f():\n    return {n}",
             "test_list": [f"assert f() == {n}"], "test_setup_code": ""} for n in range(601, 661)]
    plus = [{**ADD, "task_id": f"Mbpp/{n}", "prompt": f'"""\nReturn {n}, reworded.\n"""\n', "base_input": [[1, 2]],
             "plus_input": [[3, 4]]} for n in (601, 602)]
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(write_jsonl(tmp_path / "MbppPlus.jsonl", plus)))
    ctx = DataContext(cache_dir=tmp_path / "cache", paths={"mbpp_train": str(write_jsonl(tmp_path / "train.jsonl", rows))})
    source = load_source(get_source("mbpp_train"), ctx)
    kept = {item["id"] for item in source.train + source.calibration}
    assert source.details["n_dropped_as_in_evaluation_set"] == 2 and kept == {str(n) for n in range(603, 661)}


def test_a_missing_override_file_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "absent.jsonl"))
    with pytest.raises(UserError, match="MBPP_OVERRIDE_PATH=.*is not a file"):
        evalplus_release.load("mbpp")


def test_download_fills_evalplus_cache_through_evalplus(no_evalplus_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prefetch's fetch path, with EvalPlus's download replaced by a copy (no network here)."""
    import evalplus.data.utils

    fetched: list[str] = []

    def fake_make_cache(url: str, path: str) -> None:
        fetched.append(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(Path(path), PLUS_PROBLEMS)

    monkeypatch.setattr(evalplus.data.utils, "make_cache", fake_make_cache)
    assert "saved in EvalPlus's cache" in evalplus_release.download("humaneval")
    assert fetched and fetched[0].endswith(f"/{evalplus_release.version('humaneval')}/HumanEvalPlus.jsonl.gz")
    problems, note = evalplus_release.load("humaneval")
    assert [p["task_id"] for p in problems or []] == ["HumanEval/0", "HumanEval/1"] and "EvalPlus's cache" in note
    assert evalplus_release.download("humaneval").endswith(": ready") and len(fetched) == 1


# ---- EvalPlus's own files beside the record ---------------------------------------------------

def test_score_output_holds_evalplus_files_and_the_record_copies_them(tmp_path: Path) -> None:
    from spd_bench.scoring import ScoreSettings
    from spd_bench.scoring.evalplus_scorer import EvalPlusScorer

    items = [{**p, "id": p["task_id"], "answer": p["canonical_solution"], "label": None} for p in PLUS_PROBLEMS]
    responses = {"HumanEval/0": ["    return abs(a) + b\n"], "HumanEval/1": ["    return a + b\n"]}
    output = EvalPlusScorer().score_responses(get_task("humaneval"), items, responses,
                                              ScoreSettings(allow_code_execution=True, work_dir=tmp_path / "scratch"))
    samples = [json.loads(line) for line in output.files["evalplus_samples.jsonl"].splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert samples[0]["solution"].startswith(ADD["prompt"]) and "abs(a)" in samples[0]["solution"]
    results = json.loads(output.files["evalplus_eval_results.json"])
    assert set(results) == {"date", "hash", "eval", "pass_at_k"}
    first = results["eval"]["HumanEval/0"][0]
    assert set(first) == {"task_id", "solution", "base_status", "plus_status", "base_fail_tests", "plus_fail_tests"}
    assert (first["base_status"], first["plus_status"], first["plus_fail_tests"]) == ("pass", "fail", [[-4, 1]])
    assert results["pass_at_k"] == {"base": {"pass@1": 1.0}, "plus": {"pass@1": 0.5}}

    score = tmp_path / "score"
    score.mkdir()
    (score / "samples.jsonl").write_text("")
    for name, text in output.files.items():
        (score / name).write_text(text)
    (score / "score.json").write_text(json.dumps({"files": sorted(output.files)}))
    record = ResultRecord(
        model="m", method="base", training_source=None, task="humaneval", domain="in", seed=None,
        metrics=output.metrics, primary_metric="pass@1", higher_is_better=True,
        eval_settings=EvalSettings(prompt_format="plain", decoding={}, limit=None, data_layer=RELEASE, n_items=2,
                                   scorer="evalplus"),
        method_info={}, config={}, config_hash="h", provenance={},
    )
    path = write_record(record, tmp_path / "results", score)
    written = load_record(path)
    assert written.files == {name: f"base.{name}" for name in output.files}
    for name, file_name in written.files.items():
        assert (path.parent / file_name).read_text() == output.files[name]
    assert record_files(tmp_path / "results") == [path]  # the copied JSON is not taken for a record


@pytest.mark.slow
def test_a_run_keeps_evalplus_files_and_says_which_tests_ran(tmp_path: Path) -> None:
    """`spd-bench run` on humaneval: HumanEval+ from the override file, then base tests from a --data file."""
    import os
    import subprocess

    from conftest import spd_bench_cmd

    release = write_jsonl(tmp_path / "HumanEvalPlus.jsonl", PLUS_PROBLEMS)
    base_only = write_jsonl(tmp_path / "base.jsonl", [{**p, "plus_input": []} for p in PLUS_PROBLEMS])
    found = {}
    for name, data, env in (("plus", [], {"HUMANEVAL_OVERRIDE_PATH": str(release)}),
                            ("base", ["--data", f"humaneval={base_only}"], {})):
        out = tmp_path / name
        result = subprocess.run(
            spd_bench_cmd("--quiet", "run", "--model", "tiny-llama", "--methods", "base", "--tasks", "humaneval",
                          "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-leaderboard",
                          "--allow-code-execution", "--set", "decoding.max_new_tokens=8", *data),
            capture_output=True, text=True, timeout=600,
            env={**{k: v for k, v in os.environ.items() if k != "HUMANEVAL_OVERRIDE_PATH"}, **env},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (path,) = record_files(out)
        found[name] = (path, json.loads(path.read_text()))
    path, record = found["plus"]
    assert record["eval_settings"]["data_layer"] == RELEASE and set(record["metrics"]) == {"pass@1", "pass@1_plus"}
    assert record["native"]["tests"].startswith("base and plus tests (HumanEval+ from HUMANEVAL_OVERRIDE_PATH=")
    eval_results = json.loads((path.parent / record["files"]["evalplus_eval_results.json"]).read_text())
    assert sorted(eval_results["eval"]) == ["HumanEval/0", "HumanEval/1"]
    samples = (path.parent / record["files"]["evalplus_samples.jsonl"]).read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in samples] == ["HumanEval/0", "HumanEval/1"]
    _, record = found["base"]
    assert set(record["metrics"]) == {"pass@1"}
    assert record["native"]["tests"] == "base tests only (HumanEval+ not reachable: --data humaneval names a file without plus_input)"


def test_few_shot_mbpp_tests_the_bare_prompts_program(tmp_path: Path) -> None:
    from dataclasses import replace

    from spd_bench.scoring import ScoreSettings
    from spd_bench.scoring.evalplus_scorer import EvalPlusScorer, solution_code
    from spd_bench.tasks import add_fewshot

    spec = replace(get_task("mbpp"), num_fewshot=3, prompt_format="plain")
    items = [{**p, "id": p["task_id"], "answer": p["canonical_solution"], "label": None} for p in PLUS_PROBLEMS]
    pool = [{"id": f"train/{i}", "prompt": f"def example_{i}(x):\n", "answer": f"    return x * {i}\n"} for i in range(5)]
    shot = add_fewshot(spec, items, pool, 3)
    assert "def example_" in shot[0]["prompt"]  # the model reads the examples first
    code, _ = solution_code(shot[0], "    return a + b\n", "plain")
    assert "example_" not in code and code == ADD["prompt"] + "    return a + b\n"
    responses = {item["id"]: [item["canonical_solution"]] for item in shot}
    output = EvalPlusScorer().score_responses(spec, shot, responses,
                                              ScoreSettings(allow_code_execution=True, work_dir=tmp_path / "scratch"))
    assert output.metrics["pass@1"] == 1.0 and output.metrics["pass@1_plus"] == 1.0
    assert "example_" not in output.files["evalplus_samples.jsonl"] + output.files["evalplus_eval_results.json"]
