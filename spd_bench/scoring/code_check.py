"""Check code problems' candidate programs with the verdict the EvalPlus scorer uses (for the
execution filter and the organism build's accuracy check: one definition of "pass").

A candidate passes exactly when ``spd-bench score`` would pass it on the problem's base inputs
(spd_bench.scoring.verdict): the reference solutions run in one sandboxed process, the
candidates in others that never see the expected outputs, and the outputs are compared in the
harness under EvalPlus's rules; where the reference raises, the candidate must raise the same
exception type. A candidate that crashes, exits or hangs fails alone, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spd_bench.scoring.evalplus_scorer import build_programs, code_problem
from spd_bench.scoring.verdict import TimeLimits, judge_candidates, own_folder, reference_outputs

REFERENCE_TIMEOUT_S = 10.0  # per problem, for the reference solutions' own run


@dataclass
class ProblemCheck:
    """Per-candidate verdicts and why each failed, or why the canonical solution cannot serve as reference."""

    passed: list[bool]
    reasons: list[str | None]
    canonical_error: str | None = None


def check_problems(
    items: list[dict[str, Any]],
    completions: list[list[str]],
    *,
    memory_mb: int,
    workdir: Path,
    dataset: str = "humaneval",
    prompt_format: str = "plain",
    limits: TimeLimits | None = None,
    parallel: int = 1,
) -> list[ProblemCheck]:
    """Judge ``completions[i]`` against EvalPlus-schema ``items[i]`` (base inputs) for every i."""
    limits = limits or TimeLimits()
    with own_folder(workdir, "exec-check-") as folder:
        responses = {str(item["id"]): list(group) for item, group in zip(items, completions, strict=True)}
        programs = build_programs(items, responses, prompt_format, memory_mb, folder)
        problems = [code_problem(item, dataset, base_only=True) for item in items]
        references = reference_outputs(problems, memory_mb=memory_mb, timeout_s=REFERENCE_TIMEOUT_S, workdir=folder)
        usable = [problem for problem in problems if references[problem.key].error is None]
        candidates = [(problem, program) for problem in usable for program in programs[problem.key]]
        verdicts = iter(judge_candidates(
            candidates, references, limits=limits, memory_mb=memory_mb, workdir=folder, parallel=parallel
        ))
    checks = []
    for problem in problems:
        error = references[problem.key].error
        if error is not None:
            count = len(programs[problem.key])
            checks.append(ProblemCheck([False] * count, ["the canonical solution cannot serve"] * count, error))
            continue
        base = [next(verdicts)["base"] for _ in programs[problem.key]]
        checks.append(ProblemCheck([v.passed for v in base], [v.reason for v in base]))
    return checks


def check_problem(item: dict[str, Any], completions: list[str], **options: Any) -> ProblemCheck:
    """``check_problems`` for one problem."""
    return check_problems([item], [completions], **options)[0]
