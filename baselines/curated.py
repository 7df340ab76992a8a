"""What the curated baselines share: k samples per prompt, a per-prompt filter, LoRA SFT.

Curated self-distillation (the SPD paper's Eq. 2) differs from raw self-distillation only in
which samples it keeps, so decoding and fine-tuning are the run's shared settings and each
baseline supplies just ``check`` (refuse unusable input before generation) and ``keep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spd_bench.api import Method, MethodContext, Sample, SamplingPlan, TrainSpec
from spd_bench.errors import UserError


@dataclass
class CuratedOptions:
    k: int = 4  # samples per training prompt
    loss_on: str = "all"  # all (prompt + completion, as raw_sd and spd) | completion


class CuratedSD(Method):
    """Sample k completions per prompt, keep those ``keep`` accepts, fine-tune on them."""

    Options = CuratedOptions
    post_sampling_options = frozenset({"loss_on"})

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        if self.options.k < 1:
            raise UserError(f"method_options.{self.name}.k is {self.options.k}; use 1 or more samples per prompt")
        if self.options.loss_on not in ("all", "completion"):
            raise UserError(f"method_options.{self.name}.loss_on {self.options.loss_on!r} is not one of all, completion")

    def check(self, ctx: MethodContext) -> None:
        """Raise UserError when this cell's data cannot be curated (called before generation)."""

    def keep(self, group: list[Sample], item: dict[str, Any], ctx: MethodContext) -> list[Sample]:
        """The samples of one prompt worth training on."""
        raise NotImplementedError

    def sampling(self, ctx: MethodContext) -> SamplingPlan:
        self.check(ctx)
        plan = super().sampling(ctx)
        plan.n_per_prompt = self.options.k
        return plan

    def curate(self, samples: list[Sample], ctx: MethodContext) -> list[Sample]:
        groups: dict[str, list[Sample]] = {}
        for sample in samples:
            groups.setdefault(sample.prompt_id, []).append(sample)
        kept = {id(s) for prompt_id, group in groups.items() for s in self.keep(group, ctx.item(prompt_id), ctx)}
        return [s for s in samples if id(s) in kept]

    def train_spec(self, ctx: MethodContext) -> TrainSpec:
        return TrainSpec(loss_on=self.options.loss_on)
