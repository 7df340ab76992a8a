"""lm-eval's own tasks (``--tasks lm_eval:NAME``) scored on the run's models.

lm-eval's task definition decides everything: data, prompts, few-shot context, filters and
metrics (``TaskManager(include_path=...).load``); spd-bench only hands it the model, through
the backend's lm-eval LM, and keeps what lm-eval reports. Seeds and the few-shot rule are those
of lm-eval's ``simple_evaluate``, so a number here is the number ``lm_eval`` prints for the
same model, task and limit. Every lm-eval scoring (catalogue tasks too) keeps lm-eval's results
JSON and per-sample JSONL in the layout ``lm_eval --output_path ... --log_samples`` writes.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spd_bench.config import stable_hash
from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend, Handle

RESULTS_FILE = "lm_eval_results.json"
SAMPLES_PREFIX = "lm_eval_samples_"  # + lm-eval's task name + .jsonl, one file per task as lm-eval writes them
SEEDS = {"random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234}  # simple_evaluate's defaults


def check_include_paths(paths: list[str]) -> None:
    """Every task YAML under the include paths parses with lm-eval's own loader.

    lm-eval skips a file it cannot read (logged at debug level), so a typo would otherwise show
    up only as "unknown task"; this names the file instead.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    for folder in paths:
        root = Path(folder)
        if not root.is_dir():
            raise UserError(f"--include-path {folder}: no such folder; pass a folder of lm-eval task YAML files")
        for path in sorted(root.glob("**/*.yaml")):
            try:
                load_yaml(path, resolve_func=False, recursive=True)
            except Exception as exc:  # noqa: BLE001 - yaml, include and type errors alike
                reason = " ".join(str(exc).split())[:200]
                raise UserError(f"lm-eval task file {path} cannot be read ({type(exc).__name__}: {reason}); fix it"
                                " or move it out of the include path") from exc


@functools.cache
def task_manager(include_path: tuple[str, ...] = ()) -> Any:
    """lm-eval's task index with the user's folders (built once per process: it reads every YAML)."""
    from lm_eval.tasks import TaskManager

    quiet()
    return TaskManager(include_path=list(include_path) or None)


def check_names(names: list[str], include_path: list[str]) -> None:
    """Each name is an lm-eval task, group or tag; else a one-line error with lm-eval's close matches."""
    import difflib

    known = task_manager(tuple(include_path)).all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            hint = f"did you mean {', '.join('lm_eval:' + c for c in close)}? " if close else ""
            where = f" (with --include-path {', '.join(include_path)})" if include_path else ""
            raise UserError(f"unknown lm-eval task {name!r}{where}: {hint}see `spd-bench list tasks --lm-eval`")


def listing(include_path: list[str]) -> list[tuple[str, str]]:
    """(name, group | tag | task) for everything lm-eval offers, the user's folders included."""
    manager = task_manager(tuple(include_path))
    groups, tags = set(manager.all_groups), set(manager.all_tags)
    return [(name, "group" if name in groups else "tag" if name in tags else "task") for name in manager.all_tasks]


def _load(task: Any) -> dict[str, Any]:
    """lm-eval's loaded task dict for a ``lm_eval:NAME`` spec, with the run's few-shot setting applied."""
    name = task.options["lm_eval_task"]
    include_path = list(task.options.get("include_path", []))
    check_names([name], include_path)
    try:
        loaded = task_manager(tuple(include_path)).load([name])
    except Exception as exc:  # noqa: BLE001 - lm-eval raises what its dataset layer raises
        raise UserError(f"lm-eval could not load task {name}: {' '.join(str(exc).split())[:300]}") from exc
    for leaf in loaded["tasks"].values():  # simple_evaluate's rule: an explicit 0 in the YAML stays 0
        if task.num_fewshot is not None and leaf.get_config("num_fewshot") != 0:
            leaf.set_config(key="num_fewshot", value=task.num_fewshot)
        elif leaf.get_config("num_fewshot") is None:
            leaf.set_config(key="num_fewshot", value=0)
    return loaded


