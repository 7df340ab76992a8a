"""Run untrusted code (model-written programs) in a child process that cannot harm the harness.

Each run gets a fresh folder that is its working directory and holds HOME, and a fresh TMPDIR
under the system's temporary folder (short, because Unix socket paths, which Python's
multiprocessing puts in TMPDIR, may not exceed 107 bytes). The child runs in its own session
and process group under memory (RLIMIT_AS, RLIMIT_DATA), CPU, file-size and core-dump limits.
Where the kernel has Landlock (Linux 5.13+) the child may create, write, truncate or delete
files only inside those two folders (plus /dev/null and /dev/shm, which multiprocessing
needs), may not open TCP connections (Landlock ABI 4+), and may not signal processes outside
the run (ABI 6+). At the wall-clock limit, and also after a normal exit, every process left
in the run's session or process group is killed with SIGKILL, so nothing outlives a run.

Limits that remain: a process that starts a new session of its own (``setsid``) and forks
away escapes the group kill (Landlock and RLIMIT_CPU still bind it); root ignores
RLIMIT_NPROC, so only the wall clock bounds how many processes a run starts; and without
Landlock (other kernels) files outside the folder are not protected.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from spd_bench.errors import UserError

log = logging.getLogger(__name__)

FILE_SIZE_LIMIT_BYTES = 256 * 2**20  # largest file a run may write
PROCESS_ALLOWANCE = 256  # processes a non-root run may add to its user's count
_GRACE_S = 1.0  # how long to keep reading pipes once every process of the run is dead

# Landlock ABI (linux/landlock.h); syscall numbers are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_FS_WRITE_FILE = 1 << 1
_FS_DIR_WRITES = sum(1 << bit for bit in range(4, 13))  # remove/make dir, file, char, sock, fifo, block, symlink
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_NET_TCP = 0b11  # ABI 4: bind and connect
_SCOPES = 0b11  # ABI 6: abstract unix sockets and signals


@dataclass
class SandboxResult:
    """What a run did. ``returncode`` is negative when a signal ended the main process."""

    returncode: int
    timed_out: bool
    killed: bool  # the main process was ended by a signal (the timeout, a resource limit, itself)
    stdout: str
    stderr: str
    truncated: bool  # stdout or stderr was longer than max_output_bytes and was cut in the middle
    duration_s: float
    pid: int  # the main process; also the id of the run's session and process group
    confined: bool  # writes outside the run folder, TCP and outside signals were blocked (Landlock)
    run_dir: Path | None = None  # the run folder, when the caller asked to keep it


class _Capture:
    """Keeps the first and last bytes of a stream, so a long output still shows its end (tracebacks)."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        cut = self.total - len(self.head) - len(self.tail)
        return (
            self.head.decode("utf-8", errors="replace")
            + f"\n[... {cut} bytes cut ...]\n"
            + self.tail.decode("utf-8", errors="replace")
        )


