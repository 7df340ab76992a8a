"""Score code tasks by running EvalPlus's own evaluation in a sandboxed process.

The items are written to a fresh HumanEval+/MBPP+ problem file, which EvalPlus reads through
HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH; ``_evalplus_worker`` runs
``evalplus.evaluate.evaluate`` on it under ``run_sandboxed`` (own session, time and memory
limits, writes confined to its folder) and leaves the results JSON behind. Workarounds for
EvalPlus 0.3.1, each explained where it is applied: evaluate() returns nothing (the results
JSON is read), an existing results file is silently reused (every run uses a fresh folder),
a non-daemon watchdog thread delays exit by 20 s (the worker calls os._exit), and the
find_zero oracle never passes (the worker repairs it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError
from spd_bench.scoring import ScoreOutput, ScoreSettings
from spd_bench.scoring import _evalplus_worker as worker
from spd_bench.scoring.sandbox import run_sandboxed

WORKER = Path(worker.__file__)
DATASETS = ("humaneval", "mbpp")
EVALUATOR_MEMORY_MB = 2048  # EvalPlus's own imports (datasets, numpy) map about 1.5 GB before any test runs
STARTUP_S = 60.0  # allowance for starting the evaluator and computing the reference outputs
PASS = "pass"
_NATIVE_MBPP_ID = re.compile(r"^Mbpp/\d+$")
_PASS_AT = (1, 10, 100)


def evalplus_dataset(task: Any) -> str:
    """Which EvalPlus dataset rules apply: the task's ``evalplus_dataset`` option, else by name."""
    dataset = task.options.get("evalplus_dataset") or ("mbpp" if "mbpp" in task.name.lower() else "humaneval")
    if dataset not in DATASETS:
        raise UserError(f"task {task.name}: evalplus_dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    return dataset


def time_limits(task: Any) -> dict[str, float]:
    """EvalPlus's per-input time limit is max(min_time_limit, factor x the reference's time).

    The defaults are EvalPlus's (1 s, 4x). On a crowded machine a correct but slow solution can
    exceed them; tasks may raise them with the ``evalplus_min_time_limit`` and
    ``evalplus_gt_time_limit_factor`` options, at the price of slower failures on endless loops.
    """
    limits = {
        "min_time_limit": float(task.options.get("evalplus_min_time_limit", 1.0)),
        "gt_time_limit_factor": float(task.options.get("evalplus_gt_time_limit_factor", 4.0)),
    }
    if min(limits.values()) <= 0:
        raise UserError(f"task {task.name}: EvalPlus time limits must be positive, got {limits}")
    return limits


def solution_code(item: dict[str, Any], completion: str, prompt_format: str) -> tuple[str, bool]:
    """The program to test for one completion, and whether EvalPlus's sanitizer should clean it.

    A chat answer is a whole program (often inside markdown), so it is sanitized on its own. A
    plain completion continues the prompt, unless it writes the entry point's full definition
    itself; then prompt and completion are sanitized together, which keeps the completion's
    definition, its imports and helpers, and drops stray text and test code.
    """
    if prompt_format == "chat":
        return completion, True
    if re.search(rf"^\s*def\s+{re.escape(item['entry_point'])}\s*\(", completion, re.MULTILINE):
        return item["prompt"] + "\n" + completion, True
    return item["prompt"] + completion, False


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


def _problem_rows(items: list[dict[str, Any]], dataset: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Problems for the override file, under ids EvalPlus can parse; and the genuine MBPP+ ids.

    EvalPlus turns MBPP ids into numbers and applies per-problem type fixes by number, so every
    MBPP problem gets a neutral number; genuine MBPP+ problems (untagged inputs, an MBPP+ id)
    are listed so the worker applies the fixes that belong to them.
    """
    rows, native = [], {}
    for index, item in enumerate(items):
        task_id = _item_id(item)
        file_id = f"Mbpp/{1_000_000 + index}" if dataset == "mbpp" else task_id
        if dataset == "mbpp" and _NATIVE_MBPP_ID.match(task_id) and not worker.has_tags(item["base_input"]):
            native[file_id] = task_id
        rows.append(
            {
                "task_id": file_id,
                "prompt": item["prompt"],
                "entry_point": item["entry_point"],
                "canonical_solution": item["canonical_solution"],
                "base_input": item["base_input"],
                "plus_input": item.get("plus_input") or [],
                "atol": item.get("atol") or 0,
                "contract": item.get("contract") or "",
            }
        )
    return rows, native


def _evaluate(
    dataset: str,
    rows: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    native: dict[str, str],
    base_only: bool,
    limits: dict[str, float],
    settings: ScoreSettings,
) -> dict[str, Any]:
    """Run the worker in the sandbox on a fresh folder; its output: results JSON and run facts."""
    work_dir = Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="evalplus-", dir=work_dir)).resolve()
    try:
        with open(folder / "problems.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        (folder / "samples.json").write_text(json.dumps(samples))
        parallel = max(1, min(len(samples), os.cpu_count() or 1))
        config = {
            "dataset": dataset,
            "problems": str(folder / "problems.jsonl"),
            "samples": str(folder / "samples.json"),
            "base_only": base_only,
            "parallel": parallel,
            "native_mbpp_ids": native,
            **limits,
        }
        (folder / "config.json").write_text(json.dumps(config))
        memory_mb = settings.memory_mb + EVALUATOR_MEMORY_MB
        timeout = STARTUP_S + settings.timeout_s * len(samples) / parallel
        result = run_sandboxed(
            [sys.executable, "-I", "-B", str(WORKER), "evaluate", str(folder / "config.json")],
            timeout_s=timeout,
            memory_mb=memory_mb,
            workdir=folder,
            keep_dir=True,
            env={
                # Each check process lowers its own address-space limit to this; it may not exceed ours.
                "EVALPLUS_MAX_MEMORY_BYTES": str(memory_mb * 2**20),
                "TQDM_DISABLE": "1",
            },
        )
        output_path = result.run_dir / worker.OUTPUT if result.run_dir else None
        if result.timed_out:
            raise UserError(
                f"EvalPlus evaluation of {len(samples)} samples took longer than {timeout:.0f} s;"
                " raise timeout_s (seconds allowed per sample) in the score settings"
            )
        if result.returncode != 0 or output_path is None or not output_path.exists():
            raise RuntimeError(f"EvalPlus evaluation failed (exit {result.returncode}): {result.stderr[-3000:]}")
        output = json.loads(output_path.read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    output["config"] = {key: value for key, value in config.items() if key not in ("problems", "samples")}
    output["config"].update(memory_mb=memory_mb, timeout_s=timeout)
    return output


def _score_output(
    items: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    responses: dict[str, list[str]],
    output: dict[str, Any],
    base_only: bool,
) -> ScoreOutput:
    """Metrics and per-item rows from EvalPlus's statuses (pass@k computed as EvalPlus does)."""
    evaluated = output["results"]["eval"]
    counts: list[tuple[int, int, int]] = []  # n, base passes, base+plus passes
    per_item = []
    for index, (item, row) in enumerate(zip(items, rows)):
        runs = evaluated.get(row["task_id"])
        if not runs:
            raise RuntimeError(f"EvalPlus returned no result for {_item_id(item)}")
        base = [run["base_status"] == PASS for run in runs]
        plus = [b and run["plus_status"] == PASS for b, run in zip(base, runs)] if not base_only else base
        counts.append((len(runs), sum(base), sum(plus)))
        entry = {
            "doc_id": index,
            "id": _item_id(item),
            "score": float(base[0]),
            "response": responses[_item_id(item)][0],
            "status": runs[0]["base_status"],
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
        native=output,
    )


class EvalPlusScorer:
    """pass@1 on base tests (and on base + plus tests where plus inputs exist), pass@k for n > 1."""

    def score_model(
        self, model: Any, tokenizer: Any, task: Any, items: list[dict[str, Any]], settings: ScoreSettings
    ) -> ScoreOutput:
        """Generate ``settings.n_samples`` completions per item (seed 0, no top-p/top-k cut), then score them."""
        _require_permission(settings)  # before generating, not after
        n = settings.n_samples
        if n < 1:
            raise UserError(f"n_samples must be at least 1, got {n}")
        if n > 1 and settings.temperature <= 0:
            raise UserError("n_samples > 1 needs sampling: set a temperature above 0 (greedy samples are identical)")
        from spd_bench.engine.generate import generate_completions

        prompts = [item["prompt"] for item in items for _ in range(n)]
        completions = generate_completions(
            model,
            tokenizer,
            prompts,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=1.0,
            top_k=0,
            batch_size=settings.batch_size,
            seed=0,
            stop=list(task.stop),
        )
        responses = {_item_id(item): completions[i * n : (i + 1) * n] for i, item in enumerate(items)}
        return self.score_responses(task, items, responses, settings)

    def score_responses(
        self, task: Any, items: list[dict[str, Any]], responses: dict[str, list[str]], settings: ScoreSettings
    ) -> ScoreOutput:
        """Score stored completions (task id -> completions; the prompt is not included)."""
        _check_inputs(items, responses, settings)
        dataset = evalplus_dataset(task)
        rows, native = _problem_rows(items, dataset)
        samples = []
        for item, row in zip(items, rows):
            for completion in responses[_item_id(item)]:
                code, sanitize = solution_code(item, completion, task.prompt_format)
                samples.append(
                    {"task_id": row["task_id"], "code": code, "sanitize": sanitize, "entry_point": item["entry_point"]}
                )
        base_only = not any(row["plus_input"] for row in rows)
        output = _evaluate(dataset, rows, samples, native, base_only, time_limits(task), settings)
        return _score_output(items, rows, responses, output, base_only)
