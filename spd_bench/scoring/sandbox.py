"""Run untrusted code (model-written programs) in child processes that cannot harm the harness.

Where bubblewrap (``bwrap``) is installed and can start its namespaces (checked once per
process), each run gets new user, PID, mount, network, IPC and UTS namespaces and runs as
uid/gid 65534 without capabilities. It sees the host read-only and only what an interpreter
needs (/usr, /lib*, a few files of /etc, Python's installation and environment, the caller's
``workdir``, the files named in argv); its run folder is the only writable host folder; /tmp
and /dev/shm are its own, size-limited; its network is an empty namespace with loopback only;
/proc shows its own processes; its environment holds only what ``_environment`` sets. Every
process of the run lives in its PID namespace, so killing the namespace's first process ends
them all, ``setsid`` grandchildren included: when the main process exits, at the time limit,
when the harness is interrupted, and (``--die-with-parent``) when the harness dies.

Without bubblewrap, runs fall back to their own session and process group, Landlock (Linux
5.13+: writes only inside the run's folders, no TCP, no signals outside) and the same rlimits;
:func:`isolation` says which is in use, and docs/sandbox.md lists what each one blocks.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from spd_bench.errors import UserError

log = logging.getLogger(__name__)

FILE_SIZE_LIMIT_BYTES = 256 * 2**20  # largest file a run may write
TMPFS_SIZE_BYTES = 256 * 2**20  # size of a bubblewrap run's private /tmp, and of its /dev/shm
PROCESS_ALLOWANCE = 256  # processes a non-root run may add to its user's count
SANDBOX_UID = 65534  # "nobody": the uid and gid a run has inside bubblewrap
_GRACE_S = 1.0  # how long to keep reading pipes once every process of the run is dead
_REAP_S = 10.0  # how long to wait for a killed PID namespace to disappear before warning
_INSTALL_HINT = "apt-get install bubblewrap"

# What a bubblewrap run sees of the host, read-only, besides Python's folders and the workdir.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf",
                "hosts", "alternatives")

# Landlock ABI (linux/landlock.h); syscall numbers are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_PDEATHSIG = 1
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
    pid: int  # the process the harness started: bwrap, or (fallback) the command, its session and group id
    confined: bool  # the host's files were protected from writes (bubblewrap, or Landlock in the fallback)
    run_dir: Path | None = None  # the run folder, when the caller asked to keep it
    isolation: str = ""  # which isolation the run had: the text of isolation()


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


# ---------------------------------------------------------------- which isolation


@dataclass(frozen=True)
class _Isolation:
    """The mechanism runs get: a working bwrap, or the fallback when ``bwrap`` is None."""

    text: str
    bwrap: str | None = None


def isolation() -> str:
    """Which isolation runs get here, in one line; every ``SandboxResult.isolation`` repeats it."""
    return _isolation().text


@lru_cache(maxsize=1)
def _isolation() -> _Isolation:
    """Use bwrap if it starts a sandbox here (checked once per process); otherwise fall back and say so."""
    path = _find_bwrap()
    if path is None:
        return _fallback(f"bubblewrap not found: {_INSTALL_HINT}")
    version, error = _probe_bwrap(path)
    if error:
        return _fallback(f"{version or path} cannot start a sandbox here: {error}")
    return _Isolation(
        f"{version}: user,pid,mount,net,ipc,uts namespaces, uid {SANDBOX_UID} without capabilities,"
        " read-only host, rlimits",
        path,
    )


def _find_bwrap() -> str | None:
    return shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin")


def _probe_bwrap(path: str) -> tuple[str, str]:
    """(version, error) after starting ``python -c pass`` the way runs start; error is '' when it worked."""
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as folder:
            run_dir = Path(folder).resolve()
            probe = subprocess.run(
                [path, *_bwrap_options(run_dir, [run_dir]), "--", sys.executable, "-I", "-c", "pass"],
                capture_output=True, text=True, timeout=30, env=_environment(run_dir, Path("/tmp"), None),
            )
    except (OSError, subprocess.SubprocessError) as error:
        return "", str(error)
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        return version, lines[-1] if lines else f"exit status {probe.returncode}"
    return version, ""


def _fallback(reason: str) -> _Isolation:
    abi = landlock_abi()
    mechanism = f"landlock ABI {abi} + rlimits" if abi else "rlimits only, no Landlock"
    text = f"fallback: {mechanism} ({reason})"
    log.warning("sandbox: %s; docs/sandbox.md lists what this leaves open", text)
    return _Isolation(text)


# ---------------------------------------------------------------- bubblewrap


def _bwrap_options(run_dir: Path, readable: list[Path]) -> list[str]:
    """bwrap's options for one run, mounts in order: later mounts go over earlier ones."""
    private_tmpfs = ["--perms", "1777", "--size", str(TMPFS_SIZE_BYTES), "--tmpfs"]
    options = [
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
        "--hostname", "sandbox", "--die-with-parent", "--new-session",
        "--proc", "/proc", "--dev", "/dev", *private_tmpfs, "/tmp", *private_tmpfs, "/dev/shm",
        *_system_mounts(),
    ]
    for path in readable:
        options += ["--ro-bind", str(path), str(path)]
    return [*options, "--bind", str(run_dir), str(run_dir), "--chdir", str(run_dir)]