@lru_cache(maxsize=1)
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock_ruleset(writable_dirs: list[Path], abi: int) -> int:
    """Build (in the parent) a ruleset that allows writes only beneath ``writable_dirs``; returns its fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    writes = _FS_WRITE_FILE | _FS_DIR_WRITES | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(writes, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    targets = [(path, writes) for path in writable_dirs]
    targets.append((Path(os.devnull), writes & (_FS_WRITE_FILE | _FS_TRUNCATE)))  # a file: file rights only
    for path, access in targets:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # e.g. no /dev/shm on this system
        try:
            rule = _PathBeneathAttr(access, fd)
            if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                error = ctypes.get_errno()
                os.close(ruleset)
                raise OSError(error, f"landlock_add_rule failed for {path}")
        finally:
            os.close(fd)
    return ruleset


def _user_process_count() -> int:
    """Processes owned by this user now (RLIMIT_NPROC counts them all, not just this run's)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _limit(kind: int, soft: int, hard: int) -> tuple[int, int, int]:
    """(kind, soft, hard) lowered to the harness's own hard limit, which a child cannot exceed."""
    ceiling = resource.getrlimit(kind)[1]
    if ceiling != resource.RLIM_INFINITY:
        soft, hard = min(soft, ceiling), min(hard, ceiling)
    return kind, soft, hard


def _prepare_child(memory_mb: int, timeout_s: float, ruleset: int | None) -> Callable[[], None]:
    """The function run in the child between fork and exec; everything it needs is computed here."""
    memory = memory_mb * 2**20
    cpu = math.ceil(timeout_s) + 1
    limits = [
        _limit(resource.RLIMIT_AS, memory, memory),
        _limit(resource.RLIMIT_DATA, memory, memory),
        _limit(resource.RLIMIT_CPU, cpu, cpu + 1),
        _limit(resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if os.getuid() != 0 and os.path.isdir("/proc"):
        nproc = _user_process_count() + PROCESS_ALLOWANCE
        limits.append(_limit(resource.RLIMIT_NPROC, nproc, nproc))
    libc = ctypes.CDLL(None, use_errno=True)
    prctl, syscall = libc.prctl, libc.syscall

    def prepare() -> None:
        for kind, soft, hard in limits:
            resource.setrlimit(kind, (soft, hard))
        if ruleset is not None:
            if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            if syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
                raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    return prepare


def _environment(run_dir: Path, tmp_dir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """A small environment: nothing of the harness's secrets, HOME and caches inside the run folder."""
    home, tmp = str(run_dir / "home"), str(tmp_dir)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": home,
        "TMPDIR": tmp,
        "TMP": tmp,
        "TEMP": tmp,
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",  # same set/dict-of-str order on every run: reproducible scores
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    env.update(extra or {})
    return env


def _session_members(sid: int) -> list[int]:
    """Live (not zombie) processes in session or process group ``sid``, from /proc."""
    members = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return members
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[0] not in ("Z", "X") and sid in (int(fields[2]), int(fields[3])):
            members.append(int(entry.name))
    return members


def _kill_run(pid: int) -> None:
    """SIGKILL the run's process group and any session member that moved to another group."""
    for _ in range(200):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        members = _session_members(pid)
        if not members:
            return
        for member in members:
            try:
                os.kill(member, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    log.warning("sandbox: processes of run %d survived SIGKILL", pid)


@lru_cache(maxsize=1)
def _warn_unconfined() -> None:
    log.warning("sandbox: this kernel has no Landlock; sandboxed code can write files outside its folder")


def _exited(pid: int) -> bool:
    """Whether the main process has exited, without reaping it: its pid (the group id) stays reserved."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _check_limits(timeout_s: float, memory_mb: int, max_output_bytes: int) -> None:
    if not timeout_s > 0:
        raise UserError(f"sandbox timeout must be positive, got {timeout_s}; set timeout_s to a number of seconds")
    if memory_mb < 16:
        raise UserError(f"sandbox memory limit of {memory_mb} MB is too small to start a program; set memory_mb >= 16")
    if max_output_bytes < 2:
        raise UserError(f"max_output_bytes must be at least 2, got {max_output_bytes}")


def run_sandboxed(
    argv: list[str],
    *,
    timeout_s: float,
    memory_mb: int,
    workdir: Path,
    stdin: str | None = None,
    max_output_bytes: int = 1_000_000,
    env: Mapping[str, str] | None = None,
    keep_dir: bool = False,
) -> SandboxResult:
    """Run ``argv`` in a fresh folder under ``workdir`` with the limits above and collect its output.

    The folder is the run's working directory, with HOME inside it; TMPDIR is a second fresh
    folder, removed after the run. ``memory_mb`` and the CPU allowance apply to each process of
    the run separately, the wall clock (``timeout_s``) to the run as a whole. ``env`` adds
    variables to the small default environment. With ``keep_dir`` the run folder stays
    (``result.run_dir``) so the caller can read files the run wrote; the caller removes it.
    """
    if not argv:
        raise ValueError("run_sandboxed needs a command")
    _check_limits(timeout_s, memory_mb, max_output_bytes)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workdir)).resolve()
    (run_dir / "home").mkdir()
    tmp_dir = Path(tempfile.mkdtemp(prefix="sbx-")).resolve()
    try:
        result = _run(argv, run_dir, tmp_dir, timeout_s, memory_mb, stdin, max_output_bytes, env)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not keep_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    result.run_dir = run_dir if keep_dir else None
    return result


def _run(
    argv: list[str],
    run_dir: Path,
    tmp_dir: Path,
    timeout_s: float,
    memory_mb: int,
    stdin: str | None,
    max_output_bytes: int,
    env: Mapping[str, str] | None,
) -> SandboxResult:
    abi = landlock_abi()
    if not abi:
        _warn_unconfined()
    ruleset = _landlock_ruleset([run_dir, tmp_dir, Path("/dev/shm")], abi) if abi else None
    stdin_file: IO[bytes] | None = None
    try:
        if stdin is not None:
            stdin_file = tempfile.TemporaryFile()
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=run_dir,
            env=_environment(run_dir, tmp_dir, env),
            start_new_session=True,
            preexec_fn=_prepare_child(memory_mb, timeout_s, ruleset),
        )
    finally:
        if ruleset is not None:
            os.close(ruleset)
        if stdin_file is not None:
            stdin_file.close()
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)
    timed_out = _collect(proc, out, err, start + timeout_s)
    duration = time.monotonic() - start
    return SandboxResult(
        returncode=proc.returncode,
        timed_out=timed_out,
        killed=proc.returncode < 0,
        stdout=out.text(),
        stderr=err.text(),
        truncated=out.truncated or err.truncated,
        duration_s=duration,
        pid=proc.pid,
        confined=bool(abi),
    )


def _collect(proc: subprocess.Popen[bytes], out: _Capture, err: _Capture, deadline: float) -> bool:
    """Read both pipes until the main process exits or the deadline passes; kill the run; reap it."""
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    for stream, capture in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream.fileno(), selectors.EVENT_READ, capture)
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
            selector.register(pidfd, selectors.EVENT_READ, None)
        except OSError:
            pidfd = None
    # Without a pidfd, wake up regularly to notice an exit whose children still hold the pipes.
    tick = None if pidfd is not None else 0.05
    timed_out = False
    try:
        while not _exited(proc.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            _read_ready(selector, remaining if tick is None else min(remaining, tick))
        _kill_run(proc.pid)
        proc.wait()
        if pidfd is not None:
            selector.unregister(pidfd)
        grace = time.monotonic() + _GRACE_S
        while selector.get_map() and time.monotonic() < grace:
            _read_ready(selector, grace - time.monotonic())
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
    return timed_out


def _read_ready(selector: selectors.BaseSelector, timeout: float) -> None:
    for key, _ in selector.select(max(timeout, 0.0)):
        if key.data is None:  # the pidfd: the process exited
            continue
        try:
            data = os.read(key.fd, 1 << 16)
        except BlockingIOError:
            continue
        if data:
            key.data.add(data)
        else:
            selector.unregister(key.fd)


def run_python(
    code: str,
    *,
    timeout_s: float,
    memory_mb: int,
    workdir: Path,
    stdin: str | None = None,
    max_output_bytes: int = 1_000_000,
    env: Mapping[str, str] | None = None,
    keep_dir: bool = False,
) -> SandboxResult:
    """Run Python source with this interpreter in isolated mode (-I) under ``run_sandboxed``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="code-", suffix=".py", dir=workdir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(code)
        return run_sandboxed(
            [sys.executable, "-I", "-B", path],
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            workdir=workdir,
            stdin=stdin,
            max_output_bytes=max_output_bytes,
            env=env,
            keep_dir=keep_dir,
        )
    finally:
        os.unlink(path)
