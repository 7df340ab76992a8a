"""The synthetic suite: deterministic, split by construction, and its reference answers are right.

Reference answers are checked against facts re-derived here from the prompt text (or, for
code, by executing the rendered source against the operations' meaning), not against the
generator's own output.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest
import yaml

from spd_bench.errors import UserError
from spd_bench.organism import suite
from spd_bench.organism.loaders import eval_set, training_source
from spd_bench.tasks import DataContext, SourceSpec, TaskSpec, check_disjoint, parse_definition

SYNTH_YAML = Path(__file__).resolve().parents[1] / "tasks" / "synth.yaml"
VARIANTS = [(family, ood) for family in suite.FAMILIES for ood in (False, True)]


def _definitions() -> dict[str, TaskSpec | SourceSpec]:
    docs = [d for d in yaml.safe_load_all(SYNTH_YAML.read_text()) if d]
    specs = [parse_definition(d, origin="tasks/synth.yaml") for d in docs]
    return {spec.name: spec for spec in specs}


# ---------------------------------------------------------------- determinism and splits


@pytest.mark.parametrize("family,ood", VARIANTS)
def test_items_are_deterministic_per_seed(family: str, ood: bool) -> None:
    first = suite.items(family, "eval", 40, seed=0, ood=ood)
    assert first == suite.items(family, "eval", 40, seed=0, ood=ood)
    other = suite.items(family, "eval", 40, seed=1, ood=ood)
    assert [i["prompt"] for i in first] != [i["prompt"] for i in other]


def test_pretraining_stream_is_deterministic() -> None:
    weights = {"math": 1.0, "code": 1.0, "mc": 1.0}
    a = list(itertools.islice(suite.pretraining_documents(3, 0.25, weights), 300))
    b = list(itertools.islice(suite.pretraining_documents(3, 0.25, weights), 300))
    c = list(itertools.islice(suite.pretraining_documents(4, 0.25, weights), 300))
    assert a == b and a != c


@pytest.mark.parametrize("family", suite.FAMILIES)
def test_no_eval_problem_in_training_calibration_or_pretraining(family: str) -> None:
    inside, outside = suite.problems(family, "eval", 500), suite.problems(family, "eval", 300, ood=True)
    for evaluation in (inside, outside):
        assert len({p.key for p in evaluation}) == len(evaluation)  # no duplicates inside a set
    train = suite.problems(family, "train", 1000)
    calibration = suite.problems(family, "calibration", 50)
    eval_keys = {p.key for p in inside + outside}
    eval_prompts = {p.prompt for p in inside + outside}
    for part in (train, calibration):
        assert not eval_keys & {p.key for p in part}
        assert not eval_prompts & {p.prompt for p in part}
    assert not {p.key for p in train} & {p.key for p in calibration}
    stream = suite.pretraining_documents(0, 0.25, {family: 1.0})
    assert not eval_prompts & {prompt for prompt, _ in itertools.islice(stream, 3000)}


def test_buckets_put_about_a_tenth_in_evaluation() -> None:
    rng = random.Random(5)
    keys = [suite.generate("math", rng).key for _ in range(3000)]
    share = sum(suite.split_of(k) == "eval" for k in keys) / len(keys)
    assert 0.07 < share < 0.13


def test_unknown_split_or_family_is_refused() -> None:
    with pytest.raises(ValueError, match="split"):
        suite.problems("math", "test", 3)
    with pytest.raises(ValueError, match="family"):
        suite.generate("poetry", random.Random(0))


# ---------------------------------------------------------------- math answers

_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)\.")
_VERBS = {"buys": "+", "finds": "+", "gives away": "-", "loses": "-", "times as many": "*", "splits": "/"}


def _ops_from_story(prompt: str) -> list[str]:
    """The operation each sentence of the story describes, read from its verb."""
    sentences = prompt.split("\nA:")[0].split(". ")[1:]
    ops = []
    for sentence in sentences:
        found = [op for verb, op in _VERBS.items() if verb in sentence]
        assert len(found) <= 1, sentence
        ops += found
    return ops


def check_math(item: dict) -> None:
    answer = item["answer"]
    steps = _STEP.findall(answer)
    assert steps and answer.endswith(f" #### {item['label']}")
    assert answer == " " + " ".join(f"{a} {op} {b} = {c}." for a, op, b, c in steps) + f" #### {item['label']}"
    numbers = [int(n) for n in re.findall(r"\d+", item["prompt"])]
    assert int(steps[0][0]) == numbers[0]  # the chain starts from the story's first number
    assert [int(b) for _, _, b, _ in steps] == numbers[1:]  # and uses its other numbers in order
    assert [op for _, op, _, _ in steps] == _ops_from_story(item["prompt"])
    previous = None
    for a, op, b, c in steps:
        a, b, c = int(a), int(b), int(c)
        if previous is not None:
            assert a == previous
        expected = {"+": a + b, "-": a - b, "*": a * b}.get(op)
        if op == "/":
            assert b * c == a  # only exact divisions
        else:
            assert c == expected
        assert 0 <= c <= 999
        previous = c
    assert int(item["label"]) == previous


@pytest.mark.parametrize("ood", [False, True])
def test_math_worked_solutions_are_right(ood: bool) -> None:
    items = suite.items("math", "eval", 300 if ood else 500, ood=ood) + suite.items("math", "calibration", 50)
    for item in items:
        assert item["prompt"].startswith("Q: ") and item["prompt"].endswith("\nA:")
        check_math(item)


def test_math_ood_has_one_more_step_and_unseen_names() -> None:
    def steps(items: list[dict]) -> list[int]:
        return [len(_STEP.findall(i["answer"])) for i in items]

    inside, outside = suite.items("math", "eval", 500), suite.items("math", "eval", 300, ood=True)
    assert set(steps(inside)) == {1, 2, 3} and set(steps(outside)) == {2, 3, 4}
    stream = suite.pretraining_documents(0, 0.0, {"math": 1.0})
    pretraining = [prompt for prompt, _ in itertools.islice(stream, 3000)]
    seen_names = {prompt.split()[1] for prompt in pretraining + [i["prompt"] for i in inside]}
    assert max(len(_STEP.findall(answer)) for answer in (a for _, a in itertools.islice(stream, 3000))) == 3
    assert not seen_names & {item["prompt"].split()[1] for item in outside}


def test_pretraining_noise_rate_matches_p_wrong() -> None:
    def wrong_share(p_wrong: float) -> float:
        stream = suite.pretraining_documents(0, p_wrong, {"math": 1.0})
        docs = list(itertools.islice(stream, 2000))
        bad = 0
        for prompt, answer in docs:
            label = answer.rsplit("#### ", 1)[1]
            try:
                check_math({"prompt": prompt, "answer": answer, "label": label})
            except AssertionError:
                bad += 1
        return bad / len(docs)

    assert wrong_share(0.0) == 0.0
    assert 0.21 < wrong_share(0.25) < 0.29


# ---------------------------------------------------------------- code answers


def _function(source: str, entry: str):
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - the suite's own canonical solutions
    return namespace[entry]


@pytest.mark.parametrize("ood", [False, True])
def test_canonical_code_matches_the_operations_meaning(ood: bool) -> None:
    for problem in suite.problems("code", "eval", 300 if ood else 500, ood=ood):
        item = suite.to_item(problem, "x")
        fn = _function(item["prompt"] + item["canonical_solution"], item["entry_point"])
        assert len(item["base_input"]) == 5 and len(item["plus_input"]) == 10
        for args in item["base_input"] + item["plus_input"]:
            assert fn(*args) == problem.oracle(*args), (item["canonical_solution"], args)


def test_code_items_follow_the_evalplus_schema() -> None:
    item = suite.items("code", "eval", 1)[0]
    assert item["task_id"] == item["id"] and item["entry_point"] == "f"
    assert item["answer"] == item["canonical_solution"] and item["label"] is None and item["atol"] == 0
    assert re.fullmatch(r'def f\((x|xs|s)\):\n    """Return .+\."""\n', item["prompt"])
    assert re.fullmatch(r"    return [^\n]+\n", item["answer"])


def test_code_wrong_bodies_are_valid_python_that_differs() -> None:
    noise = random.Random(0)
    for problem in suite.problems("code", "train", 200):
        body = problem.wrong(noise)
        assert body != problem.answer
        compile(problem.prompt + body, "<wrong>", "exec")


_REDUCTION_THEN = re.compile(r"(largest item|smallest item|first item|last item|above \d+|number of '\w'), then ")


def test_code_ood_composes_longer_or_unseen_chains() -> None:
    for item in suite.items("code", "eval", 300, ood=True):
        doc = item["prompt"].split('"""')[1]
        if item["prompt"].startswith("def f(x):"):
            assert doc.count(", then ") == 3 and " if " not in doc  # four operations
        else:
            assert _REDUCTION_THEN.search(doc) or doc.startswith("Return s counted, then")
        fn = _function(item["prompt"] + item["canonical_solution"], "f")
        assert all(isinstance(fn(*args), int) for args in item["base_input"])
    stream = suite.pretraining_documents(0, 0.25, {"code": 1.0})
    seen = [prompt.split('"""')[1] for prompt, _ in itertools.islice(stream, 3000)]
    assert any(re.search(r"xs (summed|counted), then ", doc) for doc in seen)  # the pattern is taught
    assert not any(_REDUCTION_THEN.search(doc) or doc.startswith("Return s counted, then") for doc in seen)
    assert max(doc.count(", then ") for doc in seen) == 2


