"""The baselines (ssd, rft, self_consistency, exec_filter): curation on hand-written samples,
then one end-to-end run per method through the console script.

The end-to-end runs use "the parrot": tiny-llama edited so that it answers "5" to every prompt
(attention and MLP outputs zeroed, embeddings and head set so any token is followed by "5" and
"5" by a newline). Its samples are known in advance, so what each filter must keep is too.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import ARITH_PLUGIN, spd_bench_cmd
from spd_bench.answer_format import extract_choice, extract_number, normalize_number, reference_answer
from spd_bench.scoring.code_check import check_problem
from spd_baselines.ssd import drop_short
from spd_bench.config import RunConfig
from spd_bench.errors import UserError
from spd_bench.method import make_method
from spd_bench.method import MethodContext, Sample
from spd_bench.tasks import LoadedSource, SourceSpec
from spd_bench.results import record_files

CHOICES = ["31", "26", "25", "28"]  # "What is 7 + 19?": B is right


def _no_model() -> Any:
    raise AssertionError("curation must not need the model")


def make_ctx(items: list[dict], kind: str, tmp_path: Path, allow_code_execution: bool = False) -> MethodContext:
    source = SourceSpec(name="toy_train", description="toy", loader="unused:unused", kind=kind)
    config = RunConfig(allow_code_execution=allow_code_execution, cache_dir=str(tmp_path / "cache"))
    data = LoadedSource(train=items, calibration=[], layer="synthetic")
    return MethodContext(load_model=_no_model, source=source, data=data, config=config, seed=1)


def samples(rows: list[tuple[str, str]]) -> list[Sample]:
    """(prompt_id, completion) rows; sample_index counts per prompt, as the engine numbers them."""
    seen: Counter[str] = Counter()
    result = []
    for prompt_id, completion in rows:
        result.append(Sample(prompt_id, f"prompt of {prompt_id}", completion, sample_index=seen[prompt_id]))
        seen[prompt_id] += 1
    return result


def ids(kept: list[Sample]) -> list[tuple[str, int]]:
    return [(s.prompt_id, s.sample_index) for s in kept]


# ---- answers ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    (" 12 + 7 = 19. 19 - 3 = 16. #### 16", "16"),
    (" 16 apples. #### 17", "17"),  # the marker wins over earlier numbers
    (" #### 1,234.", "1234"),  # commas and the trailing period go
    (" It costs $5.50, then 3", "3"),  # no marker: the last number
    (" #### $1,000.00 and 7 more", "1000"),  # first number after the marker; 1000.00 is 1000
    (" 5 + 5 = #### ten", None),  # a marker with no number after it answers nothing
    (" -3 degrees", "-3"),
    (" no digits here", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_normalize_number():
    assert normalize_number("16.0") == "16"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number("$1,000.") == "1000"
    assert normalize_number("sixteen") is None


@pytest.mark.parametrize("text, expected", [
    (" B", "B"),
    ("(C) 25", "C"),
    (" D. 28", "D"),
    ("Answer is C", "C"),  # the leading "A" of "Answer" is a word, not a letter answer
    (" The answer is (A).", "A"),
    (" 26", "B"),  # option text
    (" 7 + 19 = 26", "B"),  # "19" and "7" are not options, "26" is; "2" inside "26" does not count
    (" 26 or 28", None),  # two options named
    (" E", None),  # only four options
    (" a number", None),  # lower-case "a" is not an answer letter
])
def test_extract_choice(text, expected):
    assert extract_choice(text, CHOICES) == expected


def test_reference_answer_reads_labels_and_gold():
    assert reference_answer({"label": "1,000"}, "math") == "1000"
    assert reference_answer({"label": None}, "math") is None
    assert reference_answer({"label": "B", "choices": CHOICES, "gold": 2}, "multiple_choice") == "C"  # gold wins
    assert reference_answer({"label": "b", "choices": CHOICES}, "multiple_choice") == "B"
    assert reference_answer({"label": "26", "choices": CHOICES}, "multiple_choice") == "B"


# ---- ssd ----------------------------------------------------------------------------------
def test_ssd_drops_empty_then_the_shortest_tenth():
    rows = [("p0", ""), ("p1", "   ")] + [(f"q{i}", "x" * (i + 2)) for i in range(9)] + [("r", "y"), ("s", "z")]
    kept = drop_short(samples(rows), 0.1)
    # 11 non-empty samples: floor(1.1) = 1 dropped, the shortest; "y" and "z" tie, the earlier goes
    assert [s.prompt_id for s in kept] == [f"q{i}" for i in range(9)] + ["s"]
    twenty = samples([(f"t{i}", "x" * (20 - i)) for i in range(20)])
    assert [s.prompt_id for s in drop_short(twenty, 0.1)] == [f"t{i}" for i in range(18)]  # two shortest: t18, t19
    assert len(drop_short(twenty, 0.0)) == 20


def test_ssd_plan_loss_and_eval_temperature(tmp_path):
    method = make_method("ssd", {"eval_temperature": 0.6})
    ctx = make_ctx([], "math", tmp_path)
    plan = method.sampling(ctx)
    assert (plan.temperature, plan.top_k, plan.top_p, plan.n_per_prompt) == (1.5, 20, 0.8, 1)
    assert method.train_spec(ctx).loss_on == "completion"
    assert method.eval_temperature() == 0.6
    assert make_method("ssd").eval_temperature() == 0.0
    assert method.external_signal is None


@pytest.mark.parametrize("options", [{"temperature": 0}, {"drop_shortest": 1.0}, {"top_p": 0}, {"eval_temperature": -1}])
def test_ssd_rejects_bad_options(options):
    with pytest.raises(UserError, match="method_options.ssd"):
        make_method("ssd", options)


# ---- rft ----------------------------------------------------------------------------------
MATH_ITEMS = [
    {"id": "q1", "prompt": "...", "label": "16"},
    {"id": "q2", "prompt": "...", "label": "1,000"},
    {"id": "q3", "prompt": "...", "label": "7"},
]


def test_rft_keeps_samples_whose_answer_matches_the_label(tmp_path):
    ctx = make_ctx(MATH_ITEMS, "math", tmp_path)
    batch = samples([
        ("q1", " 12 + 4 = 16. #### 16"),  # kept: marker answer is the label
        ("q1", " #### 15"),  # dropped: wrong
        ("q1", " 16 apples. #### 17"),  # dropped: the marker's 17 is the answer, not the earlier 16
        ("q1", " 4 * 4 = 16"),  # kept: no marker, last number
        ("q2", " #### 1000"),  # kept: label "1,000" normalises to 1000
        ("q2", " #### $1,000.00"),  # kept
        ("q2", " 1000 - 1 = 999"),  # dropped: last number 999
        ("q3", " seven"),  # dropped: no number
        ("q3", ""),  # dropped: empty; q3 contributes nothing
    ])
    kept = make_method("rft").curate(batch, ctx)
    assert ids(kept) == [("q1", 0), ("q1", 3), ("q2", 0), ("q2", 1)]


def test_rft_multiple_choice_accepts_letter_or_option_text(tmp_path):
    ctx = make_ctx([{"id": "m1", "prompt": "...", "label": "B", "choices": CHOICES, "gold": 1}], "multiple_choice", tmp_path)
    batch = samples([("m1", " B"), ("m1", " 26"), ("m1", " A"), ("m1", " Answer: B"), ("m1", " 25 or 26")])
    assert ids(make_method("rft").curate(batch, ctx)) == [("m1", 0), ("m1", 1), ("m1", 3)]


def test_rft_plan_and_refusals(tmp_path):
    method = make_method("rft", {"k": 6})
    assert method.external_signal == "labels"
    assert method.sampling(make_ctx(MATH_ITEMS, "math", tmp_path)).n_per_prompt == 6
    with pytest.raises(UserError, match="q9"):
        method.sampling(make_ctx(MATH_ITEMS + [{"id": "q9", "prompt": "...", "label": None}], "math", tmp_path))
    code_ctx = make_ctx(MATH_ITEMS, "code", tmp_path)
    with pytest.raises(UserError, match="exec_filter"):
        method.validate(code_ctx.config, code_ctx.source)
    with pytest.raises(UserError, match="k is 0"):
        make_method("rft", {"k": 0})
    with pytest.raises(UserError, match="loss_on"):
        make_method("rft", {"loss_on": "prompt"})


# ---- self_consistency ----------------------------------------------------------------------
def test_self_consistency_keeps_the_majority_and_nothing_on_ties(tmp_path):
    items = [{"id": f"q{i}", "prompt": "..."} for i in range(1, 5)]
    ctx = make_ctx(items, "math", tmp_path)
    batch = samples([
        ("q1", " #### 16"), ("q1", " 8 + 8 = 16"), ("q1", " #### 17"), ("q1", " no idea"),  # 16 wins 2-1: keep 0, 1
        ("q2", " #### 5"), ("q2", " #### 6"),  # 1-1 tie: nothing
        ("q3", " #### 3"), ("q3", " ?"), ("q3", ""),  # only one sample answers; it is the majority of the voters
        ("q4", " 8"), ("q4", " 8"), ("q4", " 9"), ("q4", " 9"), ("q4", " 10"),  # 2-2 tie at the top: nothing
    ])
    method = make_method("self_consistency")
    assert method.external_signal is None
    assert ids(method.curate(batch, ctx)) == [("q1", 0), ("q1", 1), ("q3", 0)]


def test_self_consistency_votes_on_option_letters(tmp_path):
    ctx = make_ctx([{"id": "m1", "prompt": "...", "choices": CHOICES}], "multiple_choice", tmp_path)  # no label needed
    batch = samples([("m1", " B"), ("m1", "(B)"), ("m1", " 26"), ("m1", " A"), ("m1", " C")])
    assert ids(make_method("self_consistency").curate(batch, ctx)) == [("m1", 0), ("m1", 1), ("m1", 2)]


# ---- exec_filter --------------------------------------------------------------------------
def code_item(name: str, canonical: str, inputs: list[list[Any]]) -> dict[str, Any]:
    prompt = f"def {name}(a, b):\n"
    return {"id": name, "prompt": prompt, "entry_point": name, "canonical_solution": canonical, "base_input": inputs,
            "answer": canonical, "label": None, "plus_input": [], "atol": 0}


def test_check_problem_compares_outputs_and_survives_hostile_samples(tmp_path):
    item = code_item("add", "    return a + b\n", [[1, 2], [0.1, 0.2], [-1, 1]])
    candidates = [
        "    return a + b\n",  # 0 pass
        "    return b + a\n",  # 1 pass: different text, same outputs
        "    return a - b\n",  # 2 fail
        "    return round(a + b, 9)\n",  # 3 pass: 0.3 vs 0.30000000000000004 is within EvalPlus's float tolerance
        "    import os; os._exit(0)\n",  # 4 fail: ends its own process, and only that
        "    while True: pass\n",  # 5 fail: per-input time limit
        "    return a +\n",  # 6 fail: syntax error
        "    raise SystemExit(0)\n",  # 7 fail
        "    class Yes(int):\n        def __eq__(self, other): return True\n    return Yes(0)\n",  # 8 fail: forged equality
        "    return a + b\n",  # 9 pass: checked after the crash
    ]
    result = check_problem(item, candidates, memory_mb=512, workdir=tmp_path)
    assert result.canonical_error is None
    assert result.passed == [True, True, False, True, False, False, False, False, False, True]
    assert [reason is None for reason in result.reasons] == result.passed
    assert "exited" in result.reasons[4] and "timeout" in result.reasons[5] and "SyntaxError" in result.reasons[6]


def test_check_problem_matches_exceptions_and_flags_a_broken_reference(tmp_path):
    item = code_item("div", "    return 10 // a\n", [[2, 0], [0, 0]])  # the reference raises ZeroDivisionError on a=0
    candidates = ["    return int(10 / a)\n", "    return 5 if a else None\n", "    return 10 // (a or 1)\n"]
    result = check_problem(item, candidates, memory_mb=512, workdir=tmp_path)
    assert result.passed == [True, False, False]
    broken = check_problem(code_item("bad", "    return 1 / 0\n", [[1, 1]]), ["    return 0\n"],
                           memory_mb=512, workdir=tmp_path)
    assert broken.canonical_error is not None and broken.passed == [False]


def test_exec_filter_keeps_what_the_evalplus_scorer_passes(tmp_path):
    """One definition of "pass": the filter keeps exactly the samples whose score is 1."""
    from spd_bench.scoring import ScoreSettings
    from spd_bench.scoring.evalplus_scorer import EvalPlusScorer
    from spd_bench.tasks import TaskSpec

    items = [code_item("add", "    return a + b\n", [[1, 2], [3, 4], [0.5, 0.25]]),
             code_item("mul", "    return a * b\n", [[2, 3], [0, 5]])]
    completions = {
        "add": ["    return a + b\n", "    return 3\n", "    return float(a + b)\n", "    return [a + b][0]\n"],
        "mul": ["    return a + b\n", "    return b * a\n", "    return a * b * 1.0000001\n", "    import sys; sys.exit()\n"],
    }
    ctx = make_ctx(items, "code", tmp_path, allow_code_execution=True)
    batch = samples([(prompt_id, completion) for prompt_id, group in completions.items() for completion in group])
    method = make_method("exec_filter", {"memory_mb": 512})
    assert method.external_signal == "tests"
    kept = set(ids(method.curate(batch, ctx)))
    task = TaskSpec(name="toy_code", description="t", kind="code", scorer="evalplus", data="t:t", prompt_format="plain")
    scored = set()
    for item in items:
        for index, completion in enumerate(completions[item["id"]]):
            settings = ScoreSettings(allow_code_execution=True, work_dir=tmp_path / "score", memory_mb=512)
            output = EvalPlusScorer().score_responses(task, [item], {item["id"]: [completion]}, settings)
            if output.per_item[0]["score"] == 1.0:
                scored.add((item["id"], index))
    # float(a + b) == 3 passes, as in EvalPlus; a * b * 1.0000001 is close to 6 but not equal, and ints get no tolerance
    assert kept == scored == {("add", 0), ("add", 2), ("add", 3), ("mul", 1)}
    broken = make_ctx([code_item("bad", "    return 1 / 0\n", [[1, 1]])], "code", tmp_path, allow_code_execution=True)
    with pytest.raises(UserError, match="canonical solution of training problem bad"):
        method.curate(samples([("bad", "    return 0\n")]), broken)


def test_exec_filter_refuses_before_generation(tmp_path):
    method = make_method("exec_filter")
    items = [code_item("add", "    return a + b\n", [[1, 2]])]
    denied = make_ctx(items, "code", tmp_path)
    with pytest.raises(UserError, match="--allow-code-execution"):
        method.validate(denied.config, denied.source)
    allowed = make_ctx(items, "code", tmp_path, allow_code_execution=True)
    method.validate(allowed.config, allowed.source)
    assert method.sampling(allowed).n_per_prompt == 4
    with pytest.raises(UserError, match="base_input"):
        method.sampling(make_ctx([{**items[0], "base_input": []}], "code", tmp_path, allow_code_execution=True))
    math_ctx = make_ctx(MATH_ITEMS, "math", tmp_path, allow_code_execution=True)
    with pytest.raises(UserError, match="'math'"):
        method.validate(math_ctx.config, math_ctx.source)
    with pytest.raises(UserError, match="entry_point"):
        method.sampling(math_ctx)


# ---- end to end on the parrot --------------------------------------------------------------
def build_parrot(model_cache: Path, dest: Path) -> Path:
    """tiny-llama edited to answer "5" then a newline to any prompt, at any temperature."""
    import torch
    from transformers import AutoModelForCausalLM

    from spd_bench.models import load_tokenizer
    from spd_bench.tiny import tiny_model_dir

    source = tiny_model_dir(model_cache, "llama")
    tokenizer = load_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    (five,) = tokenizer.encode("5", add_special_tokens=False)
    (newline,) = tokenizer.encode("\n", add_special_tokens=False)
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream is just the current token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.zeros_like(model.model.embed_tokens.weight)
        embed[:, 0] = 1.0  # every token but "5" points along dimension 0 ...
        embed[five] = 0.0
        embed[five, 1] = 1.0  # ... and "5" along dimension 1
        head = torch.zeros_like(embed)
        head[five, 0] = 20.0  # after any other token: "5" by a logit margin of 160
        head[newline, 1] = 20.0  # after "5": the newline that ends the sample
        model.model.embed_tokens.weight = torch.nn.Parameter(embed)
        model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


TINYCODE_PLUGIN = '''
"""Tiny code problems in EvalPlus schema; the prompt ends at "return ", so a sample is an expression."""
import sys
from spd_bench.registry import TASKS
from spd_bench.tasks import SOURCES, LoadedData, LoadedSource, SourceSpec, TaskSpec

BODIES = {"five": "5", "half_ten": "10 // 2", "plus_one": "x + 1", "square": "x * x", "negate": "-x"}


def _item(name, body, doc):
    return {"id": f"tinycode-{name}", "prompt": f'def {name}(x):\\n    """{doc}"""\\n    return ', "answer": body + "\\n",
            "label": body, "entry_point": name, "canonical_solution": body + "\\n", "base_input": [[1], [2], [-3]],
            "plus_input": [], "atol": 0}


def train_items(source, ctx):
    return LoadedSource(train=[_item(n, b, "Train.") for n, b in BODIES.items()], calibration=[], layer="synthetic")


def eval_items(task, ctx):
    return LoadedData(items=[_item(n, b, "Evaluate.") for n, b in BODIES.items()], layer="synthetic")


TASKS.register("tinycode", TaskSpec(
    name="tinycode", description="tiny code (test)", kind="code", scorer="lmeval_generate", data="tinycode_data:eval_items",
    training_source="tinycode_train", max_new_tokens=4, stop=("\\n",)), source="plugin")
SOURCES.register("tinycode_train", SourceSpec(
    name="tinycode_train", description="tiny code training problems", loader="tinycode_data:train_items", kind="code",
    max_new_tokens=4, stop=("\\n",)), source="plugin")
sys.modules["tinycode_data"] = sys.modules[__name__]
'''


@pytest.fixture(scope="module")
def parrot(model_cache, tmp_path_factory) -> Path:
    return build_parrot(model_cache, tmp_path_factory.mktemp("parrot") / "parrot")


def run_bench(root: Path, plugin: Path, model: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = spd_bench_cmd("--plugin", str(plugin), "--quiet", "run", "--model", str(model), "--seeds", "1",
                        "--output", str(root / "out"), "--cache-dir", str(root / "cache"), "--no-leaderboard",
                        "--set", "train.epochs=1", *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def load_records(root: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in record_files(root / "out" / "records")}


def corpus(root: Path, record: dict) -> list[dict]:
    path = root / "cache" / "curate" / record["provenance"]["stage_keys"]["curate"] / "corpus.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def arith_run(parrot, tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines-arith")
    result = run_bench(root, ARITH_PLUGIN, parrot, "--methods", "base,ssd,rft,self_consistency", "--tasks", "arith",
                       "--set", "method_options.ssd.eval_temperature=0.25", "--set", "method_options.self_consistency.k=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, load_records(root)


@pytest.mark.slow
def test_ssd_end_to_end(arith_run):
    root, records = arith_run
    record = records["ssd"]
    assert record["method_info"]["external_signal"] is None
    # 16 samples of "5": none empty, floor(1.6) = 1 dropped as "shortest" (a tie, so the first)
    budget = record["method_info"]["budget"]
    assert (budget["n_generated"], budget["n_kept"], budget["n_examples"], budget["epochs"]) == (16, 15, 15, 1)
    assert budget["n_tokens"] > budget["n_examples"]
    assert {row["completion"] for row in corpus(root, record)} == {"5"}
    assert record["eval_settings"]["decoding"]["temperature"] == 0.25
    assert records["base"]["eval_settings"]["decoding"]["temperature"] == 0.0
    assert record["method_info"]["options"]["temperature"] == 1.5


@pytest.mark.slow
def test_rft_end_to_end(arith_run):
    root, records = arith_run
    record = records["rft"]
    assert record["method_info"]["external_signal"] == "labels"
    # arith trains on "a + b" for the first 16 of a in 1..8, b in 1..3; the parrot's "5" is right
    # only for 2+3, 3+2 and 4+1, and then for all 4 samples of each
    kept = Counter(row["prompt_id"] for row in corpus(root, record))
    assert kept == {"arith-2-3": 4, "arith-3-2": 4, "arith-4-1": 4}
    budget = record["method_info"]["budget"]
    assert (budget["n_generated"], budget["n_kept"], budget["n_examples"]) == (64, 12, 12)


@pytest.mark.slow
def test_self_consistency_end_to_end(arith_run):
    root, records = arith_run
    record = records["self_consistency"]
    assert record["method_info"]["external_signal"] is None
    budget = record["method_info"]["budget"]
    assert record["method_info"]["options"]["k"] == 2
    assert (budget["n_generated"], budget["n_kept"], budget["n_examples"]) == (32, 32, 32)  # all agree on 5


@pytest.mark.slow
def test_exec_filter_end_to_end(parrot, tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines-code")
    plugin = root / "tinycode_plugin.py"
    plugin.write_text(TINYCODE_PLUGIN)
    refused = run_bench(root, plugin, parrot, "--methods", "exec_filter", "--tasks", "tinycode")
    assert refused.returncode == 2 and "--allow-code-execution" in refused.stderr
    assert not (root / "cache" / "sample").exists()  # refused before generating anything
    result = run_bench(root, plugin, parrot, "--methods", "base,exec_filter", "--tasks", "tinycode",
                       "--allow-code-execution", "--set", "method_options.exec_filter.k=3")
    assert result.returncode == 0, result.stderr[-3000:]
    record = load_records(root)["exec_filter"]
    assert record["method_info"]["external_signal"] == "tests"
    # every sample is "return 5": it matches the reference outputs of five and half_ten (10 // 2) only
    kept = Counter(row["prompt_id"] for row in corpus(root, record))
    assert kept == {"tinycode-five": 3, "tinycode-half_ten": 3}
    budget = record["method_info"]["budget"]
    assert (budget["n_generated"], budget["n_kept"], budget["n_examples"]) == (15, 6, 6)
