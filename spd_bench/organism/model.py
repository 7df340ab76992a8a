"""The organism as a built-in model (spd_bench.builtin_models): built once per cache, planned from
its recipe's shape before the first build."""

from __future__ import annotations

from typing import Any

from spd_bench.builtin_models import BuiltinModel
from spd_bench.organism.build import built_organism, organism_dir


def _config() -> Any:
    from spd_bench.organism.pretrain import ModelShape, model_config

    return model_config(ModelShape(), vocab_size=800)


ORGANISM = BuiltinModel(
    folder=lambda cache_dir, progress: organism_dir(cache_dir, progress=progress),
    built=built_organism,
    config=_config,
    description="the CPU default: a 4-layer model pretrained by spd-bench on its synthetic suite (weights ship with the package)",
)