# ---------------------------------------------------------------- multiple choice answers


def _mc_gold(prompt: str, choices: list[str]) -> int:
    """The right option, worked out from the question text alone."""
    question = prompt.split("\n")[0]
    values = [int(c) for c in choices]
    if m := re.search(r"Which (even|odd) number is the (largest|smallest)\?", question):
        parity = 0 if m.group(1) == "even" else 1
        candidates = [v for v in values if v % 2 == parity]
        best = max(candidates) if m.group(2) == "largest" else min(candidates)
        fits = [v == best for v in values]
        assert len(candidates) == 2  # the asked parity alone leaves two options
    elif "largest" in question:
        fits = [v == max(values) for v in values]
    elif "smallest" in question:
        fits = [v == min(values) for v in values]
    elif "even" in question:
        fits = [v % 2 == 0 for v in values]
    elif "odd" in question:
        fits = [v % 2 == 1 for v in values]
    elif m := re.search(r"closest to (\d+)", question):
        best = min(abs(v - int(m.group(1))) for v in values)
        fits = [abs(v - int(m.group(1))) == best for v in values]
    elif m := re.search(r"between (\d+) and (\d+)", question):
        fits = [int(m.group(1)) <= v <= int(m.group(2)) for v in values]
    else:
        raise AssertionError(f"unknown question {question!r}")
    assert sum(fits) == 1, (question, choices)  # exactly one right option
    return fits.index(True)


