"""Typed run configuration: YAML in, flag overrides, validation, a stable hash out.

Defaults are the SPD paper's (see docs/spd-method.md); the built-in organism gets its own
training preset, because paper-scale learning rates do nothing on a 1M-parameter model. Every
value actually used is stored with every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError


@dataclass
class Decoding:
    """Sampling settings for generating training data (not for evaluation)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int | None = None  # None: the task's default generation length


@dataclass
class TrainConfig:
    """LoRA fine-tuning settings shared by every method (paper defaults)."""

    lora_r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lr: float = 1e-5
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_ratio: float = 0.0
    epochs: int = 5
    batch_size: int = 8
    max_length: int = 1024


ORGANISM_TRAIN = {"lr": 1e-3, "epochs": 3, "batch_size": 16, "lora_alpha": 16, "lora_dropout": 0.0, "max_length": 256}
"""Training preset for the built-in organism, identical for every method (docs/organism.md).

No LoRA dropout: on a CPU its random masks cost a quarter of every fine-tuning step, and
three epochs over a few hundred short examples leave nothing for it to regularise.
"""


@dataclass
class RunConfig:
    model: str = "organism"
    device: str = "auto"
    dtype: str = "auto"
    tasks: list[str] = field(default_factory=lambda: ["synth"])
    methods: list[str] = field(default_factory=lambda: ["base", "raw_sd", "spd", "spd_random", "ssd"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    limit: int | None = None
    prompt_format: str | None = None  # None: each task's own; "plain" | "chat" (the model's chat template)
    n_train: int | None = None
    gen_batch_size: int = 32
    eval_batch_size: int = 32
    decoding: Decoding = field(default_factory=Decoding)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    allow_code_execution: bool = False
    output_dir: str = "results"
    cache_dir: str = ".spd_cache"

    def hash(self) -> str:
        """Stable hash of everything that can change a number (not where files go)."""
        payload = {k: v for k, v in to_dict(self).items() if k not in _NOT_HASHED}
        return stable_hash(payload)


# Greedy evaluation does not depend on its batch size (up to floating-point ties); sampling does
# (each batch draws from its own seeded generator), so gen_batch_size is hashed and keys samples.
_NOT_HASHED = {"output_dir", "cache_dir", "eval_batch_size"}


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
        return _build(annotation, value, where + ".")
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


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise UserError(f"unknown config field {prefix}{unknown[0]}{hint}; known fields: {', '.join(sorted(known))}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
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
        value = yaml.safe_load(raw) if raw else ""
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
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}; pass an existing YAML file to --config") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}; fix the file") from exc
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of fields, e.g. 'model: organism'")
    return data


def make_config(yaml_data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Merge defaults <- YAML <- flags, apply the organism preset unless training was set, validate."""
    data = _deep_merge(yaml_data or {}, {k: v for k, v in (overrides or {}).items() if v is not None})
    model = data.get("model", RunConfig.model)
    if model == "organism":
        data["train"] = _deep_merge(ORGANISM_TRAIN, data.get("train") or {})
    return _build(RunConfig, data)