LM_EVAL_MODEL_BACKENDS = ("hf",)  # backends whose lm-eval model is lm-eval's own (HFLM): chat templates, rolling likelihoods


def check_servable(task: Any, backend: str | None = None) -> None:
    """Refuse an ``lm_eval:`` task the run cannot score, before any work: tasks that run generated code
    in this process (lm-eval's ``unsafe_code``), and once the backend is known (``backend``), on one
    answering through ``BackendLM``, rolling log-likelihoods and chat templates (lm-eval's own HF
    model has both)."""
    name = task.options["lm_eval_task"]
    own_model = backend is None or backend in LM_EVAL_MODEL_BACKENDS
    for leaf_name, leaf in sorted(_load(task)["tasks"].items()):
        if getattr(leaf, "UNSAFE_CODE", False):
            raise UserError(f"lm-eval task {leaf_name} (lm_eval:{name}) runs model-written code unsandboxed; score"
                            " code with spd-bench's sandboxed tasks instead (--tasks humaneval or mbpp)")
        if not own_model and leaf.OUTPUT_TYPE == "loglikelihood_rolling":
            raise UserError(f"lm-eval task {leaf_name} (lm_eval:{name}) needs rolling log-likelihoods, which the"
                            f" {backend} backend does not compute; run it with --backend hf")
    if not own_model and task.options.get("apply_chat_template"):
        raise UserError(f"lm_eval.apply_chat_template needs lm-eval's hf model; the {backend} backend has no chat"
                        " template support: use --backend hf or set lm_eval.apply_chat_template false")


def load_docs(task: Any, limit: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One item per evaluated document (``limit`` per lm-eval task, as lm-eval applies it): its task,
    index and content hash, and its task's resolved config hash, so editing the YAML or its data
    changes the items (and the score key); plus details for the record."""
    from lm_eval.utils import hash_string

    loaded = _load(task)
    items: list[dict[str, Any]] = []
    configs: dict[str, str] = {}
    for leaf_name, leaf in sorted(loaded["tasks"].items()):
        configs[leaf_name] = stable_hash(leaf.dump_config())
        docs = list(leaf.eval_docs)
        for index, doc in enumerate(docs[:limit] if limit is not None else docs):
            items.append({"id": f"{leaf_name}/{index}", "task": leaf_name, "doc_id": index, "config": configs[leaf_name],
                          "doc_hash": hash_string(json.dumps(doc, sort_keys=True, default=str))})
    if not items:
        raise UserError(f"lm-eval task {task.options['lm_eval_task']} has no documents to evaluate")
    details = {"lm_eval_task": task.options["lm_eval_task"], "lm_eval_tasks": sorted(loaded["tasks"]),
               "config_hashes": configs, "include_path": list(task.options.get("include_path", []))}
    return items, details


def loader(task: Any, ctx: Any) -> Any:
    """The task's ``data`` loader (e.g. for ``spd-bench prefetch``): every document, as lm-eval loads them."""
    from spd_bench.tasks import LoadedData

    items, details = load_docs(task, None)
    return LoadedData(items=items, layer="lm-eval", details=details)


def evaluate(lm: Any, loaded: dict[str, Any], seeds: dict[str, int], *, limit: int | None = None,
             system_instruction: str | None = None, apply_chat_template: bool = False,
             fewshot_as_multiturn: bool = False) -> dict[str, Any]:
    """lm-eval's ``evaluate`` on loaded tasks, seeded as ``simple_evaluate`` seeds it with ``seeds``
    (its four seeds by name; ``lm_eval_files`` records the same ones).

    ``simple_evaluate`` itself would add run metadata spd-bench does not keep, at a cost paid on
    every score: torch's environment report and a ``git describe`` that prints "fatal: not a git
    repository" outside a checkout.
    """
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    quiet()
    random.seed(seeds["random_seed"])
    np.random.seed(seeds["numpy_seed"])
    torch.manual_seed(seeds["torch_seed"])
    for leaf in loaded["tasks"].values():
        leaf.set_fewshot_seed(seed=seeds["fewshot_seed"])
    results = lm_eval_evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=0, log_samples=True,
                               system_instruction=system_instruction, apply_chat_template=apply_chat_template,
                               fewshot_as_multiturn=fewshot_as_multiturn)
    if results is None:
        raise RuntimeError("lm-eval returned no results")
    return results


