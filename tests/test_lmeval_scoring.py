"""The lm-eval path with stored responses: answer formats and duplicate prompts score exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from spd_bench.errors import UserError
from spd_bench.scoring import ScoreSettings
from spd_bench.scoring.lmeval import LMEvalGenerate, LMEvalMultipleChoice
from spd_bench.tasks import TaskSpec


def task(answer_format: str, kind: str = "math", scorer: str = "lmeval_generate") -> TaskSpec:
    return TaskSpec(name=f"t_{answer_format}", description="", kind=kind, scorer=scorer, data="x:y",
                    options={"answer_format": answer_format})


def score(spec: TaskSpec, rows: list[tuple[str, str, str]], tmp_path: Path) -> tuple[dict, list]:
    items = [{"id": f"i{n}", "prompt": prompt, "answer": "", "label": label} for n, (prompt, label, _) in enumerate(rows)]
    responses = {f"i{n}": [response] for n, (_, _, response) in enumerate(rows)}
    out = LMEvalGenerate().score_responses(spec, items, responses, ScoreSettings(work_dir=tmp_path))
    return out.metrics, out.per_item


def test_numeric_strict_and_flexible(tmp_path: Path):
    metrics, rows = score(task("numeric"), [
        ("Q1", "16", " 12 + 4 = 16. #### 16"),    # strict and flexible
        ("Q2", "1234", " so 1,234 apples"),        # flexible only (commas ignored)
        ("Q3", "7", " #### 8"),                    # neither
        ("Q4", "-3", " it is -3."),                # flexible only
    ], tmp_path)
    assert metrics["exact_match/strict-match"] == pytest.approx(1 / 4)
    assert metrics["exact_match/flexible-extract"] == pytest.approx(3 / 4)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 1.0]


def test_boxed_answers(tmp_path: Path):
    metrics, _ = score(task("boxed"), [
        ("P1", "\\frac{1}{2}", "so $x = \\boxed{\\frac{1}{2}}$."),
        ("P2", "550", "first \\boxed{3}, finally \\boxed{550}"),
        ("P3", "-256", "the answer is 256"),
    ], tmp_path)
    assert metrics["exact_match/boxed"] == pytest.approx(2 / 3)


def test_free_text_answers(tmp_path: Path):
    metrics, _ = score(task("text"), [
        ("B1", "(A)", "Let me think. So the answer is (A)."),
        ("B2", "Yes", "yes\nbecause ..."),
        ("B3", "False", "True"),
    ], tmp_path)
    assert metrics["exact_match/answer-is"] == pytest.approx(1 / 3)
    assert metrics["exact_match/first-line"] == pytest.approx(1 / 3)


def test_duplicate_prompts_keep_their_own_responses(tmp_path: Path):
    metrics, rows = score(task("numeric"), [("Same?", "1", "#### 1"), ("Same?", "2", "#### 2"), ("Same?", "3", "#### 9")], tmp_path)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0]
    mc = TaskSpec(name="mc", description="", kind="multiple_choice", scorer="lmeval_mc", data="x:y")
    items = [{"id": f"m{i}", "prompt": "Pick", "choices": ["a", "b", "c"], "gold": i, "answer": "", "label": None} for i in range(3)]
    out = LMEvalMultipleChoice().score_responses(mc, items, {"m0": ["0"], "m1": ["1"], "m2": ["0"]}, ScoreSettings(work_dir=tmp_path))
    assert out.metrics["acc"] == pytest.approx(2 / 3)


def test_unknown_answer_format_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="answer_format"):
        score(task("roman"), [("Q", "1", "1")], tmp_path)


def test_catalogue_files_state_the_seeds_they_were_scored_with(tmp_path: Path):
    import json

    spec = task("numeric")
    items = [{"id": "i0", "prompt": "Q", "answer": "", "label": "1"}]
    out = LMEvalGenerate().score_responses(spec, items, {"i0": ["#### 1"]}, ScoreSettings(work_dir=tmp_path))
    config = json.loads(out.files["lm_eval_results.json"])["config"]
    assert [config[k] for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")] == [0, 0, 0, 0]
    assert "sample_count" not in out.metrics and out.metrics["exact_match/strict-match"] == 1.0


def test_math_verify_never_raises(monkeypatch: pytest.MonkeyPatch):
    import math_verify

    from spd_bench.scoring.math_equivalence import math_verify as metric

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("unhashable")

    assert metric(["\\frac{1}{2}"], ["0.5"]) == 1.0
    monkeypatch.setattr(math_verify, "verify", broken)
    assert metric(["\\frac{1}{2}"], ["0.5"]) == 0.0  # lm-eval would call it again another way, then stop the run
    assert metric([], []) == 0.0
