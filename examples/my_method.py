"""An example spd-bench method that lives outside the package: brevity self-distillation.

Sample k completions per training prompt and fine-tune on the shortest non-empty one: a
length prior that needs no labels. Run it with
    spd-bench --plugin examples/my_method.py run --methods base,shortest_of_k --allow-code-execution
"""

from __future__ import annotations

from dataclasses import dataclass

from spd_bench.api import METHODS, Method, MethodContext, Sample, SamplingPlan, TrainSpec


@dataclass
class ShortestOfKOptions:
    k: int = 4  # set with --set method_options.shortest_of_k.k=8


@METHODS.decorator("shortest_of_k")
class ShortestOfK(Method):
    name = "shortest_of_k"
    description = "Example plugin: k samples per prompt, fine-tune on the shortest non-empty one."
    external_signal = None  # uses no labels, tests or reward model
    version = 1  # bump when behaviour changes, so cached corpora are rebuilt
    Options = ShortestOfKOptions

    def sampling(self, ctx: MethodContext) -> SamplingPlan:
        plan = super().sampling(ctx)  # the run's shared decoding settings
        plan.n_per_prompt = self.options.k
        return plan

    def curate(self, samples: list[Sample], ctx: MethodContext) -> list[Sample]:
        best: dict[str, Sample] = {}
        for sample in samples:
            current = best.get(sample.prompt_id)
            if sample.completion.strip() and (current is None or len(sample.completion) < len(current.completion)):
                best[sample.prompt_id] = sample
        return list(best.values())

    def train_spec(self, ctx: MethodContext) -> TrainSpec:
        return TrainSpec(loss_on="completion")