@lru_cache(maxsize=1)
def _system_mounts() -> tuple[str, ...]:
    """What an interpreter needs of the host, read-only: system folders, a few /etc entries, Python."""
    options: list[str] = []
    for folder in _SYSTEM_DIRS:
        if os.path.islink(folder):
            options += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            options += ["--ro-bind", folder, folder]
    for name in _ETC_ENTRIES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            options += ["--ro-bind", path, path]
    for root in _python_roots():
        options += ["--ro-bind", root, root]
    return tuple(options)


@lru_cache(maxsize=1)
def _python_roots() -> tuple[str, ...]:
    """Python's installation and its environment (a venv with its site-packages), unless under /usr."""
    roots: list[str] = []
    for prefix in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix):
        for path in (os.path.abspath(prefix), os.path.realpath(prefix)):
            if os.path.isdir(path) and not _under(path, [*_SYSTEM_DIRS, *roots]):
                roots.append(path)
    return tuple(roots)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots)


def _readable(workdir: Path, argv: Sequence[str], extra: Sequence[Path]) -> list[Path]:
    """Host paths a bubblewrap run may read: the workdir, files named in argv (the script), ``extra``."""
    paths = [workdir]
    covered = [*_SYSTEM_DIRS, *_python_roots(), str(workdir)]
    for arg in argv:
        if os.path.isabs(arg) and os.path.isfile(arg) and not _under(os.path.abspath(arg), covered):
            paths.append(Path(os.path.abspath(arg)))
    for path in extra:
        if not os.path.exists(path):
            raise UserError(f"sandbox: readable path {path} does not exist")
        paths.append(Path(os.path.abspath(path)))
    return paths