def lm_eval_files(results: dict[str, Any], run_config: dict[str, Any], seeds: dict[str, int]) -> dict[str, str]:
    """lm-eval's output files, as ``lm_eval --output_path --log_samples`` lays them out: the results
    JSON (results, group_subtasks, configs, versions, n-shot, higher_is_better, n-samples,
    config, task_hashes) and one samples JSONL per task, serialised with lm-eval's own helpers.
    ``seeds`` are those ``evaluate`` was given."""
    from lm_eval.utils import handle_non_serializable, hash_string, sanitize_list

    samples = results.get("samples", {})
    aggregated = {key: value for key, value in results.items() if key != "samples"}
    aggregated["config"] = {**run_config, "bootstrap_iters": 0, **seeds}
    aggregated["task_hashes"] = {
        name: hash_string("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in rows))
        for name, rows in samples.items()
    }
    files = {RESULTS_FILE: json.dumps(aggregated, indent=2, default=handle_non_serializable, ensure_ascii=False)}
    for name, rows in samples.items():
        lines = []
        for sample in rows:
            arguments = {f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)}
                         for i, arg in enumerate(sample["arguments"])}
            line = {**sample, "arguments": arguments, "resps": sanitize_list(sample["resps"]),
                    "filtered_resps": sanitize_list(sample["filtered_resps"]), "target": str(sample["target"])}
            lines.append(json.dumps(line, default=handle_non_serializable, ensure_ascii=False) + "\n")
        files[f"{SAMPLES_PREFIX}{name}.jsonl"] = "".join(lines)
    return files


def metric_name(key: str, prefix: str = "") -> str:
    """lm-eval's ``metric,filter`` key as spd-bench names it: ``metric/filter`` (``metric`` for filter none)."""
    return prefix + key.replace(",none", "").replace(",", "/")


