"""Typed run configuration: YAML in, flag overrides, validation, a stable hash out.

Defaults are the SPD paper's (see docs/spd-method.md); the built-in organism gets its own
training preset, because paper-scale learning rates do nothing on a 1M-parameter model. Every
value actually used is stored with every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError, did_you_mean
from spd_bench.prompts import PROMPT_FORMATS


@dataclass
class Decoding:
    """Sampling settings for generating training data (not for evaluation)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int | None = None  # None: the task's default generation length


@dataclass
class TrainConfig:
    """LoRA fine-tuning settings shared by every method (paper defaults); docs/training.md."""

    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = 1e-5
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_ratio: float = 0.0
    epochs: int = 5
    batch_size: int = 8  # the effective batch: per_device_batch_size x gradient_accumulation_steps x processes
    max_length: int = 1024
    precision: str = "auto"  # auto: bf16 autocast on a GPU that supports it, fp32 elsewhere | fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    per_device_batch_size: int | None = None  # None: batch_size / (gradient_accumulation_steps x processes)
    packing: bool = False  # pack several examples into each max_length row (TRL's best-fit packing)
    save_steps: int = 0  # a checkpoint every N optimizer steps, resumed after a crash; 0: none
    report_to: list[str] = field(default_factory=list)  # experiment trackers, e.g. [trackio]; none by default

    def per_device(self, processes: int = 1) -> int:
        """The batch each process takes per forward pass; a UserError when the sizes do not divide."""
        split = self.gradient_accumulation_steps * processes
        across = f"gradient_accumulation_steps x processes = {self.gradient_accumulation_steps} x {processes}"
        if self.per_device_batch_size is None:
            if self.batch_size % split:
                _bad("train.batch_size", self.batch_size, f"a multiple of {across}")
            return self.batch_size // split
        if self.per_device_batch_size * split != self.batch_size:
            _bad("train.per_device_batch_size", self.per_device_batch_size,
                 f"train.batch_size / ({across}) = {self.batch_size / split:g}, or leave it out")
        return self.per_device_batch_size


@dataclass
class ScoreConfig:
    """How every model is scored (the same for every method)."""

    timeout_s: float = 10.0  # per code problem: running its reference solution for the expected outputs
    memory_mb: int = 2048  # memory limit of each sandboxed process (references, candidates)
    n_samples: int = 1  # completions per code problem; > 1 reports pass@k and needs sampled evaluation


@dataclass
class VLLMConfig:
    """Settings of the vLLM backend (--backend vllm; docs/backends.md). Ignored by the hf backend."""

    tensor_parallel_size: int = 1  # GPUs one engine spans
    gpu_memory_utilization: float = 0.85  # share of each GPU the engine may take (weights, KV cache)
    max_model_len: int | None = None  # None: the model's own maximum
    cpu_kvcache_space_gb: float = 1.0  # KV cache of the CPU build (VLLM_CPU_KVCACHE_SPACE), GiB
    max_lora_rank: int = 16  # the largest LoRA rank the engine accepts (>= train.lora_r)


@dataclass
class LMEvalConfig:
    """lm-eval settings of a run (docs/interop.md, "lm-eval tasks"): where the user's own lm-eval
    tasks live, and the few-shot and chat settings lm-eval applies to its native tasks."""

    include_path: list[str] = field(default_factory=list)  # folders of lm-eval task YAML, searched for lm_eval:NAME
    num_fewshot: int | dict[str, int] | None = None  # None: each task's own; N: every task; {task: N}: per task
    apply_chat_template: bool = False  # lm_eval:NAME tasks: lm-eval wraps prompts in the model's chat template
    system_instruction: str | None = None  # lm_eval:NAME tasks: lm-eval's system prompt
    fewshot_as_multiturn: bool = False  # lm_eval:NAME tasks: few-shot examples as chat turns (needs the template)
    batch_size: int | str | None = None  # lm_eval:NAME tasks: N, or auto (lm-eval's search, hf backend); None: eval_batch_size
    training_source: dict[str, str] = field(default_factory=dict)  # lm_eval:NAME -> training source it is in-domain for


