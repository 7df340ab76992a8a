"""Inference backends: the one place where models are run for outputs (see protocol.py).

``BACKENDS`` maps a name to a class with ``load(spec, cache_dir, device, dtype, **options)``:
``hf`` (transformers, the default) and ``vllm`` (vLLM's engine; importing this package never
imports vllm). Third-party backends register through the ``spd_bench.backends`` entry-point group
or ``--plugin``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spd_bench.backends.protocol import (
    BASE,
    AdapterHandle,
    Backend,
    BackendFactory,
    BaseHandle,
    GenerationPlan,
    Handle,
    Loglikelihood,
    ProjectedHandle,
    handle_for_adapter,
    truncate_at_stop,
)
from spd_bench.registry import Registry

BACKENDS: Registry[BackendFactory] = Registry("backend", "spd_bench.backends")
BACKENDS.register("hf", "spd_bench.backends.hf:HFBackend")
BACKENDS.register("vllm", "spd_bench.backends.vllm:VLLMBackend")
DEFAULT_BACKEND = "hf"

__all__ = [
    "BACKENDS", "BASE", "DEFAULT_BACKEND", "AdapterHandle", "Backend", "BackendFactory", "BaseHandle",
    "GenerationPlan", "Handle", "Loglikelihood", "ProjectedHandle", "handle_for_adapter", "load_backend",
    "truncate_at_stop",
]


def load_backend(
    spec: str, cache_dir: Path, device: str, dtype: str, name: str = DEFAULT_BACKEND,
    options: Mapping[str, Any] | None = None,
) -> Backend:
    """Resolve the model ``spec`` once into the backend registered as ``name``, with its ``options``."""
    return BACKENDS.get(name).load(spec, cache_dir, device, dtype, **dict(options or {}))
