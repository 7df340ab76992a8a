"""Check a code problem's candidate programs against its canonical solution, sandboxed.

All candidates of one problem run in ONE sandboxed process (spd_bench.scoring.sandbox): the
canonical program ``prompt + canonical_solution`` and each candidate ``prompt + completion``
are executed, the entry point is called on every ``base_input``, and a candidate passes when
each call gives the canonical result (EvalPlus's rule: equal, or floats within ``atol``,
1e-6 when the item gives none; an input on which the canonical solution raises must raise
the same exception type). A candidate that kills its process (``os._exit``, a crash, the
wall clock) fails, and the remaining candidates run again in a fresh process.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTUP_S = 10.0  # interpreter start and harness set-up, on top of the per-candidate limit

HARNESS = r'''
import copy, json, math, os, signal, sys

payload = json.loads(sys.stdin.read())
report = sys.stdout
silent = open(os.devnull, "w")


class Timeout(BaseException):
    pass


def on_alarm(signum, frame):
    raise Timeout()


signal.signal(signal.SIGALRM, on_alarm)


def run(program):
    """Results of the entry point on every input, or None when the program cannot be run."""
    namespace = {"__name__": "__candidate__"}
    results = []
    sys.stdout = sys.stderr = silent
    signal.setitimer(signal.ITIMER_REAL, payload["timeout_s"])
    try:
        exec(compile(program, "<candidate>", "exec"), namespace)
        function = namespace[payload["entry_point"]]
        for args in payload["inputs"]:
            try:
                results.append(("ok", function(*copy.deepcopy(args))))
            except Exception as exc:
                results.append(("error", type(exc).__name__))
    except BaseException:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout, sys.stderr = report, sys.__stderr__
    return results


def close(out, exp, atol):
    if isinstance(out, bool) or isinstance(exp, bool):
        return out is exp
    if isinstance(out, (int, float)) and isinstance(exp, (int, float)):
        return math.isclose(out, exp, rel_tol=1e-7, abs_tol=atol)
    if isinstance(out, (list, tuple)) and type(out) is type(exp) and len(out) == len(exp):
        return all(close(o, e, atol) for o, e in zip(out, exp))
    return False


def same(out, exp, atol):
    if out[0] != exp[0]:
        return False
    if exp[0] == "error":
        return out[1] == exp[1]
    try:
        if bool(out[1] == exp[1]):
            return True
    except Exception:
        return False
    return close(out[1], exp[1], atol)


def verdict(results, expected):
    if results is None or len(results) != len(expected):
        return 0
    return int(all(same(o, e, payload["atol"] or 1e-6) for o, e in zip(results, expected)))


expected = run(payload["canonical"])
if expected is None or all(kind == "error" for kind, _ in expected):
    report.write(payload["nonce"] + " canonical fails\n")
    report.flush()
    os._exit(0)
report.write(payload["nonce"] + " canonical ok\n")
report.flush()
for index in range(payload["start"], len(payload["candidates"])):
    passed = verdict(run(payload["candidates"][index]), expected)
    report.write(f"{payload['nonce']} {index} {passed}\n")
    report.flush()
os._exit(0)
'''


@dataclass
class ProblemCheck:
    """Per-candidate verdicts, or why the problem's canonical solution could not serve as reference."""

    passed: list[bool]
    processes: int
    canonical_error: str | None = None


def _parse(stdout: str, nonce: str) -> tuple[dict[int, bool], str | None]:
    """Verdicts by candidate index, and the canonical solution's state ("ok", "fails" or None: not reached)."""
    verdicts: dict[int, bool] = {}
    canonical = None
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] != nonce:
            continue
        if parts[1] == "canonical" and parts[2] in ("ok", "fails"):
            canonical = parts[2]
        elif parts[1].isdigit() and parts[2] in ("0", "1"):
            verdicts[int(parts[1])] = parts[2] == "1"
    return verdicts, canonical


def check_problem(
    item: dict[str, Any], completions: list[str], *, timeout_s: float, memory_mb: int, workdir: Path
) -> ProblemCheck:
    """Run every completion of one EvalPlus-schema item; ``timeout_s`` bounds each candidate."""
    from spd_bench.scoring.sandbox import run_python

    nonce = secrets.token_hex(8)  # marks the harness's lines, so a candidate's own output cannot pose as a verdict
    payload = {
        "nonce": nonce,
        "canonical": item["prompt"] + item["canonical_solution"],
        "candidates": [item["prompt"] + completion for completion in completions],
        "entry_point": item["entry_point"],
        "inputs": item["base_input"],
        "atol": float(item.get("atol") or 0.0),
        "timeout_s": timeout_s,
    }
    verdicts: dict[int, bool] = {}
    start, processes = 0, 0
    while start < len(completions):
        result = run_python(
            HARNESS, stdin=json.dumps({**payload, "start": start}), memory_mb=memory_mb, workdir=workdir,
            timeout_s=STARTUP_S + timeout_s * (len(completions) - start + 1),
        )
        processes += 1
        found, canonical = _parse(result.stdout, nonce)
        if canonical != "ok":
            reason = "it raises on every input or does not load" if canonical == "fails" else _early_end(result)
            return ProblemCheck(passed=[False] * len(completions), processes=processes, canonical_error=reason)
        verdicts.update(found)
        stopped = next((i for i in range(start, len(completions)) if i not in verdicts), None)
        if stopped is None:
            break
        verdicts[stopped] = False  # this candidate ended the process before reporting
        start = stopped + 1
    return ProblemCheck(passed=[verdicts[i] for i in range(len(completions))], processes=processes)


def _early_end(result: Any) -> str:
    """Why a sandboxed run ended before the canonical solution was checked."""
    if result.timed_out:
        return "the sandbox's time limit was reached"
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"the process exited with code {result.returncode}"
