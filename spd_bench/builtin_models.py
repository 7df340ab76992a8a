"""Built-in models as a registry of builders: resolving a model name never imports the code
that builds the organism or the tiny test models, and a package can add its own built-in model
through the ``spd_bench.models`` entry-point group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.registry import Registry

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltinModel:
    folder: Callable[[Path, Progress | None], Path]  # the saved model under a cache folder, built on first use
    built: Callable[[Path], Path | None]  # the folder when it exists already (None: not built, nothing is done)
    description: str = ""  # for `spd-bench list models`
    config: Callable[[], Any] | None = None  # its transformers config without a build; None: build to plan
    # where its weights came from, copied into every record (None: the model key says enough)
    provenance: Callable[[Path], dict[str, Any]] | None = None


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model", "spd_bench.models")
BUILTIN_MODELS.register("organism", "spd_bench.organism.model:ORGANISM")
BUILTIN_MODELS.register("smollm2-135m-instruct-q4", "spd_bench.gguf_models:SMOLLM2")
BUILTIN_MODELS.register("tiny-llama", "spd_bench.tiny:TINY_LLAMA")
BUILTIN_MODELS.register("tiny-qwen2", "spd_bench.tiny:TINY_QWEN2")