@dataclass
class ReportConfig:
    """How the leaderboard words comparisons (docs/statistics.md). It changes no number, so it is not hashed."""

    equivalence_margin: float = 2.0  # points: "equivalent" only where a difference's 95% interval lies inside ±margin


ORGANISM_TRAIN = {"lr": 1e-3, "epochs": 3, "batch_size": 16, "lora_alpha": 16, "lora_dropout": 0.0, "max_length": 256}
"""Training preset for the built-in organism, identical for every method (docs/organism.md).

No LoRA dropout: on a CPU its random masks cost a quarter of every fine-tuning step, and
three epochs over a few hundred short examples leave nothing for it to regularise.
"""


DEFAULT_HUB_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
"""The model a run uses for real tasks when none is given: the SPD paper's smallest."""

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRACKERS = {  # train.report_to name -> (module to find, pip package): the trainer's integrations
    "trackio": ("trackio", "trackio"), "wandb": ("wandb", "wandb"), "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"), "comet_ml": ("comet_ml", "comet-ml"), "clearml": ("clearml", "clearml"),
    "neptune": ("neptune", "neptune"), "dvclive": ("dvclive", "dvclive"), "swanlab": ("swanlab", "swanlab"),
    "codecarbon": ("codecarbon", "codecarbon"),
}