def numbers(entry: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric metrics of one results entry (no stderr, alias or sample counts)."""
    return {metric_name(key, prefix): float(value) for key, value in entry.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key
            and key not in ("alias", "sample_len", "sample_count")}


def _primary(leaf: Any) -> tuple[str, str]:
    """(metric, filter) a task reports first: its metric_list's first entry after its first filter."""
    metrics = leaf.get_config("metric_list") or [{"metric": next(iter(leaf.aggregation()))}]
    filters = leaf.get_config("filter_list") or [{"name": "none"}]
    return str(metrics[0]["metric"]), str(filters[0].get("name", "none"))


class LMEvalNative:
    """Scores ``lm_eval:NAME`` through lm-eval's own task definition."""

    def score_model(self, backend: Backend, handle: Handle, task: Any, items: list[dict[str, Any]],
                    settings: ScoreSettings) -> ScoreOutput:
        with backend.lm_eval_model(handle, batch_size=settings.batch_size) as lm:
            return self.score_lm(lm, task, settings)

    def score_lm(self, lm: Any, task: Any, settings: ScoreSettings) -> ScoreOutput:
        """Score any lm-eval LM (a model, or stored responses replayed) on the task."""
        options = task.options
        loaded = _load(task)
        limit = options.get("limit")
        lm_settings = {"num_fewshot": task.num_fewshot, "apply_chat_template": bool(options.get("apply_chat_template")),
                       "system_instruction": options.get("system_instruction"),
                       "fewshot_as_multiturn": bool(options.get("fewshot_as_multiturn")),
                       "batch_size": settings.batch_size, "limit": limit}
        results = evaluate(lm, loaded, SEEDS, limit=limit, system_instruction=lm_settings["system_instruction"],
                           apply_chat_template=lm_settings["apply_chat_template"],
                           fewshot_as_multiturn=lm_settings["fewshot_as_multiturn"])
        name = options["lm_eval_task"]
        leaves = sorted(loaded["tasks"])
        metrics = numbers(results["results"].get(name, {}))
        if len(leaves) > 1 or not metrics:  # a group's tasks, or a tag's (or a group's without an aggregate)
            for leaf in leaves:
                metrics.update(numbers(results["results"][leaf], prefix=f"{leaf}:"))
        metric, filter_name = _primary(loaded["tasks"][leaves[0]])
        primary, source = metric_name(f"{metric},{filter_name}"), name
        if primary not in metrics:
            primary, source = metric_name(f"{metric},{filter_name}", prefix=f"{leaves[0]}:"), leaves[0]
        if primary not in metrics:
            raise UserError(f"lm-eval task {name} reported no {metric} ({filter_name}); its results: {sorted(metrics)}")
        per_item = []
        for leaf in leaves:
            for sample in sorted(results["samples"][leaf], key=lambda s: s["doc_id"]):
                value = sample.get(metric) if sample["filter"] == filter_name else None
                if isinstance(value, (int, float)):  # corpus-level metrics (bleu, f1...) have no per-document score
                    per_item.append({"doc_id": len(per_item), "task": leaf, "lm_eval_doc_id": sample["doc_id"],
                                     "response": str(sample["resps"][0][0]) if sample["resps"] else "",
                                     "target": str(sample["target"]), "score": float(value)})
        higher = results.get("higher_is_better", {}).get(source, {}).get(metric, True)
        n_shot = {key: int(value) for key, value in results.get("n-shot", {}).items()}
        return ScoreOutput(
            metrics=metrics, primary_metric=primary, higher_is_better=bool(higher), per_item=per_item,
            native={"lm_eval_results": clean(results["results"]), "lm_eval_settings": lm_settings, "n-shot": n_shot,
                    "lm_eval_task_configs": {leaf: clean(loaded["tasks"][leaf].dump_config()) for leaf in leaves},
                    # the decoding lm-eval used, per task (None: scored by likelihood), in place of the run's
                    "lm_eval_generation_kwargs": {leaf: clean(loaded["tasks"][leaf].get_config("generation_kwargs"))
                                                  if loaded["tasks"][leaf].OUTPUT_TYPE == "generate_until" else None
                                                  for leaf in leaves},
                    "lm_eval_version": version()},
            files=lm_eval_files(results, {"model": "spd-bench in-memory model", **lm_settings}, SEEDS),
        )

    def score_responses(self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]],
                        settings: ScoreSettings) -> ScoreOutput:
        raise UserError(f"task {task.name} is lm-eval's own: score it from an lm-eval samples file"
                        " (lm_eval --log_samples, or the .lm_eval_samples_*.jsonl beside a record)")


def clean(value: Any) -> Any:
    """numpy scalars and other lm-eval values -> plain JSON values; a callable (a metric function in
    a task config) is named where it lives, so the value is the same in every process."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((clean(v) for v in value), key=str)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return f"{value.__module__}:{value.__qualname__}"
    return str(value)


def version() -> str:
    """The installed lm-eval's version, recorded beside its numbers."""
    from importlib.metadata import version as installed

    return installed("lm_eval")


def quiet() -> None:
    """lm-eval warns that an in-memory model is not a string; that is how spd-bench calls it."""
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)


# ---- stored lm-eval samples -------------------------------------------------------------------

def is_sample_row(row: Any) -> bool:
    """A line of lm-eval's ``--log_samples`` JSONL (doc_id, doc and the responses)."""
    return isinstance(row, dict) and "doc_id" in row and "doc" in row and ("resps" in row or "filtered_resps" in row)


