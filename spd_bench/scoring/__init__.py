"""Scoring: every model is scored through lm-eval, EvalPlus or reference NLL.

A scorer takes a model, as a backend and a handle (``spd_bench.backends``), or stored
completions, and a task's items, and returns a ScoreOutput. Scorers are looked up by the name in
a task definition; none of them imports methods, and none runs a model except through its backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_bench.registry import Registry

SCORERS: Registry[Any] = Registry("scorer", "spd_bench.scorers")
SCORERS.register("lmeval_generate", "spd_bench.scoring.lmeval:LMEvalGenerate")
SCORERS.register("lmeval_mc", "spd_bench.scoring.lmeval:LMEvalMultipleChoice")
SCORERS.register("lmeval_native", "spd_bench.scoring.lmeval_tasks:LMEvalNative")
SCORERS.register("evalplus", "spd_bench.scoring.evalplus_scorer:EvalPlusScorer")
SCORERS.register("nll", "spd_bench.scoring.nll:ReferenceNLL")


@dataclass
class ScoreSettings:
    """How to score: shared by `run` and `score` so both take exactly the same path."""

    batch_size: int = 32
    device: str = "cpu"  # set by the engine to the backend's device
    max_new_tokens: int = 256
    temperature: float = 0.0  # evaluation decoding; 0 = greedy
    n_samples: int = 1  # > 1 gives pass@k for code (config: score.n_samples)
    allow_code_execution: bool = False
    work_dir: Path = field(default_factory=lambda: Path(".spd_cache") / "scratch")
    timeout_s: float = 10.0  # per code problem, for its reference solution (config: score.timeout_s)
    memory_mb: int = 2048  # per sandboxed process (config: score.memory_mb)


@dataclass
class ScoreOutput:
    metrics: dict[str, float]
    primary_metric: str
    higher_is_better: bool
    per_item: list[dict[str, Any]]  # one per item: doc_id, score, response (and more)
    native: dict[str, Any] = field(default_factory=dict)  # raw library output and config used
    # files in the scoring library's own formats (name -> text), kept by the score stage and
    # copied beside the record as ``<record stem>.<name>``; e.g. EvalPlus's samples and results
    files: dict[str, str] = field(default_factory=dict)


def get_scorer(name: str) -> Any:
    """Return an instance of the scorer class registered under ``name``."""
    return SCORERS.get(name)()
