"""The sandboxed side of code scoring: the processes that run dataset or model-written code.

Run by path (``python -I [-S] _evalplus_worker.py MODE [CONFIG]``) so it needs nothing from
spd_bench; the harness imports its codec. Each mode sees only what it needs:

- ``record``: execute each problem's reference code and tests with a recorder around the entry
  point and return the argument tuples it was called with (CONFIG names the jobs; the answer
  is ``output.json`` in the working directory).
- ``reference``: run each problem's reference solution on its inputs and write what it returned
  (or raised) and how long each call took, one JSON line per problem. Never sees candidate code.
- ``sanitize``: clean candidate programs with EvalPlus's sanitizer (parses, never runs them).
- ``run``: run a small batch of candidate programs (each of a different problem) on their
  inputs and write what each returned, as plain data. A candidate gets its code, the entry
  point, the inputs and the per-input time limits: no expected outputs, no reference solution,
  no problem file (its batch's other jobs, of other problems, are all the process holds
  besides). Each candidate's phase (base, plus) runs in its own forked child, in a fresh
  folder, under EvalPlus's own guard, swallow_io and time_limit; where the kernel has Landlock
  the child may read only the Python installation and the run's folders, and may not signal or
  trace anything outside itself. A child that dies, hangs or floods its pipe ends only itself.
  The comparison with expected outputs happens in the harness.

The jobs of ``reference``, ``sanitize`` and ``run`` arrive on stdin; their answers are JSON
lines on stdout, written through a private descriptor while fds 0 and 1 point at /dev/null.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time

TYPE_CHECKING = False  # typing costs a few milliseconds in every candidate batch; annotations only need it here
if TYPE_CHECKING:
    from typing import Any

TAG = "__spd_type__"
OUTPUT = "output.json"
RECORD_TIMEOUT_S = 10  # per problem
SANITIZE_TIMEOUT_S = 10  # per program
_BIG_INT_BITS = 12_000  # beyond about 3,600 digits, ints travel as hex (decimal text is capped at 4,300 digits)
_KEYS_VIEW, _ITEMS_VIEW = type({}.keys()), type({}.items())


class Unencodable(TypeError):
    """A value that has no tagged-JSON form (e.g. an instance of a user class)."""


class Opaque:
    """Stands for a returned value that is not plain data; equal to nothing, not even itself."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


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
    """Inverse of ``encode_value`` and ``encode_output`` (a value that was not plain data -> ``Opaque``)."""
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
            return complex(decode_value(items[0]), decode_value(items[1]))
        if kind == "bytes":
            return bytes(items)
        if kind == "float":
            return float(items)
        if kind == "int":
            return int(items, 16)
        if kind == "opaque":
            return Opaque(str(items))
        raise ValueError(f"unknown tagged value {kind!r}")
    return value


def has_tags(value: Any) -> bool:
    """Whether a JSON value holds tagged objects (inputs written by spd-bench's converter)."""
    if isinstance(value, list):
        return any(has_tags(v) for v in value)
    if isinstance(value, dict):
        return TAG in value or any(has_tags(v) for v in value.values())
    return False


def encode_output(value: Any) -> Any:
    """A returned value as strict JSON: plain data only, read through the built-in types' own methods.

    Subclasses of plain types (an int whose ``__eq__`` always answers True, a namedtuple, a
    Counter) are stored as the plain value they hold, and numpy scalars as their ``item()``;
    anything else becomes an opaque marker that equals nothing. Non-finite floats and ints too
    long for decimal JSON text get tags. Reading never calls the value's own methods except a
    numpy scalar's ``item``, so what is stored is what the candidate returned, not what its
    methods claim.
    """
    try:
        return _plain(value)
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        return {TAG: "opaque", "items": f"unreadable ({type(exc).__name__})"}