class _NamespaceRun:
    """A run in bwrap's PID namespace; killing the namespace's first process (init) ends every process in it."""

    def __init__(self, proc: subprocess.Popen[bytes], init: int | None) -> None:
        self.proc = proc
        self.init = init  # pidfd of the namespace's init; None when bwrap failed before starting it

    def kill(self) -> None:
        """Signals only, so it is safe in a signal handler."""
        if self.init is not None:
            try:
                signal.pidfd_send_signal(self.init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Kill, then wait until bwrap and every process of the namespace are gone."""
        self.kill()
        self.proc.wait()
        if self.init is None:
            return
        if not select.select([self.init], [], [], _REAP_S)[0]:
            log.warning("sandbox: the PID namespace of run %d outlived SIGKILL for %.0f s", self.proc.pid, _REAP_S)
        try:  # bwrap exits without reaping init; where the harness inherits it (PID 1 in a container), reap it
            os.waitid(os.P_PIDFD, self.init, os.WEXITED | os.WNOHANG)
        except (OSError, AttributeError):  # not our child, or no P_PIDFD (Linux < 5.4)
            pass
        os.close(self.init)
        self.init = None

    @property
    def returncode(self) -> int:
        """bwrap reports death by signal N as status 128+N: turn it back into -N."""
        code = self.proc.returncode
        return 128 - code if 128 < code < 128 + signal.NSIG else code


def _start_namespace(bwrap: str, argv: list[str], run_dir: Path, readable: list[Path],
                     popen: dict[str, object]) -> _NamespaceRun:
    """Start bwrap, hold its command until the namespace's init is pinned by a pidfd, then let it go."""
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    command = [bwrap, *_bwrap_options(run_dir, readable), "--info-fd", str(info_w), "--block-fd", str(block_r),
               "--", *argv]
    try:
        proc = subprocess.Popen(command, pass_fds=(info_w, block_r), **popen)  # type: ignore[call-overload]
    except BaseException:
        for fd in (info_r, block_w):
            os.close(fd)
        raise
    finally:
        os.close(info_w)
        os.close(block_r)
    run = _NamespaceRun(proc, None)
    try:
        info = _read_all(info_r)
        run.init = _pidfd_of_init(info)
        if info:
            try:
                os.write(block_w, b"go")
            except BrokenPipeError:
                pass  # bwrap died during set-up; its stderr says why
    except BaseException:
        run.reap()
        raise
    finally:
        os.close(info_r)
        os.close(block_w)
    return run


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _pidfd_of_init(info: bytes) -> int | None:
    """A pidfd for the namespace's init, from bwrap's --info-fd JSON; None if bwrap failed first.

    Without one (Linux < 5.3), killing bwrap still ends the namespace, through --die-with-parent.
    """
    if not info:
        return None
    try:
        return os.pidfd_open(int(json.loads(info)["child-pid"]))
    except (OSError, ValueError, KeyError):
        return None


# ---------------------------------------------------------------- fallback: process group + Landlock


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


class _GroupRun:
    """A fallback run: its session and process group, whose id is the main process's pid."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def kill(self) -> None:
        if self.proc.returncode is None:  # not reaped yet, so its pid is still the run's group id
            _kill_run(self.proc.pid)

    def reap(self) -> None:
        self.kill()
        self.proc.wait()

    @property
    def returncode(self) -> int:
        return self.proc.returncode


def _start_group(argv: list[str], run_dir: Path, tmp_dir: Path, memory_mb: int, timeout_s: float,
                 popen: dict[str, object]) -> _GroupRun:
    abi = landlock_abi()
    ruleset = _landlock_ruleset([run_dir, tmp_dir, Path("/dev/shm")], abi) if abi else None
    try:
        proc = subprocess.Popen(argv, cwd=run_dir, preexec_fn=_prepare_child(memory_mb, timeout_s, ruleset),
                                **popen)  # type: ignore[call-overload]
    finally:
        if ruleset is not None:
            os.close(ruleset)
    return _GroupRun(proc)


# ---------------------------------------------------------------- both


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
    """The function run in the child between fork and exec; everything it needs is computed here.

    The limits pass through bwrap to every process of the run. PR_SET_PDEATHSIG makes the child
    (bwrap, or the fallback's main process) die with the harness, even when it is SIGKILLed.
    """
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
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if ruleset is not None:
            if prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            if syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
                raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    return prepare


def _environment(run_dir: Path, tmp_dir: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """A small environment: none of the harness's variables (tokens), HOME and caches inside the run folder."""
    home, tmp = str(run_dir / "home"), str(tmp_dir)
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
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


@contextmanager
def _killed_on_termination(kill: Callable[[], None]) -> Iterator[None]:
    """Kill the run first if SIGTERM, SIGHUP or SIGINT is about to end the harness by default action.

    Only signals left at their default are caught (never the harness's own handlers), and only in
    the main thread, where Python runs handlers. SIGINT's usual KeyboardInterrupt ends the run
    through the ``finally`` in ``_collect``; SIGKILL through PR_SET_PDEATHSIG.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        kill()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    installed = {}
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(signum) == signal.SIG_DFL:
            installed[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


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
    readable: Sequence[Path] = (),
) -> SandboxResult:
    """Run ``argv`` in a fresh folder under ``workdir`` with the limits above and collect its output.

    The folder is the run's working directory, with HOME inside it, and the only host folder it
    may write; TMPDIR is a fresh folder (bubblewrap: a private /tmp), gone after the run. Under
    bubblewrap the run may read ``workdir`` (where callers put its inputs; give concurrent runs
    their own workdirs to keep them apart), the files named in argv, and the ``readable`` paths.
    ``memory_mb`` and the CPU allowance apply to each process of the run separately, the wall
    clock (``timeout_s``) to the run as a whole. ``env`` adds variables to the small default
    environment. With ``keep_dir`` the run folder stays (``result.run_dir``) so the caller can
    read files the run wrote; the caller removes it.
    """
    if not argv:
        raise ValueError("run_sandboxed needs a command")
    _check_limits(timeout_s, memory_mb, max_output_bytes)
    chosen = _isolation()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    shown = _readable(workdir, argv, readable) if chosen.bwrap else []
    run_dir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workdir)).resolve()
    (run_dir / "home").mkdir()
    tmp_dir = None if chosen.bwrap else Path(tempfile.mkdtemp(prefix="sbx-")).resolve()
    try:
        result = _run(argv, chosen, run_dir, tmp_dir, shown, timeout_s, memory_mb, stdin, max_output_bytes, env)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if not keep_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    result.run_dir = run_dir if keep_dir else None
    return result


def _run(
    argv: list[str],
    chosen: _Isolation,
    run_dir: Path,
    tmp_dir: Path | None,
    readable: list[Path],
    timeout_s: float,
    memory_mb: int,
    stdin: str | None,
    max_output_bytes: int,
    env: Mapping[str, str] | None,
) -> SandboxResult:
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)
    with _stdin_file(stdin) as stdin_file:
        popen: dict[str, object] = {
            "stdin": stdin_file if stdin_file is not None else subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "env": _environment(run_dir, tmp_dir or Path("/tmp"), env),
            "start_new_session": True,
        }
        start = time.monotonic()
        if chosen.bwrap:
            popen["preexec_fn"] = _prepare_child(memory_mb, timeout_s, None)
            run: _NamespaceRun | _GroupRun = _start_namespace(chosen.bwrap, argv, run_dir, readable, popen)
        else:
            assert tmp_dir is not None
            run = _start_group(argv, run_dir, tmp_dir, memory_mb, timeout_s, popen)
    try:
        with _killed_on_termination(run.kill):
            timed_out = _collect(run, out, err, start + timeout_s)
    except BaseException:
        run.reap()  # e.g. KeyboardInterrupt before _collect took over
        raise
    return SandboxResult(
        returncode=run.returncode,
        timed_out=timed_out,
        killed=run.returncode < 0,
        stdout=out.text(),
        stderr=err.text(),
        truncated=out.truncated or err.truncated,
        duration_s=time.monotonic() - start,
        pid=run.proc.pid,
        confined=bool(chosen.bwrap) or bool(landlock_abi()),
        isolation=chosen.text,
    )


@contextmanager
def _stdin_file(text: str | None) -> Iterator[IO[bytes] | None]:
    """The run's stdin as a file (a pipe could fill and block the harness)."""
    if text is None:
        yield None
        return
    with tempfile.TemporaryFile() as handle:
        handle.write(text.encode())
        handle.seek(0)
        yield handle


def _collect(run: _NamespaceRun | _GroupRun, out: _Capture, err: _Capture, deadline: float) -> bool:
    """Read both pipes until the main process exits or the deadline passes; end the run in any case."""
    proc = run.proc
    assert proc.stdout is not None and proc.stderr is not None
    selector = selectors.DefaultSelector()
    for stream, capture in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream.fileno(), selectors.EVENT_READ, capture)
    pidfd = None
    try:
        pidfd = os.pidfd_open(proc.pid)
        selector.register(pidfd, selectors.EVENT_READ, None)
    except (OSError, AttributeError):
        pidfd = None
    # Without a pidfd, wake up regularly to notice an exit whose children still hold the pipes.
    tick = None if pidfd is not None else 0.05
    try:
        try:
            timed_out = _wait_for_exit(proc.pid, selector, deadline, tick)
        finally:
            run.reap()  # also when interrupted (KeyboardInterrupt): nothing of the run outlives this call
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


def _wait_for_exit(pid: int, selector: selectors.BaseSelector, deadline: float, tick: float | None) -> bool:
    """Read output until process ``pid`` exits (False) or the deadline passes (True)."""
    while not _exited(pid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        _read_ready(selector, remaining if tick is None else min(remaining, tick))
    return False


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
    readable: Sequence[Path] = (),
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
            readable=readable,
        )
    finally:
        os.unlink(path)
