"""Task and training-source definitions, read from the YAML files in ``tasks/``.

A task is an evaluation set plus how to score it; a training source supplies training prompts
and labelled calibration examples. Tasks that name the same source share one fine-tuned adapter
per method and seed. Loaders are ``"module:function"`` references (the Python escape hatch).

Item schema shared by every loader (one dict per example):
  id (str, unique), prompt (str), answer (str: the reference completion that follows the
  prompt), label (str | None: the final answer, e.g. "16" or "B"), plus per kind:
  multiple_choice: choices (list[str]), gold (int); code: entry_point, canonical_solution,
  base_input, plus_input, atol (EvalPlus schema).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError, did_you_mean
from spd_bench.prompts import PLAIN_PROMPT, PROMPT_FORMATS, plain_prompt
from spd_bench.registry import Registry, resolve_ref, TASKS
from spd_bench.spans import SPAN_RULES

SOURCES: Registry[Any] = Registry("training source", "spd_bench.sources")

KINDS = ("math", "multiple_choice", "code", "nll", "lm_eval")
LM_EVAL_PREFIX = "lm_eval:"  # --tasks lm_eval:NAME: a task or group as lm-eval itself defines it


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    kind: str
    scorer: str
    data: str
    training_source: str | None = None
    span_rule: str = "full"
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    ood: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    prompt_format: str = "auto"  # auto (chat when the model has a template) | plain | chat
    num_fewshot: int | None = 0  # examples from fewshot_source before each prompt, as lm-eval lays them out; None: lm-eval's own
    fewshot_source: str | None = None  # the training source whose training part gives the examples
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    description: str
    loader: str
    kind: str
    span_rule: str = "full"
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class LoadedData:
    """What a loader returns: the items and which data layer served them."""

    items: list[dict[str, Any]]
    layer: str  # "local" | "hub" | "offline-mirror" | "synthetic"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedSource:
    train: list[dict[str, Any]]
    calibration: list[dict[str, Any]]
    layer: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataContext:
    """What loaders may use: the cache folder and the user's ``--data NAME=path`` overrides."""

    cache_dir: Path
    paths: dict[str, str] = field(default_factory=dict)
    seed: int = 0


