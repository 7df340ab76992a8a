"""Score code tasks with EvalPlus's rules, through a verdict the candidates cannot reach.

Each completion becomes a program (sanitized with EvalPlus's sanitizer where EvalPlus would
sanitize it, in a sandboxed process that parses but never runs it); ``verdict`` then runs the
reference solutions in one sandboxed process and the programs in sandboxed batches, each in a
process of its own, and compares their outputs here, in the harness, with EvalPlus's rules
(see spd_bench/scoring/verdict.py). The
result keeps EvalPlus's shape: base and plus statuses per sample, pass@k as EvalPlus computes
it, and per-item rows that say why a sample failed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spd_bench.errors import UserError
from spd_bench.prompts import plain_prompt
from spd_bench.scoring import ScoreOutput, ScoreSettings
from spd_bench.scoring import _evalplus_worker as worker
from spd_bench.scoring.verdict import (
    PHASES,
    VERDICT,
    CodeProblem,
    PhaseVerdict,
    TimeLimits,
    Verdict,
    judge_candidates,
    own_folder,
    reference_outputs,
)

if TYPE_CHECKING:
    from spd_bench.backends.protocol import Backend, Handle

DATASETS = ("humaneval", "mbpp")
SANITIZER_MEMORY_MB = 2048  # EvalPlus's sanitizer imports evalplus.data (datasets, numpy): about 1.5 GB mapped
STARTUP_S = 60.0  # allowance for starting the sanitizer process
PASS = "pass"
_NATIVE_MBPP_ID = re.compile(r"^Mbpp/\d+$")
_PASS_AT = (1, 10, 100)


def evalplus_dataset(task: Any) -> str:
    """Which EvalPlus dataset rules apply: the task's ``evalplus_dataset`` option, else by name."""
    dataset = task.options.get("evalplus_dataset") or ("mbpp" if "mbpp" in task.name.lower() else "humaneval")
    if dataset not in DATASETS:
        raise UserError(f"task {task.name}: evalplus_dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    return dataset


def time_limits(task: Any) -> TimeLimits:
    """EvalPlus's per-input time limit is max(min_time_limit, factor x the reference's time).

    The defaults are EvalPlus's (1 s, 4x). On a crowded machine a correct but slow solution can
    exceed them; tasks may raise them with the ``evalplus_min_time_limit`` and
    ``evalplus_gt_time_limit_factor`` options, at the price of slower failures on endless loops.
    """
    defaults = TimeLimits()
    limits = TimeLimits(
        min_time_limit=float(task.options.get("evalplus_min_time_limit", defaults.min_time_limit)),
        gt_time_limit_factor=float(task.options.get("evalplus_gt_time_limit_factor", defaults.gt_time_limit_factor)),
    )
    if min(limits.min_time_limit, limits.gt_time_limit_factor) <= 0:
        raise UserError(f"task {task.name}: EvalPlus time limits must be positive, got {limits}")
    return limits


class Solution(str):
    """A whole program, as EvalPlus's samples files give it in ``solution``: tested as written."""


def solution_code(item: dict[str, Any], completion: str, prompt_format: str) -> tuple[str, bool]:
    """The program to test for one completion, and whether EvalPlus's sanitizer should clean it.

    A ``Solution`` is tested as written, as ``evalplus.evaluate`` tests a ``solution``. A chat answer is a whole program (often inside markdown), so it is sanitized on its own. A
    plain completion continues the prompt, unless it writes the entry point's full definition
    itself; then prompt and completion are sanitized together, which keeps the completion's
    definition, its imports and helpers, and drops stray text and test code.
    """
    if isinstance(completion, Solution):
        return str(completion), False
    if prompt_format == "chat":
        return completion, True
    prompt = plain_prompt(item)  # without a few-shot context's example programs
    if re.search(rf"^\s*def\s+{re.escape(item['entry_point'])}\s*\(", completion, re.MULTILINE):
        return prompt + "\n" + completion, True
    return prompt + completion, False


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c pass (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _item_id(item: dict[str, Any]) -> str:
    return str(item["id"] if "id" in item else item["task_id"])


def _require_permission(settings: ScoreSettings) -> None:
    if not settings.allow_code_execution:
        raise UserError(
            "EvalPlus scoring runs model-written code; allow it with --allow-code-execution"
            " (allow_code_execution: true in the config)"
        )


def _check_inputs(items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings) -> None:
    _require_permission(settings)
    if not items:
        raise UserError("no items to score; check the task's data")
    ids = [_item_id(item) for item in items]
    if len(set(ids)) != len(ids):
        raise UserError("item ids repeat; every code item needs a unique id")
    missing = [i for i in ids if not responses.get(i)]
    unknown = sorted(set(responses) - set(ids))
    if missing:
        raise UserError(f"no responses for {len(missing)} items (e.g. {missing[0]}); give every item at least one")
    if unknown:
        raise UserError(f"responses name {len(unknown)} unknown items (e.g. {unknown[0]}); score them with their items")
    for item in items:
        lacking = [key for key in ("prompt", "entry_point", "canonical_solution", "base_input") if key not in item]
        if lacking:
            raise UserError(
                f"code item {_item_id(item)} lacks {', '.join(lacking)}; load it with an EvalPlus-schema loader"
            )


def code_problem(item: dict[str, Any], dataset: str, base_only: bool) -> CodeProblem:
    """The verdict's view of one item; genuine MBPP+ problems get MBPP+'s per-problem input types.

    EvalPlus converts the inputs of MBPP+ problems by problem number (lists that must be
    tuples, sets, complex numbers); inputs written by spd-bench's converter carry their types in
    tags instead, so only untagged inputs under an MBPP+ id are converted.
    """
    task_id = _item_id(item)
    inputs = {"base": item["base_input"], "plus": [] if base_only else item.get("plus_input") or []}
    if _is_native_mbpp(item, dataset):
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        inputs = {k: [worker.encode_value(x) for x in mbpp_deserialize_inputs(task_id, v)] for k, v in inputs.items()}
    return CodeProblem(
        key=task_id,
        entry_point=item["entry_point"],
        reference_code=plain_prompt(item) + item["canonical_solution"],
        inputs={name: inputs[name] for name in PHASES if name == "base" or not base_only},
        dataset=dataset,
        atol=float(item.get("atol") or 0),
    )


def _is_native_mbpp(item: dict[str, Any], dataset: str) -> bool:
    return dataset == "mbpp" and bool(_NATIVE_MBPP_ID.match(_item_id(item))) and not worker.has_tags(item["base_input"])


def build_programs(
    items: list[dict[str, Any]], responses: dict[str, list[str]], prompt_format: str, memory_mb: int, workdir: Path
) -> dict[str, list[str]]:
    """Item id -> the program to test for each completion, sanitized where EvalPlus would."""
    entries = [(item, completion) for item in items for completion in responses[_item_id(item)]]
    codes = [solution_code(item, completion, prompt_format) for item, completion in entries]
    dirty = [index for index, (_, sanitize) in enumerate(codes) if sanitize]
    cleaned = _sanitize([{"code": codes[i][0], "entry_point": entries[i][0]["entry_point"]} for i in dirty], memory_mb, workdir)
    programs = [code for code, _ in codes]
    for index, code in zip(dirty, cleaned):
        programs[index] = code
    by_item: dict[str, list[str]] = {}
    for (item, _), program in zip(entries, programs):
        by_item.setdefault(_item_id(item), []).append(program)
    return by_item


def _sanitize(samples: list[dict[str, str]], memory_mb: int, workdir: Path) -> list[str]:
    """EvalPlus's sanitizer on each program, in a sandboxed process (it parses model text)."""
    if not samples:
        return []
    timeout = STARTUP_S + worker.SANITIZE_TIMEOUT_S * len(samples)
    with own_folder(workdir, "sanitize-") as folder:
        result = worker.launch(
            "sanitize",
            stdin=json.dumps({"samples": samples}),
            timeout_s=timeout,
            memory_mb=memory_mb + SANITIZER_MEMORY_MB,
            workdir=folder,
            max_output_bytes=64 * 2**20 + 2 * sum(len(sample["code"]) for sample in samples),
        )
    cleaned: dict[int, str] = {}
    for line in result.stdout.splitlines():
        try:
            row = json.loads(line)
            cleaned[int(row["i"])] = str(row["code"])
        except (ValueError, KeyError, TypeError):
            continue  # not an answer line
    if len(cleaned) != len(samples):
        if result.timed_out:
            raise UserError(f"sanitizing {len(samples)} programs took longer than {timeout:.0f} s; score fewer at once")
        raise RuntimeError(f"EvalPlus's sanitizer failed (exit {result.returncode}): {result.stderr[-3000:]}")
    return [cleaned[index] for index in range(len(samples))]


def _require_references(references: dict[str, Any]) -> None:
    broken = [(key, reference.error) for key, reference in references.items() if reference.error]
    if broken:
        key, error = broken[0]
        raise UserError(
            f"the reference solution of item {key} cannot serve as the oracle: {error}"
            f"{f' ({len(broken)} items in all)' if len(broken) > 1 else ''}; fix the item's canonical_solution or inputs"
        )


def _verdicts(
    items: list[dict[str, Any]],
    programs: dict[str, list[str]],
    dataset: str,
    base_only: bool,
    limits: TimeLimits,
    settings: ScoreSettings,
    folder: Path,
) -> tuple[list[CodeProblem], list[list[Verdict]], int]:
    """Reference outputs, then every program judged; per item, one verdict per program."""
    problems = [code_problem(item, dataset, base_only) for item in items]
    references = reference_outputs(problems, memory_mb=settings.memory_mb, timeout_s=settings.timeout_s, workdir=folder)
    _require_references(references)
    candidates = [(problem, program) for problem in problems for program in programs[problem.key]]
    parallel = max(1, min(len(candidates), os.cpu_count() or 1))
    flat = iter(judge_candidates(
        candidates, references, limits=limits, memory_mb=settings.memory_mb, workdir=folder, parallel=parallel
    ))
    return problems, [[next(flat) for _ in programs[problem.key]] for problem in problems], parallel


def _fail_tests(inputs: list[Any], verdict: PhaseVerdict | None) -> list[Any]:
    """EvalPlus's record of a failure: the input it failed on (none when the program did not load)."""
    if verdict is None or verdict.passed or verdict.failed_input is None:
        return []
    return [inputs[verdict.failed_input]]


def _eval_entry(item: dict[str, Any], problem: CodeProblem, program: str, verdict: Verdict) -> dict[str, Any]:
    """One sample as EvalPlus's results JSON lists it, with the reason it failed."""
    base, plus = verdict["base"], verdict.get("plus")
    failed = base if not base.passed else plus if plus is not None and not plus.passed else None
    return {
        "task_id": problem.key,
        "solution": program,
        "base_status": base.status,
        "plus_status": plus.status if plus is not None else None,
        "base_fail_tests": _fail_tests(item["base_input"], base),
        "plus_fail_tests": _fail_tests(item.get("plus_input") or [], plus),
        "reason": failed.reason if failed is not None else None,
    }


def _score_output(
    items: list[dict[str, Any]],
    responses: dict[str, list[str]],
    evaluated: dict[str, list[dict[str, Any]]],
    base_only: bool,
    native: dict[str, Any],
) -> ScoreOutput:
    """Metrics and per-item rows from the statuses (pass@k computed as EvalPlus does)."""
    counts: list[tuple[int, int, int]] = []  # n, base passes, base+plus passes
    per_item = []
    for index, item in enumerate(items):
        runs = evaluated[_item_id(item)]
        base = [run["base_status"] == PASS for run in runs]
        plus = [b and run["plus_status"] == PASS for b, run in zip(base, runs)] if not base_only else base
        counts.append((len(runs), sum(base), sum(plus)))
        entry = {
            "doc_id": index,
            "id": _item_id(item),
            "score": float(base[0]),
            "response": responses[_item_id(item)][0],
            "status": runs[0]["base_status"],
            "reason": runs[0]["reason"],
            "solution": runs[0]["solution"],
            "n_samples": len(runs),
            "n_passed": sum(base),
        }
        if not base_only:
            entry["plus_status"] = runs[0]["plus_status"]
            entry["score_plus"] = float(plus[0])
        per_item.append(entry)
    metrics: dict[str, float] = {}
    smallest = min(n for n, _, _ in counts)
    for k in (k for k in _PASS_AT if k <= smallest):
        metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c, _ in counts) / len(counts)
        if not base_only:
            metrics[f"pass@{k}_plus"] = sum(pass_at_k(n, c, k) for n, _, c in counts) / len(counts)
    return ScoreOutput(
        metrics=metrics,
        primary_metric="pass@1",
        higher_is_better=True,
        per_item=per_item,
        native=native,
        files=evalplus_files(items, evaluated, metrics, native["results"]["date"]),
    )


def evalplus_files(
    items: list[dict[str, Any]], evaluated: dict[str, list[dict[str, Any]]], metrics: dict[str, float], date: str
) -> dict[str, str]:
    """EvalPlus's own files for these samples: the samples JSONL ``evalplus.evaluate`` reads
    (``{"task_id", "solution"}``, the programs tested) and an ``eval_results.json`` in the layout it
    writes (date, hash, per-sample statuses and failing inputs, pass@k of base and plus). ``hash`` is
    spd-bench's problem-set hash (md5 of the scored problems' ids, bare prompts and inputs), not
    EvalPlus's dataset-file hash: the problems scored may be a --limit prefix or another data layer."""
    samples = "".join(
        json.dumps({"task_id": task_id, "solution": run["solution"]}) + "\n"
        for task_id, runs in evaluated.items() for run in runs
    )
    problems = [{"task_id": _item_id(item), "prompt": plain_prompt(item),
                 **{key: item.get(key) for key in ("base_input", "plus_input")}} for item in items]
    pass_at = {"base": {k: v for k, v in metrics.items() if not k.endswith("_plus")},
               "plus": {k.removesuffix("_plus"): v for k, v in metrics.items() if k.endswith("_plus")}}
    results = {
        "date": date,
        "hash": hashlib.md5(json.dumps(problems, sort_keys=True, default=str).encode()).hexdigest(),
        "eval": {task_id: [{key: value for key, value in run.items() if key != "reason"} for run in runs]
                 for task_id, runs in evaluated.items()},
        "pass_at_k": pass_at,
    }
    return {"evalplus_samples.jsonl": samples, "evalplus_eval_results.json": json.dumps(results)}


class EvalPlusScorer:
    """pass@1 on base tests (and on base + plus tests where plus inputs exist), pass@k for n > 1."""

    def score_model(
        self, backend: Backend, handle: Handle, task: Any, items: list[dict[str, Any]], settings: ScoreSettings
    ) -> ScoreOutput:
        """Generate ``settings.n_samples`` completions per item (seed 0, no top-p/top-k cut), then score them.

        The n copies of each prompt go through one seeded pass together (not n passes), as they
        always have, so stored pass@k results reproduce.
        """
        _require_permission(settings)  # before generating, not after
        n = settings.n_samples
        if n < 1:
            raise UserError(f"n_samples must be at least 1, got {n}")
        if n > 1 and settings.temperature <= 0:
            raise UserError("n_samples > 1 needs sampling: set a temperature above 0 (greedy samples are identical)")
        from spd_bench.backends.protocol import GenerationPlan

        prompts = [item["prompt"] for item in items for _ in range(n)]
        plan = GenerationPlan(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=1.0,
            top_k=0,
            batch_size=settings.batch_size,
            seed=0,
            stop=tuple(task.stop),
        )
        completions = [texts[0] for texts in backend.generate(handle, prompts, plan)]
        responses = {_item_id(item): completions[i * n : (i + 1) * n] for i, item in enumerate(items)}
        return self.score_responses(task, items, responses, settings)

    def score_responses(
        self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings
    ) -> ScoreOutput:
        """Score stored completions (task id -> completions; the prompt is not included)."""
        import evalplus

        _check_inputs(items, responses, settings)
        dataset = evalplus_dataset(task)
        limits = time_limits(task)
        base_only = not any(item.get("plus_input") for item in items)
        with own_folder(Path(settings.work_dir), "evalplus-") as folder:
            programs = build_programs(items, responses, task.prompt_format, settings.memory_mb, folder)
            problems, verdicts, parallel = _verdicts(items, programs, dataset, base_only, limits, settings, folder)
        evaluated = {
            problem.key: [_eval_entry(item, problem, program, verdict)
                          for program, verdict in zip(programs[problem.key], item_verdicts)]
            for item, problem, item_verdicts in zip(items, problems, verdicts)
        }
        native = {
            "verdict": VERDICT,
            "evalplus_version": evalplus.__version__,
            "config": {
                "dataset": dataset,
                "base_only": base_only,
                "min_time_limit": limits.min_time_limit,
                "gt_time_limit_factor": limits.gt_time_limit_factor,
                "memory_mb": settings.memory_mb,
                "parallel": parallel,
                "native_mbpp_ids": [_item_id(item) for item in items if _is_native_mbpp(item, dataset)],
            },
            "results": {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "eval": evaluated},
        }
        return _score_output(items, responses, evaluated, base_only, native)