def doc_hash(doc: Any) -> str:
    """A document's hash as lm-eval logs it with each sample (``doc_hash``)."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def samples_file_task(path: str) -> str | None:
    """The task an lm-eval samples file is of, by its name: ``samples_<task>_<date>.jsonl`` as
    ``lm_eval --log_samples`` names it, ``lm_eval_samples_<task>.jsonl`` beside a record; else None."""
    name = Path(path).name
    own = re.fullmatch(rf"{re.escape(SAMPLES_PREFIX)}(.+)\.jsonl", name)
    cli = re.fullmatch(r"samples_(.+)_\d{4}-\d{2}-\d{2}T[0-9.\-]+\.jsonl", name)
    match = own or cli
    return match.group(1) if match else None


@functools.cache
def _stored_answers_class() -> type:
    from lm_eval.api.model import LM

    class _StoredAnswersLM(LM):
        """Answers lm-eval's requests with stored answers, so lm-eval's filters and metrics run on them.

        ``answer(request, k)`` gives the k-th copy of a request (lm-eval lists a request once per
        repeat, the same object each time) its answer: a text, (log-likelihood, is greedy), or a
        rolling log-likelihood, by the request's type.
        """

        def __init__(self, answer: Callable[[Any, int], Any]) -> None:
            super().__init__()
            self._answer = answer

        def _answers(self, requests: list[Any]) -> list[Any]:
            copies: dict[int, int] = {}
            answers = []
            for request in requests:
                k = copies.get(id(request), 0)
                copies[id(request)] = k + 1
                answers.append(self._answer(request, k))
            return answers

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            return [str(answer) for answer in self._answers(requests)]

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            return [(float(logprob), bool(greedy)) for logprob, greedy in self._answers(requests)]

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            return [float(answer) for answer in self._answers(requests)]

    return _StoredAnswersLM


def StoredAnswersLM(answer: Callable[[Any, int], Any]) -> Any:
    """An lm-eval LM over ``answer(request, copy)`` (the class is built lazily: lm-eval imports slowly)."""
    return _stored_answers_class()(answer)


def SampleFileLM(rows: list[dict[str, Any]], origin: str) -> Any:
    """lm-eval's requests answered with the raw responses an lm-eval samples file holds. A request is
    answered only by the row of its own task and document (the file's task, by its name, and the
    row's ``doc_hash``); the k-th copy of a request repeated k times gets the row's k-th response."""
    by_doc: dict[int, dict[str, Any]] = {}
    for row in rows:  # one row per filter, the same document and responses in each
        by_doc.setdefault(int(row["doc_id"]), row)
    file_task = samples_file_task(origin)

    def answer(request: Any, copy: int) -> Any:
        if file_task is not None and request.task_name != file_task:
            raise UserError(f"{origin} holds samples of lm-eval task {file_task}, not of {request.task_name};"
                            f" give the samples file of {request.task_name}")
        row = by_doc.get(int(request.doc_id))
        if row is None:
            raise UserError(f"{origin}: no response for doc_id {request.doc_id};"
                            " the samples file must cover every document scored (see --limit)")
        if str(row.get("doc_hash") or doc_hash(row["doc"])) != doc_hash(request.doc):
            raise UserError(f"{origin}: doc_id {request.doc_id} is not the document {request.task_name} has there"
                            " (doc_hash differs); score the file on the task, data and --include-path it was"
                            " written with")
        resps = row.get("resps") or []
        if request.idx >= len(resps) or copy >= len(resps[request.idx]):
            raise UserError(f"{origin}: no response {copy} to request {request.idx} of doc_id {request.doc_id};"
                            " score the file with the task settings it was written with")
        value = resps[request.idx][copy]
        if request.request_type == "loglikelihood":
            return float(value[0]), str(value[1]) == "True"  # lm-eval logs the pair's flag as text
        return value

    return StoredAnswersLM(answer)