def _tuple_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def parse_definition(data: dict[str, Any], origin: str) -> TaskSpec | SourceSpec:
    """Turn one YAML mapping into a TaskSpec or SourceSpec, with errors naming the file."""
    data = dict(data)
    try:
        if "task" in data:
            name = data.pop("task")
            spec: TaskSpec | SourceSpec = TaskSpec(name=name, **_tuple_fields(data))
        elif "source" in data:
            name = data.pop("source")
            spec = SourceSpec(name=name, **_tuple_fields(data))
        else:
            raise UserError(f"{origin}: a definition starts with 'task: NAME' or 'source: NAME'")
    except TypeError as exc:
        raise UserError(f"{origin}: {exc}; see tasks/README.md for the fields") from exc
    if spec.kind not in KINDS:
        raise UserError(f"{origin}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
    if spec.span_rule not in SPAN_RULES:
        raise UserError(f"{origin}: span_rule {spec.span_rule!r} is not one of {', '.join(SPAN_RULES)}")
    if isinstance(spec, TaskSpec) and spec.prompt_format not in PROMPT_FORMATS:
        raise UserError(f"{origin}: prompt_format {spec.prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    return spec


def register_definitions(path: Path | Any, source_label: str = "built-in") -> None:
    """Register every task/source YAML under ``path`` (a folder or an importlib resource)."""
    import yaml

    for entry in sorted(path.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        documents = [d for d in yaml.safe_load_all(entry.read_text()) if d]
        for doc in documents:
            spec = parse_definition(doc, origin=f"tasks/{entry.name}")
            registry = TASKS if isinstance(spec, TaskSpec) else SOURCES
            registry.register(spec.name, spec, source=source_label, replace=True)


_loaded = False


def ensure_loaded() -> None:
    """Read the built-in YAML definitions once (cheap: no torch)."""
    global _loaded
    if not _loaded:
        _loaded = True
        register_definitions(resources.files("spd_bench.task_defs"))


def native_task(name: str) -> TaskSpec:
    """``lm_eval:NAME``: lm-eval's own definition decides prompts, data, few-shot and metrics; the
    plan adds the run's lm_eval settings (include paths, few-shot, chat, training source)."""
    lm_eval_name = name[len(LM_EVAL_PREFIX):]
    if not lm_eval_name:
        raise UserError(f"task {name!r} names no lm-eval task; write lm_eval:NAME, e.g. lm_eval:arc_easy")
    return TaskSpec(name=name, description=f"lm-eval's task {lm_eval_name}", kind="lm_eval", scorer="lmeval_native",
                    data="spd_bench.scoring.lmeval_tasks:loader",
                    prompt_format="plain", num_fewshot=None, options={"lm_eval_task": lm_eval_name})


def get_task(name: str) -> TaskSpec:
    if name.startswith(LM_EVAL_PREFIX):
        return native_task(name)
    ensure_loaded()
    spec = TASKS.get(name)
    if callable(spec) and not isinstance(spec, TaskSpec):
        spec = spec()
    if not isinstance(spec, TaskSpec):
        raise UserError(f"task entry {name!r} is not a TaskSpec; plugins register TaskSpec objects")
    return spec


def get_source(name: str) -> SourceSpec:
    ensure_loaded()
    spec = SOURCES.get(name)
    if callable(spec) and not isinstance(spec, SourceSpec):
        spec = spec()
    return spec


def groups() -> dict[str, list[str]]:
    """Group name -> member tasks, from each task's ``groups`` field."""
    ensure_loaded()
    result: dict[str, list[str]] = {}
    for name in TASKS.names():
        for group in get_task(name).groups:
            result.setdefault(group, []).append(name)
    return result


def expand_tasks(names: list[str]) -> list[str]:
    """Resolve task names and group names (``code``, ``math``, ``paper``...), keeping order."""
    ensure_loaded()
    known_groups = groups()
    result: list[str] = []
    for name in names:
        members = known_groups.get(name)
        if name.startswith(LM_EVAL_PREFIX):  # checked against lm-eval's own index by the plan
            members = [name]
        elif members is None and name not in TASKS:
            hint = did_you_mean(name, TASKS.names() + sorted(known_groups))  # tasks and groups alike
            raise UserError(
                f"unknown task {name!r}: {hint}known tasks: {', '.join(TASKS.names())};"
                f" groups: {', '.join(sorted(known_groups))}"
            )
        for member in members or [name]:
            if member not in result:
                result.append(member)
    return result


def load_eval(task: TaskSpec, ctx: DataContext, limit: int | None = None) -> LoadedData:
    """Evaluation items for a task; ``limit`` takes a deterministic subset (the first N by id order)."""
    loader = resolve_ref(task.data)
    data: LoadedData = loader(task, ctx)
    if limit is not None:
        data = LoadedData(items=data.items[:limit], layer=data.layer, details={**data.details, "limit": limit})
    return data


def load_source(source: SourceSpec, ctx: DataContext) -> LoadedSource:
    loader = resolve_ref(source.loader)
    return loader(source, ctx)


def check_disjoint(source: LoadedSource, eval_items: list[dict[str, Any]], task_name: str) -> None:
    """Refuse a run where an evaluation prompt also appears in training or calibration."""
    eval_prompts = {item["prompt"] for item in eval_items}
    for part in ("train", "calibration"):
        clash = [item["id"] for item in getattr(source, part) if item["prompt"] in eval_prompts]
        if clash:
            raise UserError(
                f"{len(clash)} {part} prompts of the training source also appear in {task_name}'s evaluation set"
                f" (e.g. {clash[0]}); fix the data split"
            )


def add_fewshot(task: TaskSpec, items: list[dict[str, Any]], pool: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Each item's prompt after ``n`` solved examples from ``pool``, laid out as lm-eval lays out a
    few-shot context: prompt + target delimiter + answer + few-shot delimiter, per example.

    The examples of an item are a seeded draw keyed by the task and the item's id, so an item
    gets the same context whatever ``--limit`` or order; ``fewshot`` keeps their ids. The pool
    must be disjoint from the evaluation set (``check_disjoint``).
    """
    if n == 0:
        return items
    import random

    candidates = sorted(pool, key=lambda ex: str(ex["id"]))
    if len(candidates) < n:
        raise UserError(f"task {task.name}: num_fewshot {n} needs {n} examples, {task.fewshot_source} has"
                        f" {len(candidates)}; lower it with --set lm_eval.num_fewshot.{task.name}=N")
    target_delimiter = task.options.get("target_delimiter", " ")
    fewshot_delimiter = task.options.get("fewshot_delimiter", "\n\n")
    result = []
    for item in items:
        examples = random.Random(f"{task.name}:{item['id']}").sample(candidates, n)
        context = "".join(_solved(ex, target_delimiter) + fewshot_delimiter for ex in examples)
        # the bare prompt stays under plain_prompt: code is tested as it continues that, not the examples
        result.append({**item, "prompt": context + item["prompt"], PLAIN_PROMPT: plain_prompt(item),
                       "fewshot": [str(ex["id"]) for ex in examples]})
    return result


def _solved(example: dict[str, Any], delimiter: str) -> str:
    """An example's prompt and reference answer (items' answers already start with the delimiter)."""
    answer = str(example["answer"])
    return example["prompt"] + (answer if answer.startswith(delimiter) else delimiter + answer)
