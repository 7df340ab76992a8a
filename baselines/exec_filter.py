"""``exec_filter``: keep the code samples that pass the reference's tests.

k samples per training problem (EvalPlus schema: prompt, entry_point, canonical_solution,
base_input); a sample is kept when the EvalPlus scorer's verdict passes it on the base inputs
(spd_bench.scoring.code_check): the same program, the same comparison rules and time limits as
``spd-bench score``, so "kept" and "passed" mean one thing. Uses tests, so it is reported apart
from signal-free methods, and runs only with ``allow_code_execution``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_baselines.curated import CuratedOptions, CuratedSD
from spd_bench.scoring.code_check import check_problems
from spd_bench.api import MethodContext, Sample
from spd_bench.errors import UserError
from spd_bench.scoring.evalplus_scorer import evalplus_dataset
from spd_bench.scoring.verdict import TimeLimits

REQUIRED_FIELDS = ("prompt", "entry_point", "canonical_solution", "base_input")


@dataclass
class ExecFilterOptions(CuratedOptions):
    min_time_limit: float = TimeLimits.min_time_limit  # EvalPlus's per-input limit: max(this, factor x reference time)
    gt_time_limit_factor: float = TimeLimits.gt_time_limit_factor
    memory_mb: int = 2048  # per sandboxed process


class ExecFilter(CuratedSD):
    name = "exec_filter"
    description = "Execution filter for code: k samples per problem, keep those the EvalPlus verdict passes (sandboxed)."
    external_signal = "tests"
    version = 2  # the scorer's verdict replaced a comparison of its own
    Options = ExecFilterOptions
    post_sampling_options = CuratedSD.post_sampling_options | {"min_time_limit", "gt_time_limit_factor", "memory_mb"}

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        opts = self.options
        if min(opts.min_time_limit, opts.gt_time_limit_factor) <= 0 or opts.memory_mb <= 0:
            raise UserError("method_options.exec_filter: min_time_limit, gt_time_limit_factor and memory_mb must be above 0")

    def validate(self, config: Any, source: Any) -> None:
        if not config.allow_code_execution:
            raise UserError(
                "method exec_filter runs the model's code on the training problems; pass --allow-code-execution"
                " (runs sandboxed) or drop exec_filter"
            )
        if source.kind != "code":
            raise UserError(f"method exec_filter filters code by running it; training source {source.name} is {source.kind!r}")

    def check(self, ctx: MethodContext) -> None:
        for item in ctx.data.train:
            missing = [f for f in REQUIRED_FIELDS if f not in item] or ([] if item["base_input"] else ["base_input (empty)"])
            if missing:
                raise UserError(
                    f"method exec_filter needs code items in EvalPlus schema; item {item.get('id')} of {ctx.source.name}"
                    f" lacks {', '.join(missing)} (use a code training source such as mbpp)"
                )

    def curate(self, samples: list[Sample], ctx: MethodContext) -> list[Sample]:
        """All problems are checked together: one reference run, candidates in shared sandboxed batches."""
        groups: dict[str, list[Sample]] = {}
        for sample in samples:
            groups.setdefault(sample.prompt_id, []).append(sample)
        items = [ctx.item(prompt_id) for prompt_id in groups]
        opts = self.options
        checks = check_problems(
            items, [[s.completion for s in group] for group in groups.values()],
            memory_mb=opts.memory_mb, workdir=Path(ctx.config.cache_dir) / "scratch",
            dataset=evalplus_dataset(ctx.source), prompt_format=ctx.data.details.get("prompt_format", "plain"),
            limits=TimeLimits(opts.min_time_limit, opts.gt_time_limit_factor), parallel=os.cpu_count() or 1,
        )
        kept = set()
        for item, group, result in zip(items, groups.values(), checks):
            if result.canonical_error is not None:
                raise UserError(
                    f"the canonical solution of training problem {item['id']} cannot serve as the reference"
                    f" ({result.canonical_error}); fix the item or drop it from the training source"
                )
            kept.update(id(s) for s, passed in zip(group, result.passed, strict=True) if passed)
        return [s for s in samples if id(s) in kept]