def _plain(value: Any) -> Any:
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if isinstance(value, int):
        number = int.__index__(value)
        return number if number.bit_length() <= _BIG_INT_BITS else {TAG: "int", "items": hex(number)}
    if isinstance(value, float):
        return _float(float.__float__(value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [_plain(v) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {TAG: "tuple", "items": [_plain(v) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return _plain_dict(dict.items(value))
    if isinstance(value, (set, frozenset, _KEYS_VIEW, _ITEMS_VIEW)):
        return _plain_set(value)
    if isinstance(value, complex):
        return {TAG: "complex", "items": [_float(complex.real.__get__(value)), _float(complex.imag.__get__(value))]}
    if isinstance(value, bytes):
        return {TAG: "bytes", "items": list(bytes.__iter__(value))}
    if isinstance(value, bytearray):
        return {TAG: "bytes", "items": list(bytearray.__iter__(value))}
    if kind.__module__ == "numpy" and kind.__name__ != "ndarray" and hasattr(kind, "item"):
        return _plain(value.item())
    return {TAG: "opaque", "items": f"{kind.__module__}.{kind.__qualname__}"}


def _plain_set(value: Any) -> Any:
    """A set, frozenset or dict key/item view (which compares like a set), members in a stable order."""
    if isinstance(value, frozenset):
        tag, members = "frozenset", frozenset.__iter__(value)
    else:
        tag, members = "set", set.__iter__(value) if isinstance(value, set) else iter(value)
    encoded = [_plain(v) for v in members]
    return {TAG: tag, "items": sorted(encoded, key=lambda m: json.dumps(m, sort_keys=True))}


def _plain_dict(items: Any) -> Any:
    pairs = [(_plain(k), _plain(v)) for k, v in items]
    if all(type(k) is str for k, _ in pairs) and not any(k == TAG for k, _ in pairs):
        return dict(pairs)
    return {TAG: "dict", "items": [[k, v] for k, v in pairs]}


def _float(number: float) -> Any:
    return number if math.isfinite(number) else {TAG: "float", "items": repr(number)}


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
        import copy

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


def _signature(function: Any) -> Any:
    import inspect

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
    import random
    import signal

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


# ---------------------------------------------------------------- answers on a private descriptor


def _private_stdout() -> int:
    """A descriptor for answers; fds 0 and 1 then point at /dev/null, so stray prints cannot mix in."""
    answers = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.close(devnull)
    return answers


def _emit(fd: int, row: dict[str, Any]) -> None:
    data = (json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


# ---------------------------------------------------------------- reference mode


def reference(job: dict[str, Any]) -> None:
    """Reference outputs and times per problem, as EvalPlus's ``trusted_exec`` computes them."""
    answers = _private_stdout()
    for problem in job["problems"]:
        _emit(answers, _reference_problem(problem))


def _reference_problem(problem: dict[str, Any]) -> dict[str, Any]:
    phases = {}
    for name, inputs in problem["phases"].items():
        namespace: dict[str, Any] = {}
        try:
            exec(problem["code"], namespace)
            function = namespace[problem["entry_point"]]
        except BaseException as exc:  # noqa: BLE001 - dataset code: report, do not die
            return {"key": problem["key"], "load_error": f"{_error_name(exc)}: {exc}"[:300]}
        phases[name] = _reference_calls(function, inputs, problem["output_not_none"])
    return {"key": problem["key"], "phases": phases}


def _reference_calls(function: Any, inputs: list[Any], output_not_none: bool) -> dict[str, Any]:
    """Outcomes are read after all calls, as trusted_exec returns its list of results."""
    results, times = [], []
    for raw in inputs:
        args = decode_value(raw)
        start = time.time()
        try:
            results.append(("ok", function(*args)))
        except BaseException as exc:  # noqa: BLE001 - an input on which the reference raises
            results.append(("error", _error_name(exc)))
        times.append(time.time() - start)
    outcomes = []
    for kind, value in results:
        if kind == "ok":
            outcomes.append(["ok", encode_output(value is not None if output_not_none else value)])
        else:
            outcomes.append(["error", value])
    return {"outcomes": outcomes, "times": times}


# ---------------------------------------------------------------- sanitize mode


def sanitize_programs(job: dict[str, Any]) -> None:
    """EvalPlus's sanitizer on each program; a program it cannot clean in time is kept as it is."""
    import signal

    from evalplus.sanitize import sanitize

    answers = _private_stdout()
    signal.signal(signal.SIGALRM, _on_alarm)
    for index, sample in enumerate(job["samples"]):
        code = sample["code"]
        signal.setitimer(signal.ITIMER_REAL, SANITIZE_TIMEOUT_S)
        try:
            code = sanitize(code, entrypoint=sample["entry_point"])
        except (_Timeout, Exception):  # noqa: BLE001 - the raw program is then scored as it is
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _emit(answers, {"i": index, "code": code})


# ---------------------------------------------------------------- run mode

# Landlock (linux/landlock.h): the same numbers sandbox.py uses; this file cannot import it.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_PR_SET_NO_NEW_PRIVS = 38
_FS_READ_FILE, _FS_READ_DIR = 1 << 2, 1 << 3
_SCOPE_SIGNAL_AND_SOCKETS = 0b11  # ABI 6
_CHILD_EVENTS = ("loaded", "load_error", "runner_error")


def run_candidates(jobs: Any) -> None:
    """Run a batch of candidates, one forked child per candidate and phase; relay what each reports.

    The first stdin line holds the batch's settings, each further line one candidate. A child
    writes to its own pipe; this process checks each line, stamps it with the candidate and
    phase, and writes it out, then reports how the child ended. Before each candidate it writes
    "start", so the harness knows whose child ended the batch, if one did, and what to run again.
    """
    import resource  # noqa: F401 - imported here once, not by reliability_guard in every child
    import subprocess  # noqa: F401

    answers = _private_stdout()
    settings = json.loads(jobs.readline())
    utils = _evalplus_utils(settings["evalplus_utils"])
    # Temporary files go into the run's own folder: a read grant on TMPDIR itself could cover
    # more (under bubblewrap /tmp also holds the mount points of the bound host folders, such as
    # a checkout and its environment that live under /tmp).
    private_tmp = os.path.join(os.getcwd(), ".tmp")
    os.makedirs(private_tmp, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = private_tmp
    ruleset = _read_ruleset(settings["readable"] + [[os.getcwd(), "read"]])
    sys.path.extend(settings["site_paths"])
    for name in settings["preload"]:
        try:
            __import__(name)
        except ImportError:
            pass  # not installed: the program's own import fails, as it would anywhere
    private = [answers, jobs.fileno()]
    for line in jobs:
        job = json.loads(line)
        _emit(answers, {"c": job["c"], "e": "start"})
        for phase in job["phases"]:
            ended = _run_phase_child(answers, private, job, phase, settings, utils, ruleset)
            _emit(answers, {"c": job["c"], "p": phase["name"], "e": "end", "how": ended})


def _evalplus_utils(path: str) -> Any:
    """evalplus/eval/utils.py, loaded by path: importing the package would load numpy in every run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evalplus_eval_utils", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_phase_child(
    answers: int, private: list[int], job: dict[str, Any], phase: dict[str, Any], settings: dict[str, Any],
    utils: Any, ruleset: int | None,
) -> str:
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        for fd in private:
            os.close(fd)  # the child keeps only its own pipe: no other candidate's answers or jobs
        _child(write_end, job, phase, settings, utils, ruleset)
    os.close(write_end)
    try:
        return _relay(answers, read_end, child, job["c"], phase, settings["output_bytes"])
    finally:
        os.close(read_end)


def _child(out: int, job: dict[str, Any], phase: dict[str, Any], settings: dict[str, Any], utils: Any,
           ruleset: int | None) -> None:
    """The candidate's process for one phase: its own folder, confined, guarded as EvalPlus does."""
    try:
        os.setpgid(0, 0)  # its own group, so whatever it starts is killed with it
        folder = f"c{job['c']}-{phase['name']}"
        os.mkdir(folder)
        os.chdir(folder)  # EvalPlus runs each check in a fresh temporary folder
        if ruleset is not None:
            _restrict(ruleset)
        utils.reliability_guard(maximum_memory_bytes=settings["memory_bytes"])
        _run_phase(out, job, phase, utils)
    except BaseException as exc:  # noqa: BLE001 - report what stopped the runner itself
        _emit(out, {"e": "runner_error", "error": _error_name(exc)})
    finally:
        os._exit(0)


def _run_phase(out: int, job: dict[str, Any], phase: dict[str, Any], utils: Any) -> None:
    """EvalPlus's unsafe_execute without the comparison: outputs go out, verdicts are made elsewhere."""
    namespace: dict[str, Any] = {}
    try:
        with utils.swallow_io():
            exec(job["code"], namespace)
            function = namespace[job["entry_point"]]
    except BaseException as exc:  # noqa: BLE001 - a program that does not load fails
        _emit(out, {"e": "load_error", "error": _error_name(exc)})
        return
    _emit(out, {"e": "loaded"})
    for index, (raw, limit) in enumerate(zip(phase["inputs"], phase["limits"])):
        args = decode_value(raw)
        try:
            with utils.time_limit(limit):
                with utils.swallow_io():
                    result = function(*args)
        except utils.TimeoutException:
            _emit(out, {"i": index, "k": "timeout"})
            return  # a timed-out input always fails, and EvalPlus stops at the first failure
        except BaseException as exc:  # noqa: BLE001 - the verdict decides whether this raise was expected
            _emit(out, {"i": index, "k": "error", "error": _error_name(exc)})
            continue
        _emit(out, {"i": index, "k": "ok", "v": encode_output(result)})


def _relay(answers: int, pipe: int, child: int, candidate: int, phase: dict[str, Any], limit_bytes: int) -> str:
    """Forward the child's lines until it exits or its budget runs out; how it ended.

    Each line is parsed and rewritten with the fields a child may report, stamped with the
    candidate and phase by this process, so a child cannot speak for another candidate.
    """
    import select
    import signal

    deadline = time.monotonic() + phase["budget"]
    watch = _pidfd(child)
    os.set_blocking(pipe, False)
    poller = select.poll()
    poller.register(pipe, select.POLLIN)
    if watch is not None:
        poller.register(watch, select.POLLIN)
    pending, received, ended = bytearray(), 0, None
    try:
        while ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                ended = "timeout"
                break
            wait_s = remaining if watch is not None else min(remaining, 0.01)
            if watch is None and _exited(child):
                ended = "exited"
            for fd, _ in poller.poll(wait_s * 1000):
                if fd == watch:
                    ended = "exited"
                    continue
                data = _read_some(pipe)
                if data is None:
                    poller.unregister(pipe)  # closed; the exit will follow
                    continue
                received += len(data)
                if received > limit_bytes:
                    ended = "too much output"
                    break
                _forward(answers, pending, data, candidate, phase["name"])
        if ended == "exited":
            _forward(answers, pending, _drain(pipe), candidate, phase["name"])  # all it wrote is in the pipe now
    finally:
        for kill in (os.kill, os.killpg):  # the child, if still there, and what it started
            try:
                kill(child, signal.SIGKILL)
            except OSError:
                pass
        status = os.waitpid(child, 0)[1]
        if watch is not None:
            os.close(watch)
    if ended != "exited":
        return ended
    code = os.waitstatus_to_exitcode(status)
    return f"signal {-code}" if code < 0 else f"exit {code}"


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its id stays reserved for the group kill)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _read_some(fd: int) -> bytes | None:
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""
    return data or None


def _drain(fd: int) -> bytes:
    chunks = []
    while True:
        data = _read_some(fd)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _forward(answers: int, pending: bytearray, data: bytes, candidate: int, phase: str) -> None:
    """Add ``data`` to ``pending`` and relay the complete lines; the incomplete rest stays pending."""
    pending += data
    if b"\n" not in data:
        return
    cut = pending.rfind(b"\n")
    for line in bytes(pending[:cut]).split(b"\n"):
        row = _child_row(line)
        if row is not None:
            _emit(answers, {**row, "c": candidate, "p": phase})
    del pending[: cut + 1]


def _child_row(line: bytes) -> dict[str, Any] | None:
    """The fields a child may report, from one of its lines; None for anything else."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    error = str(row.get("error", ""))[:200]
    if row.get("e") in _CHILD_EVENTS:
        return {"e": row["e"], "error": error}
    if type(row.get("i")) is int and row.get("k") in ("ok", "error", "timeout"):
        return {"i": row["i"], "k": row["k"], "v": row.get("v"), "error": error}
    return None


def _landlock() -> tuple[Any, int]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return libc, max(int(version), 0)


def _read_ruleset(readable: list[list[str]]) -> int | None:
    """A Landlock ruleset that allows reads only where ``readable`` says; None without Landlock.

    ``readable`` holds [path, "read"] (read files beneath it, list its folders) and [path, "list"]
    (list the folder and the folders beneath it, read no file): Python's importer must list
    site-packages to find a package in it, but the files of a package that ships benchmark
    problems stay closed. It also forbids signals to processes outside the child (Landlock ABI 6+).
    """
    import ctypes

    libc, abi = _landlock()
    if not abi:
        return None

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = RulesetAttr(_FS_READ_FILE | _FS_READ_DIR, 0, _SCOPE_SIGNAL_AND_SOCKETS if abi >= 6 else 0)
    size = 24 if abi >= 6 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    for path, access in readable:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        is_dir = os.path.isdir(path)
        allowed = (_FS_READ_FILE if access == "read" else 0) | (_FS_READ_DIR if is_dir else 0)
        if allowed:
            rule = PathBeneath(allowed, fd)
            added = libc.syscall(_SYS_ADD_RULE, ruleset, ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
        os.close(fd)
        if allowed and added < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    return int(ruleset)


def _restrict(ruleset: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


# ---------------------------------------------------------------- harness side


def launch(mode: str, *args: str, site: bool = True, **options: Any) -> Any:
    """Run this worker in ``mode`` in the sandbox: the one launcher every caller uses.

    ``options`` go to ``spd_bench.scoring.sandbox.run_sandboxed`` (stdin, timeout_s, memory_mb,
    workdir, ...); ``site=False`` starts Python without site-packages on sys.path (candidates
    get only the paths they are given).
    """
    from spd_bench.scoring.sandbox import run_sandboxed

    flags = ["-I", "-B"] if site else ["-I", "-S", "-B"]
    return run_sandboxed([sys.executable, *flags, os.path.abspath(__file__), mode, *args], **options)


# ---------------------------------------------------------------- entry point


def main() -> None:
    mode = sys.argv[1]
    status = 0
    try:
        if mode == "record":
            with open(sys.argv[2], encoding="utf-8") as handle:
                output = record(json.load(handle))
            with open(OUTPUT, "w", encoding="utf-8") as handle:
                json.dump(output, handle)
        elif mode == "run":
            run_candidates(open(os.dup(0), "rb"))
        else:
            job = json.loads(sys.stdin.read())
            {"reference": reference, "sanitize": sanitize_programs}[mode](job)
    except BaseException:  # noqa: BLE001 - report, then exit at once
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