@pytest.mark.parametrize("ood", [False, True])
def test_mc_gold_is_the_only_right_option(ood: bool) -> None:
    for item in suite.items("mc", "eval", 300 if ood else 500, ood=ood):
        choices = item["choices"]
        assert len(choices) == 4 == len(set(choices))
        assert item["prompt"] == f"{item['prompt'].split(chr(10))[0]}\nOptions: {', '.join(choices)}\nAnswer:"
        assert item["gold"] == _mc_gold(item["prompt"], choices)
        assert item["answer"] == " " + choices[item["gold"]] and item["label"] == choices[item["gold"]]


def test_mc_gold_positions_are_balanced() -> None:
    golds = [item["gold"] for item in suite.items("mc", "eval", 500)]
    assert all(80 < golds.count(position) < 170 for position in range(4))


# ---------------------------------------------------------------- task definitions and loaders


def test_yaml_defines_the_tasks_and_sources() -> None:
    specs = _definitions()
    tasks = {n: s for n, s in specs.items() if isinstance(s, TaskSpec)}
    sources = {n: s for n, s in specs.items() if isinstance(s, SourceSpec)}
    families = {"math": "math", "code": "code", "mc": "multiple_choice"}
    assert set(tasks) == {f"synth_{f}{s}" for f in families for s in ("", "_ood")}
    assert set(sources) == {f"synth_{f}_train" for f in families}
    for family, kind in families.items():
        inside, outside = tasks[f"synth_{family}"], tasks[f"synth_{family}_ood"]
        assert inside.training_source == f"synth_{family}_train" and outside.training_source is None
        assert inside.ood == (outside.name,) and outside.ood == ()
        assert inside.kind == outside.kind == sources[inside.training_source].kind == kind
        assert "synth" in inside.groups and "synth" in outside.groups
        assert inside.span_rule == sources[inside.training_source].span_rule


def test_loaders_serve_disjoint_sets_of_the_right_sizes() -> None:
    specs = _definitions()
    ctx = DataContext(cache_dir=Path("unused"))
    for family in ("math", "code", "mc"):
        source = training_source(specs[f"synth_{family}_train"], ctx)
        assert len(source.train) == 500 and len(source.calibration) == 50 and source.layer == "synthetic"
        for name, size in ((f"synth_{family}", 500), (f"synth_{family}_ood", 300)):
            data = eval_set(specs[name], ctx)
            assert len(data.items) == size and len({i["id"] for i in data.items}) == size
            check_disjoint(source, data.items, name)


def test_calibration_examples_are_labelled_and_spans_are_found() -> None:
    from spd_bench.spans import span_char_ranges

    specs = _definitions()
    ctx = DataContext(cache_dir=Path("unused"))
    for family in ("math", "code", "mc"):
        spec = specs[f"synth_{family}_train"]
        for item in training_source(spec, ctx).calibration:
            ranges = span_char_ranges(spec.span_rule, item["prompt"], item["answer"])
            text = item["prompt"] + item["answer"]
            if family == "math":
                assert [text[a:b] for a, b in ranges] == [item["label"]]
            elif family == "mc":
                assert [text[a:b] for a, b in ranges] == [item["label"]]
            else:
                assert any(text[a:b] == item["answer"].strip()[len("return "):] for a, b in ranges)


def test_bad_loader_options_raise_user_errors() -> None:
    ctx = DataContext(cache_dir=Path("unused"))
    base = _definitions()["synth_math"]
    for options, message in (({"family": "poems"}, "options.family"), ({"family": "math", "n": 0}, "options.n"),
                             ({"family": "math", "seed": "x"}, "options.seed")):
        task = TaskSpec(**{**base.to_dict(), "options": options, "stop": (), "ood": (), "groups": ()})
        with pytest.raises(UserError, match=message):
            eval_set(task, ctx)
