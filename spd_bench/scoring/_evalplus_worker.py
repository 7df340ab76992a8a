"""The process that runs EvalPlus, or records test inputs, inside the sandbox.

Run by path (``python -I _evalplus_worker.py MODE CONFIG``) so it needs nothing from spd_bench;
the scorer and the converter import its codec. It reads its inputs from CONFIG's folder and
writes ``output.json`` into its working directory (the sandbox folder).

- ``record``: execute each problem's reference code and tests with a recorder around the entry
  point, and return the argument tuples it was called with (tagged JSON, see ``encode_value``).
- ``evaluate``: sanitize the samples, write them to a fresh file, and run
  ``evalplus.evaluate.evaluate`` on the problem file named by HUMANEVAL/MBPP_OVERRIDE_PATH.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import random
import re
import signal
import sys
import traceback
from typing import Any

TAG = "__spd_type__"
OUTPUT = "output.json"
RECORD_TIMEOUT_S = 10  # per problem


class Unencodable(TypeError):
    """A value that has no tagged-JSON form (e.g. an instance of a user class)."""


# ---------------------------------------------------------------- tagged JSON codec
# JSON has no tuples, sets, complex numbers, bytes or non-string dict keys, but test inputs do,
# and a list where the function expects a tuple can change its result. Such values are stored
# as {"__spd_type__": kind, "items": ...}; plain JSON values stay as they are.


def encode_value(value: Any, strict: bool = True) -> Any:
    """Python value -> JSON value; non-JSON types become tagged objects (``repr`` if not strict)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode_value(v, strict) for v in value]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [encode_value(v, strict) for v in value]}
    if isinstance(value, (set, frozenset)):
        kind = "set" if isinstance(value, set) else "frozenset"
        return {TAG: kind, "items": [encode_value(v, strict) for v in _ordered(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and TAG not in value:
            return {k: encode_value(v, strict) for k, v in value.items()}
        return {TAG: "dict", "items": [[encode_value(k, strict), encode_value(v, strict)] for k, v in value.items()]}
    if isinstance(value, complex):
        return {TAG: "complex", "items": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {TAG: "bytes", "items": list(value)}
    if strict:
        raise Unencodable(f"cannot store a {type(value).__name__} as a test input")
    return repr(value)


def _ordered(values: set[Any] | frozenset[Any]) -> list[Any]:
    """Set members in a stable order, so the same set always encodes to the same text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def decode_value(value: Any) -> Any:
    """Inverse of ``encode_value``."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        kind = value.get(TAG)
        if kind is None:
            return {k: decode_value(v) for k, v in value.items()}
        items = value["items"]
        if kind == "tuple":
            return tuple(decode_value(v) for v in items)
        if kind == "set":
            return {decode_value(v) for v in items}
        if kind == "frozenset":
            return frozenset(decode_value(v) for v in items)
        if kind == "dict":
            return {decode_value(k): decode_value(v) for k, v in items}
        if kind == "complex":
            return complex(items[0], items[1])
        if kind == "bytes":
            return bytes(items)
        raise ValueError(f"unknown tagged value {kind!r}")
    return value


def has_tags(value: Any) -> bool:
    """Whether a JSON value holds tagged objects (inputs written by spd-bench's converter)."""
    if isinstance(value, list):
        return any(has_tags(v) for v in value)
    if isinstance(value, dict):
        return TAG in value or any(has_tags(v) for v in value.values())
    return False


# ---------------------------------------------------------------- record mode


class _Recorder:
    """Wraps the entry point and keeps a copy of the arguments of each outermost call."""

    def __init__(self, function: Any) -> None:
        self.function = function
        self.signature = _signature(function)
        self.depth = 0
        self.inputs: list[Any] = []
        self.skipped: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.depth == 0:  # recursive calls through the global name are not test inputs
            self.keep(args, kwargs)
        self.depth += 1
        try:
            return self.function(*args, **kwargs)
        finally:
            self.depth -= 1

    def keep(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            if kwargs:  # EvalPlus calls fn(*inputs): keyword arguments must become positional
                if self.signature is None:
                    raise Unencodable("keyword arguments to a function without a signature")
                bound = self.signature.bind(*args, **kwargs)
                if bound.kwargs:
                    raise Unencodable("keyword-only arguments")
                args = bound.args
            self.inputs.append(encode_value(copy.deepcopy(tuple(args))))
        except Exception as exc:  # noqa: BLE001 - any input that cannot be stored is reported, not fatal
            self.skipped.append(f"{type(exc).__name__}: {exc}")


def _signature(function: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


class _Timeout(BaseException):
    """Not an Exception, so that no handler in the recorder or in test code swallows it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout()


def record_problem(job: dict[str, Any]) -> dict[str, Any]:
    """Run one problem's reference code and tests, recording the entry point's inputs."""
    random.seed(0)  # some HumanEval checks draw random inputs: the same ones on every conversion
    namespace: dict[str, Any] = {"__name__": "solution"}  # not __main__: demo blocks stay quiet
    errors: list[str] = []
    recorder: _Recorder | None = None
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, RECORD_TIMEOUT_S)
    try:
        exec(compile(job["setup"], f"<{job['task_id']}>", "exec"), namespace)
        recorder = _Recorder(namespace[job["entry_point"]])
        namespace[job["entry_point"]] = recorder
        for test in job["tests"]:
            try:
                exec(compile(test, f"<{job['task_id']} test>", "exec"), namespace)
            except _Timeout:
                raise
            except BaseException as exc:  # noqa: BLE001 - a failing reference assert still gives its inputs
                errors.append(f"{test.strip()[:80]}: {type(exc).__name__}: {exc}"[:300])
    except _Timeout:
        errors.append(f"stopped after {RECORD_TIMEOUT_S} s")
    except BaseException as exc:  # noqa: BLE001
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {
        "task_id": job["task_id"],
        "inputs": recorder.inputs if recorder else [],
        "skipped": recorder.skipped if recorder else [],
        "errors": errors,
    }


def record(config: dict[str, Any]) -> dict[str, Any]:
    with open(config["jobs"], encoding="utf-8") as handle:
        jobs = json.load(handle)
    return {"problems": [record_problem(job) for job in jobs]}


# ---------------------------------------------------------------- evaluate mode


def _fix_find_zero_oracle() -> bool:
    """Repair EvalPlus 0.3.1's find_zero oracle; returns whether the repair applied.

    Its special oracle for HumanEval/32 checks |poly(x)| <= atol and then ``continue``s past the
    lines that mark the input as passed and count progress, so a correct find_zero is always
    scored as failed. The repair re-executes ``unsafe_execute``'s own source with those two lines
    added before the ``continue``; other EvalPlus versions that do not contain the faulty lines
    are left alone. Check processes are forked, so they inherit the repaired function.
    """
    import evalplus.eval as evalplus_eval

    source = inspect.getsource(evalplus_eval.unsafe_execute)
    pattern = re.compile(r"(\n([ \t]+)assert abs\(_poly\(\*inp, out\)\) <= atol\n)\2continue\n")
    if not pattern.search(source):
        return False
    fixed = pattern.sub(r"\1\2details[i] = True\n\2progress.value += 1\n\2continue\n", source)
    exec(compile(fixed, evalplus_eval.__file__, "exec"), evalplus_eval.__dict__)
    return True


class _TaggedJson:
    """Stands in for ``json`` inside evalplus.evaluate: failing inputs may be sets or tuples."""

    load = staticmethod(json.load)

    @staticmethod
    def dump(obj: Any, fp: Any, **kwargs: Any) -> None:
        json.dump(encode_value(obj, strict=False), fp, **kwargs)


def _decode_problems(loader: Any, native_ids: dict[str, str]) -> Any:
    """Wrap an EvalPlus problem loader so inputs come back as Python values.

    Tagged inputs are decoded; inputs of genuine MBPP+ problems (``native_ids``: id in the file ->
    MBPP+ id) get MBPP+'s own per-problem type fixes, which EvalPlus keys on the MBPP+ id.
    """

    def load(*args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
        from evalplus.data.mbpp import mbpp_deserialize_inputs

        problems = loader(*args, **kwargs)
        for task_id, problem in problems.items():
            for key in ("base_input", "plus_input"):
                if task_id in native_ids:
                    problem[key] = mbpp_deserialize_inputs(native_ids[task_id], problem[key])
                else:
                    problem[key] = [decode_value(inp) for inp in problem[key]]
        return problems

    return load


def _solutions(samples: list[dict[str, Any]]) -> list[dict[str, str]]:
    from evalplus.sanitize import sanitize

    rows = []
    for sample in samples:
        code = sample["code"]
        if sample["sanitize"]:
            code = sanitize(code, entrypoint=sample["entry_point"])
        rows.append({"task_id": sample["task_id"], "solution": code})
    return rows


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    variable = "HUMANEVAL_OVERRIDE_PATH" if config["dataset"] == "humaneval" else "MBPP_OVERRIDE_PATH"
    os.environ[variable] = config["problems"]  # read when evalplus.data is imported
    import multiprocessing

    # The check processes must inherit the repaired oracle and the decoded problems.
    multiprocessing.set_start_method("fork", force=True)
    import evalplus
    import evalplus.evaluate as evalplus_evaluate

    fixed = _fix_find_zero_oracle()
    native_ids = config.get("native_mbpp_ids", {})
    evalplus_evaluate.get_human_eval_plus = _decode_problems(evalplus_evaluate.get_human_eval_plus, native_ids)
    evalplus_evaluate.get_mbpp_plus = _decode_problems(evalplus_evaluate.get_mbpp_plus, native_ids)
    evalplus_evaluate.json = _TaggedJson  # type: ignore[assignment]

    with open(config["samples"], encoding="utf-8") as handle:
        samples = json.load(handle)
    samples_path = os.path.abspath("samples.jsonl")  # fresh folder: no stale results to reuse
    with open(samples_path, "w", encoding="utf-8") as handle:
        for row in _solutions(samples):
            handle.write(json.dumps(row) + "\n")
    evalplus_evaluate.evaluate(
        config["dataset"],
        samples=samples_path,
        base_only=config["base_only"],
        parallel=config["parallel"],
        min_time_limit=config["min_time_limit"],
        gt_time_limit_factor=config["gt_time_limit_factor"],
    )
    # evaluate() returns nothing: its results are in the JSON it writes next to the samples.
    with open(samples_path.replace(".jsonl", "_eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    return {"results": results, "find_zero_fixed": fixed, "evalplus_version": evalplus.__version__}


def main() -> None:
    # This folder holds spd_bench's evalplus.py, which would shadow the evalplus package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != here]
    mode, config_path = sys.argv[1], sys.argv[2]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    status = 0
    try:
        output = {"record": record, "evaluate": evaluate}[mode](config)
        with open(OUTPUT, "w", encoding="utf-8") as handle:
            json.dump(output, handle)
    except BaseException:  # noqa: BLE001 - report, then exit without waiting for EvalPlus's threads
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # EvalPlus leaves a non-daemon watchdog thread that sleeps 20 s; do not wait for it.
    os._exit(status)


if __name__ == "__main__":
    main()
