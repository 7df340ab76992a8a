"""The public types a plugin imports: methods, samples, training specs, backends, scorers.

Plugins (methods in ``baselines/`` and ``examples/``, third-party backends and scorers) import
from here, so the modules behind these names can move without breaking them.
"""

from __future__ import annotations

from spd_bench.backends import BACKENDS
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
    truncate_at_stop,
)
from spd_bench.errors import UserError
from spd_bench.method import Method, MethodContext, Sample, SamplingPlan, TrainSpec, make_method
from spd_bench.registry import METHODS
from spd_bench.scoring import ScoreOutput, ScoreSettings

__all__ = [
    "BACKENDS", "BASE", "METHODS", "AdapterHandle", "Backend", "BackendFactory", "BaseHandle", "GenerationPlan",
    "Handle", "Loglikelihood", "Method", "MethodContext", "ProjectedHandle", "Sample", "SamplingPlan",
    "ScoreOutput", "ScoreSettings", "TrainSpec", "UserError", "make_method", "truncate_at_stop",
]