@dataclass
class RunConfig:
    model: str = "organism"  # when not given: organism for the synthetic suite, DEFAULT_HUB_MODEL otherwise
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"  # auto: vllm on a GPU when installed and able to serve the run, else hf
    tasks: list[str] = field(default_factory=lambda: ["synth"])
    methods: list[str] = field(default_factory=lambda: ["base", "raw_sd", "spd", "spd_random", "ssd"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    limit: int | None = None
    # auto: each task's own format, where "auto" means the model's chat template when its tokenizer
    # has one, plain text otherwise; plain | chat: every task in that format.
    prompt_format: str = "auto"
    n_train: int | None = None
    gen_batch_size: int = 32
    eval_batch_size: int = 32
    decoding: Decoding = field(default_factory=Decoding)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    lm_eval: LMEvalConfig = field(default_factory=LMEvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    allow_code_execution: bool = False
    output_dir: str = "results"
    cache_dir: str = ".spd_cache"

    def hash(self) -> str:
        """Stable hash of everything that can change a number (not where files go)."""
        payload = {k: v for k, v in to_dict(self).items() if k not in _NOT_HASHED}
        return stable_hash(payload)

    def with_absolute_paths(self) -> "RunConfig":
        """The same config with its folders and data files as absolute paths (relative: to the
        current folder), so that no later step reads them relative to another working folder."""
        return dataclasses.replace(self, output_dir=absolute_path(self.output_dir),
                                   cache_dir=absolute_path(self.cache_dir),
                                   data={name: absolute_path(path) for name, path in self.data.items()},
                                   lm_eval=dataclasses.replace(
                                       self.lm_eval, include_path=[absolute_path(p) for p in self.lm_eval.include_path]))

    def validate(self) -> None:
        """Check every value against its allowed range before any data or model is loaded.

        Checks that need the model's shape (layers, K/V widths) or a method's options live with
        the method (``Method.validate``); this covers the fields every run has.
        """
        import re

        for name in ("methods", "tasks", "seeds"):
            if not getattr(self, name):
                raise UserError(f"no {name} given; pass --{name}, e.g. --{name} {','.join(map(str, getattr(RunConfig(), name)))}")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            _bad("device", self.device, "auto, cpu, mps, cuda or cuda:N")
        _choice("dtype", self.dtype, DTYPES)
        if not self.backend:
            _bad("backend", self.backend, "auto, hf, vllm or a backend a plugin registers")
        _at_least("vllm.tensor_parallel_size", self.vllm.tensor_parallel_size, 1)
        _in_range("vllm.gpu_memory_utilization", self.vllm.gpu_memory_utilization, 0.0, 1.0, "in (0, 1]", low_open=True)
        _in_range("vllm.cpu_kvcache_space_gb", self.vllm.cpu_kvcache_space_gb, 0.0, None, "GiB above 0", low_open=True)
        if self.vllm.max_model_len is not None:
            _at_least("vllm.max_model_len", self.vllm.max_model_len, 2)
        if self.vllm.max_lora_rank < self.train.lora_r:
            _bad("vllm.max_lora_rank", self.vllm.max_lora_rank, f"at least train.lora_r = {self.train.lora_r}")
        _choice("prompt_format", self.prompt_format, PROMPT_FORMATS)
        _at_least("gen_batch_size", self.gen_batch_size, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        if self.limit is not None:
            _at_least("limit", self.limit, 1, hint="; leave it out to evaluate every item")
        if self.n_train is not None:
            _at_least("n_train", self.n_train, 1, hint="; leave it out to train on every prompt")
        for seed in self.seeds:
            _at_least("seeds", seed, 0)
        decoding = self.decoding
        _in_range("decoding.temperature", decoding.temperature, 0.0, None, "0 (greedy) or more")
        _in_range("decoding.top_p", decoding.top_p, 0.0, 1.0, "in (0, 1]", low_open=True)
        _at_least("decoding.top_k", decoding.top_k, 0, hint=" (0 turns top-k off)")
        if decoding.max_new_tokens is not None:
            _at_least("decoding.max_new_tokens", decoding.max_new_tokens, 1, hint="; leave it out for each task's default")
        train = self.train
        _in_range("train.lr", train.lr, 0.0, None, "a finite number above 0", low_open=True)
        _in_range("train.weight_decay", train.weight_decay, 0.0, None, "a finite number, 0 or more")
        _in_range("train.lora_dropout", train.lora_dropout, 0.0, 1.0, "in [0, 1)", high_open=True)
        _in_range("train.lora_alpha", train.lora_alpha, 0.0, None, "above 0", low_open=True)
        _in_range("train.warmup_ratio", train.warmup_ratio, 0.0, 1.0, "in [0, 1]")
        _at_least("train.lora_r", train.lora_r, 1)
        _at_least("train.epochs", train.epochs, 1)
        _at_least("train.batch_size", train.batch_size, 1)
        _at_least("train.max_length", train.max_length, 2)
        _choice("train.schedule", train.schedule, SCHEDULES)
        _choice("train.precision", train.precision, PRECISIONS)
        _at_least("train.gradient_accumulation_steps", train.gradient_accumulation_steps, 1)
        if train.per_device_batch_size is not None:
            _at_least("train.per_device_batch_size", train.per_device_batch_size, 1,
                      hint="; leave it out for train.batch_size / gradient_accumulation_steps")
        train.per_device(int(os.environ.get("WORLD_SIZE", "1")))  # `accelerate launch` sets WORLD_SIZE
        _at_least("train.save_steps", train.save_steps, 0, hint=" (0: no checkpoints)")
        _check_trackers(train.report_to)
        _in_range("score.timeout_s", self.score.timeout_s, 0.0, None, "a finite number of seconds above 0", low_open=True)
        _at_least("score.memory_mb", self.score.memory_mb, 64)
        _at_least("score.n_samples", self.score.n_samples, 1)
        if not train.target_modules:
            _bad("train.target_modules", train.target_modules, "at least one module name, e.g. q_proj,v_proj")
        _check_lm_eval(self.lm_eval)
        _in_range("report.equivalence_margin", self.report.equivalence_margin, 0.0, 100.0, "points in (0, 100]",
                  low_open=True)


def _check_lm_eval(section: LMEvalConfig) -> None:
    """The lm_eval section's values (task names and include paths are checked by the plan)."""
    fewshot = section.num_fewshot
    for name, value in (fewshot.items() if isinstance(fewshot, dict) else [("", fewshot)]):
        if value is not None:
            _at_least("lm_eval.num_fewshot" + (f".{name}" if name else ""), value, 0, hint="; leave it out for each task's own")
    size = section.batch_size
    if isinstance(size, str) and size != "auto" or isinstance(size, int) and size < 1:
        _bad("lm_eval.batch_size", size, "auto or an integer >= 1; leave it out for eval_batch_size")
    if section.fewshot_as_multiturn and not section.apply_chat_template:
        _bad("lm_eval.fewshot_as_multiturn", True, "only with lm_eval.apply_chat_template = true")
    for name, source in section.training_source.items():
        if not name.startswith("lm_eval:"):
            _bad(f"lm_eval.training_source.{name}", source, "entries for lm_eval:NAME tasks, e.g. lm_eval.training_source.lm_eval:NAME")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_trackers(names: list[str]) -> None:
    """Every train.report_to entry is a tracker the trainer knows, and installed."""
    for name in names:
        if name not in TRACKERS:
            _bad("train.report_to", name, "trackers among " + ", ".join(sorted(TRACKERS)) + ", or none (an empty list)")
        module, package = TRACKERS[name]
        if not installed(module):
            raise UserError(f"config field train.report_to names {name}, which is not installed: pip install {package},"
                            f" or leave {name} out")


def absolute_path(path: str) -> str:
    """``path`` (``~`` expanded) made absolute against the current folder."""
    return os.path.abspath(os.path.expanduser(path))


def _bad(field_name: str, value: Any, allowed: str) -> None:
    raise UserError(f"config field {field_name} = {value!r} is out of range: allowed {allowed}")


def _choice(field_name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _bad(field_name, value, "one of " + ", ".join(choices))


def _at_least(field_name: str, value: int, low: int, hint: str = "") -> None:
    if value < low:
        _bad(field_name, value, f"an integer >= {low}{hint}")


def _in_range(field_name: str, value: float, low: float, high: float | None, allowed: str,
              low_open: bool = False, high_open: bool = False) -> None:
    """``value`` must be finite and within [low, high] (open at an end where asked)."""
    import math

    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        _bad(field_name, value, allowed)


# Greedy evaluation does not depend on its batch size (up to floating-point ties); sampling does
# (each batch draws from its own seeded generator), so gen_batch_size is hashed and keys samples.
_NOT_HASHED = {"output_dir", "cache_dir", "eval_batch_size", "report"}  # report: wording, not numbers


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of canonical JSON; the same content always gives the same key."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation, converting only where lossless."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as exc:
                errors.append(str(exc))
        raise UserError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UserError(f"config field {where}: expected a mapping, got {value!r}")
        return build_dataclass(annotation, value, where + ".")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise UserError(f"config field {where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config field {where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UserError(f"config field {where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise UserError(f"config field {where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise UserError(f"config field {where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"config field {where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"config field {where}: expected a string, got {value!r}")
    return value


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """A dataclass from a mapping, every field type-checked; unknown fields are refused with a close match."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        hint = did_you_mean(unknown[0], known, prefix)
        raise UserError(f"unknown config field {prefix}{unknown[0]}: {hint}known fields: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "decoding.temperature=1.0"]`` -> nested dict (values parsed as YAML)."""
    import yaml

    result: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: write it as FIELD=VALUE, e.g. --set train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: {raw!r} is not a YAML value ({getattr(exc, 'problem', exc)}); quote a"
                            " string, write a list as [a, b]") from exc
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}; pass an existing YAML file to --config") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"config {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}; fix the file") from exc
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of fields, e.g. 'model: organism'")
    return data


def default_model(tasks: list[str]) -> str:
    """The organism for the synthetic suite it was built for; the paper's smallest model otherwise."""
    from spd_bench.tasks import expand_tasks, get_task

    names = expand_tasks(tasks)
    if names and all("synth" in get_task(name).groups for name in names):
        return "organism"
    return DEFAULT_HUB_MODEL


def make_config(yaml_data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Merge defaults <- YAML <- flags, pick the model, apply the organism preset unless training was set, validate."""
    data = deep_merge(yaml_data or {}, {k: v for k, v in (overrides or {}).items() if v is not None})
    if data.get("model") is None:
        tasks = data.get("tasks", RunConfig().tasks)
        data["model"] = default_model(_coerce(tasks, list[str], "tasks"))
    if data["model"] == "organism":
        data["train"] = deep_merge(ORGANISM_TRAIN, data.get("train") or {})
    config = build_dataclass(RunConfig, data)
    config.validate()
    return config
