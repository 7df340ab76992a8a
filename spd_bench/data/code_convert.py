"""Turn plain HumanEval and MBPP rows into EvalPlus problems (HumanEval+/MBPP+ schema).

EvalPlus scores differentially: it runs the canonical solution on each problem's inputs and
compares the candidate's outputs with those. Plain HumanEval and MBPP carry tests as code (a
``check(candidate)`` function, ``assert`` lines) instead of inputs, so the inputs are recorded
by running that test code once with a recorder around the reference solution. The recording
executes dataset code, so it runs in the sandbox, never in this process.

Inputs are stored as tagged JSON (``_evalplus_worker.encode_value``), one tagged tuple of
arguments per call, so tuples, sets and non-string dict keys survive. The tags also tell the
scorer that these inputs need none of MBPP+'s per-problem type fixes. ``plus_input`` is empty:
EvalPlus's extra inputs come only with its own release (``spd_bench.data.evalplus_release``).
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from spd_bench.errors import UserError
from spd_bench.scoring import _evalplus_worker as worker

log = logging.getLogger(__name__)


# HumanEval's own check accepts any root x of the polynomial with |poly(x)| < 1e-4; EvalPlus's
# find_zero oracle applies the problem's atol the same way, so the tolerance is carried over.
_ATOL_BY_ENTRY_POINT = {"find_zero": 1e-4}


def _require(rows: list[dict[str, Any]], fields: tuple[str, ...], kind: str) -> None:
    for index, row in enumerate(rows):
        missing = [name for name in fields if name not in row]
        if missing:
            raise UserError(f"{kind} row {index} lacks {', '.join(missing)}; each row needs {', '.join(fields)}")


def humaneval_to_evalplus(
    rows: list[dict[str, Any]], *, workdir: Path | None = None, timeout_s: float = 300.0, memory_mb: int = 2048
) -> list[dict[str, Any]]:
    """EvalPlus problems from HumanEval rows (task_id, prompt, canonical_solution, test, entry_point)."""
    _require(rows, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), "HumanEval")
    jobs = [
        {
            "task_id": row["task_id"],
            "setup": row["prompt"] + row["canonical_solution"] + "\n" + row["test"],
            "entry_point": row["entry_point"],
            "tests": [f"check({row['entry_point']})"],
        }
        for row in rows
    ]
    recorded = _record(jobs, workdir, timeout_s, memory_mb)
    problems = []
    for row in rows:
        inputs = _inputs_or_none(row["task_id"], recorded[row["task_id"]])
        if inputs is not None:
            problems.append(
                _problem(row["task_id"], row["prompt"], row["entry_point"], row["canonical_solution"], inputs)
            )
    return problems


def mbpp_to_evalplus(
    rows: list[dict[str, Any]], *, workdir: Path | None = None, timeout_s: float = 300.0, memory_mb: int = 2048
) -> list[dict[str, Any]]:
    """EvalPlus problems from MBPP rows (task_id, text, code, test_list, test_setup_code).

    The prompt follows MBPP+: a docstring holding the task text and the first test; the
    completion is the whole function, and the reference code is the canonical solution.
    Task ids become ``Mbpp/<task_id>`` as in MBPP+.
    """
    _require(rows, ("task_id", "text", "code", "test_list"), "MBPP")
    jobs, meta = [], {}
    for row in rows:
        task_id = f"Mbpp/{row['task_id']}"
        code = row["code"].replace("\r\n", "\n")
        tests = list(row["test_list"])
        entry_point = mbpp_entry_point(code, tests)
        if entry_point is None:
            log.warning("MBPP %s: skipped, its tests call none of the functions its code defines", task_id)
            continue
        setup = (row.get("test_setup_code") or "").replace("\r\n", "\n")
        # MBPP's setup code may use what the solution defines (e.g. build a tree of its Node class).
        jobs.append({"task_id": task_id, "setup": code + "\n" + setup, "entry_point": entry_point, "tests": tests})
        meta[task_id] = (f'"""\n{row["text"]}\n{tests[0]}\n"""\n', entry_point, code)
    recorded = _record(jobs, workdir, timeout_s, memory_mb)
    problems = []
    for task_id, (prompt, entry_point, code) in meta.items():
        inputs = _inputs_or_none(task_id, recorded[task_id])
        if inputs is not None:
            problems.append(_problem(task_id, prompt, entry_point, code, inputs))
    return problems


def mbpp_entry_point(code: str, tests: list[str]) -> str | None:
    """The function of ``code`` that the first test calls (``assert set(f(x)) == ...`` -> ``f``)."""
    try:
        defined = {node.name for node in ast.parse(code).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    except SyntaxError:
        return None
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
        for call in calls:  # ast.walk goes outside-in: set(f(x)) yields set, then f
            if call.func.id in defined:  # type: ignore[attr-defined]
                return call.func.id  # type: ignore[attr-defined]
    return None


def _problem(task_id: str, prompt: str, entry_point: str, canonical: str, inputs: list[Any]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "prompt": prompt,
        "entry_point": entry_point,
        "canonical_solution": canonical,
        "base_input": inputs,
        "plus_input": [],
        "atol": _ATOL_BY_ENTRY_POINT.get(entry_point, 0),
        "contract": "",
    }


def _inputs_or_none(task_id: str, recorded: dict[str, Any]) -> list[Any] | None:
    """The recorded inputs, with a warning for anything lost; None when nothing usable was recorded."""
    if recorded["skipped"]:
        skipped = recorded["skipped"]
        log.warning("%s: %d test inputs cannot be stored (%s)", task_id, len(skipped), skipped[0])
    if recorded["errors"]:
        log.warning("%s: reference code failed a test (%s)", task_id, recorded["errors"][0])
    if not recorded["inputs"]:
        log.warning("%s: skipped, no test input could be recorded", task_id)
        return None
    return recorded["inputs"]


def _record(
    jobs: list[dict[str, Any]], workdir: Path | None, timeout_s: float, memory_mb: int
) -> dict[str, dict[str, Any]]:
    """Run the recorder over ``jobs`` in one sandboxed process; task_id -> what it recorded."""
    if not jobs:
        return {}
    base = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="evalplus-record-", dir=base))
    try:
        (folder / "jobs.json").write_text(json.dumps(jobs))
        (folder / "config.json").write_text(json.dumps({"jobs": str(folder / "jobs.json")}))
        result = worker.launch(
            "record",
            str(folder / "config.json"),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            workdir=folder,
            keep_dir=True,
        )
        output = result.run_dir / worker.OUTPUT if result.run_dir else None
        if result.timed_out:
            raise UserError(f"recording the test inputs of the code data took longer than {timeout_s:.0f} s;"
                            " check the data file's test code for slow or endless tests")
        if result.returncode != 0 or output is None or not output.exists():
            raise RuntimeError(f"recording test inputs failed (exit {result.returncode}): {result.stderr[-2000:]}")
        problems = json.loads(output.read_text())["problems"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {problem["task_id"]: problem for problem in problems}
