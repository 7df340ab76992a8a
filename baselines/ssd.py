"""``ssd``: Simple Self-Distillation (arXiv 2604.01193), the closest baseline to SPD.

One sample per training prompt at a high training-time temperature with truncation (public
recipe: temperature 1.5, top-k 20, top-p 0.8); empty outputs and the shortest 10% of the rest
are dropped; LoRA on completion tokens only; evaluation at its own temperature (an option,
recorded with every result). No verifier, no labels, no teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spd_bench.api import Method, MethodContext, Sample, SamplingPlan, TrainSpec
from spd_bench.errors import UserError


@dataclass
class SSDOptions:
    temperature: float = 1.5  # training-time sampling temperature
    top_k: int = 20
    top_p: float = 0.8
    drop_shortest: float = 0.1  # fraction of the non-empty samples dropped, shortest (in characters) first
    eval_temperature: float = 0.0  # decoding temperature when the fine-tuned model is evaluated; 0 = greedy


PAPER_DEFAULTS = {"temperature": 1.5, "top_k": 20, "top_p": 0.8, "drop_shortest": 0.1}


def drop_short(samples: list[Sample], fraction: float) -> list[Sample]:
    """Drop empty completions, then the ``floor(fraction * n)`` shortest (ties: earliest first)."""
    nonempty = [s for s in samples if s.completion.strip()]
    n_drop = int(fraction * len(nonempty))
    shortest = sorted(range(len(nonempty)), key=lambda i: (len(nonempty[i].completion.strip()), i))[:n_drop]
    dropped = set(shortest)
    return [s for i, s in enumerate(nonempty) if i not in dropped]


class SSD(Method):
    name = "ssd"
    description = "Simple Self-Distillation: one sample per prompt at T=1.5, top-k 20, top-p 0.8; drop empty and shortest 10%."
    external_signal = None
    Options = SSDOptions
    paper_defaults = PAPER_DEFAULTS
    post_sampling_options = frozenset({"drop_shortest", "eval_temperature"})

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        opts = self.options
        problems = [
            (opts.temperature > 0, "temperature must be above 0"),
            (opts.top_k >= 0, "top_k must be 0 (off) or more"),
            (0 < opts.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= opts.drop_shortest < 1, "drop_shortest must be in [0, 1)"),
            (opts.eval_temperature >= 0, "eval_temperature must be 0 (greedy) or more"),
        ]
        for ok, message in problems:
            if not ok:
                raise UserError(f"method_options.ssd: {message}")

    def sampling(self, ctx: MethodContext) -> SamplingPlan:
        opts = self.options
        return SamplingPlan(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k, n_per_prompt=1)

    def curate(self, samples: list[Sample], ctx: MethodContext) -> list[Sample]:
        return drop_short(samples, self.options.drop_shortest)

    def train_spec(self, ctx: MethodContext) -> TrainSpec:
        return TrainSpec(loss_on="completion")

    def eval_temperature(self) -> float:
        return self.options.eval_temperature
