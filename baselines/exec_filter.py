"""``exec_filter``: keep the code samples that behave like the reference solution.

k samples per training problem (EvalPlus schema: prompt, entry_point, canonical_solution,
base_input); a sample is kept when ``prompt + completion`` returns what the canonical solution
returns on every base input. All samples of a problem run in one sandboxed process
(spd_baselines.exec_check). Uses tests, so it is reported apart from signal-free methods, and
runs only with ``allow_code_execution``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_baselines.curated import CuratedOptions, CuratedSD
from spd_baselines.exec_check import check_problem
from spd_bench.errors import UserError
from spd_bench.methods.protocol import MethodContext, Sample

REQUIRED_FIELDS = ("prompt", "entry_point", "canonical_solution", "base_input")


@dataclass
class ExecFilterOptions(CuratedOptions):
    timeout_s: float = 10.0  # wall clock per sample, all base inputs together
    memory_mb: int = 2048  # per sandboxed process


class ExecFilter(CuratedSD):
    name = "exec_filter"
    description = "Execution filter for code: k samples per problem, keep those whose outputs match the reference (sandboxed)."
    external_signal = "tests"
    Options = ExecFilterOptions
    post_sampling_options = CuratedSD.post_sampling_options | {"timeout_s", "memory_mb"}

    def __init__(self, options: Any | None = None) -> None:
        super().__init__(options)
        if self.options.timeout_s <= 0 or self.options.memory_mb <= 0:
            raise UserError("method_options.exec_filter: timeout_s and memory_mb must be above 0")

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

    def keep(self, group: list[Sample], item: dict[str, Any], ctx: MethodContext) -> list[Sample]:
        opts = self.options
        result = check_problem(
            item, [s.completion for s in group], timeout_s=opts.timeout_s, memory_mb=opts.memory_mb,
            workdir=Path(ctx.config.cache_dir) / "scratch",
        )
        if result.canonical_error is not None:
            raise UserError(
                f"the canonical solution of training problem {item['id']} does not run in the sandboxed check"
                f" ({result.canonical_error}); fix the item, or raise method_options.exec_filter.timeout_s / memory_mb"
            )
        return [s for s, passed in zip(group, result.passed, strict=True) if passed]
