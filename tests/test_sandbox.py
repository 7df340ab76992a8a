"""The sandbox against hostile candidate programs, one attack per case.

Each candidate is a solution followed by its tests and a success marker, as a code scorer would
run it. Every hostile case must come out as a failed (or harmless) candidate, return within its
time limit, leave no process of the run alive, and leave the host as it was. The attack cases
expect bubblewrap (scripts/setup.sh installs it); without it they fail and say which isolation
is in use instead.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spd_bench.errors import UserError
from spd_bench.scoring import sandbox
from spd_bench.scoring.sandbox import SandboxResult, isolation, run_python, run_sandboxed

MARKER = "ALL-TESTS-PASSED"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
SOLUTION = "def add(a, b):\n    return a + b\n"
TIMEOUT_S = 1.5
SLACK_S = 2.0  # start-up, kill and clean-up on a busy machine
COMPLETES_S = 30.0  # for programs that end by themselves: only a stuck run would reach it
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside every run folder that no run may change."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_text("precious")
    path.chmod(0o644)
    return path


def run_candidate(candidate: str, workdir: Path, **limits: float) -> tuple[SandboxResult, bool]:
    """Run candidate + tests in the sandbox; the verdict is pass only if the marker line was printed."""
    program = f"{candidate}\n{TESTS}print({MARKER!r})\n"
    settings = {"timeout_s": TIMEOUT_S, "memory_mb": 512, **limits}
    result = run_python(program, workdir=workdir / "runs", **settings)  # type: ignore[arg-type]
    passed = result.returncode == 0 and not result.timed_out and result.stdout.strip().endswith(MARKER)
    return result, passed


def census(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line holds ``marker``: the run's, by their paths."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] not in "ZX" and marker.encode() in cmdline:
            found.append(int(name))
    return found


def wait_for(condition: Callable[[], bool], limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_isolated(result: SandboxResult) -> None:
    assert result.isolation.startswith("bubblewrap"), f"runs are not isolated here: {result.isolation}"
    assert result.confined


def assert_contained(result: SandboxResult, outside: Path, workdir: Path) -> None:
    assert_isolated(result)
    assert census(str(workdir)) == []
    assert outside.read_text() == "precious"
    assert sorted(os.listdir(outside.parent)) == ["precious.txt"]
    assert list((workdir / "runs").iterdir()) == []  # run folder and program file are gone


# ---------------------------------------------------------------- ordinary candidates and limits


def test_a_correct_candidate_passes_in_a_fresh_folder(tmp_path: Path, outside: Path) -> None:
    candidate = (
        "import os, tempfile\n"
        "open('scratch.txt', 'w').write('inside')\n"
        "kept = tempfile.NamedTemporaryFile(delete=False)\n"
        "kept.write(b'tmp')\n"
        "print(os.getcwd(), os.environ['HOME'], tempfile.gettempdir(), kept.name)\n"
        + SOLUTION
    )
    first, passed = run_candidate(candidate, tmp_path)
    cwd, home, tmp, temp_file = first.stdout.split("\n")[0].split()
    second, _ = run_candidate(f"import os\nprint(os.getcwd(), os.path.exists({temp_file!r}))\n{SOLUTION}", tmp_path)
    assert passed, first.stderr
    assert Path(cwd).parent == (tmp_path / "runs").resolve() and Path(home).parent == Path(cwd)
    cwd2, seen_by_second = second.stdout.split()[:2]
    assert cwd2 != cwd and seen_by_second == "False"  # every run gets its own folder and temporary folder
    assert len(tmp) < 60 and not Path(temp_file).exists()  # short enough for Unix sockets, and gone
    assert_contained(first, outside, tmp_path)


def test_infinite_loop_is_killed_at_the_time_limit(tmp_path: Path, outside: Path) -> None:
    result, passed = run_candidate("def add(a, b):\n    while True:\n        pass\n", tmp_path)
    assert not passed
    assert result.timed_out and result.killed
    assert TIMEOUT_S <= result.duration_s < TIMEOUT_S + SLACK_S
    assert_contained(result, outside, tmp_path)


@pytest.mark.parametrize("ending", ["wrong answer", "endless loop"])
def test_child_processes_all_die(tmp_path: Path, outside: Path, ending: str) -> None:
    """Forked children, and subprocesses in process groups of their own, are killed with the run."""
    candidate = (
        "import os, subprocess, sys, time\n"
        "for i in range(24):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(600)\n"
        "        os._exit(0)\n"
        "    print('child', pid, flush=True)\n"
        "for i in range(6):\n"
        f"    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {str(tmp_path)!r}],\n"
        "                         process_group=0)\n"
        "    print('child', p.pid, flush=True)\n"
        + ("def add(a, b):\n    return a - b\n" if ending == "wrong answer" else "while True:\n    pass\n")
    )
    result, passed = run_candidate(candidate, tmp_path, timeout_s=4.0)
    children = [line for line in result.stdout.splitlines() if line.startswith("child ")]
    assert not passed
    assert len(children) == 30, result.stderr
    assert result.timed_out == (ending == "endless loop")
    assert_contained(result, outside, tmp_path)


@pytest.mark.parametrize("gigabytes", [50, 1])  # 1 GB fits this machine: only the limit stops it
def test_large_allocations_fail_fast(tmp_path: Path, outside: Path, gigabytes: int) -> None:
    candidate = f"data = bytearray({gigabytes} * 2**30)\n{SOLUTION}"
    result, passed = run_candidate(candidate, tmp_path, memory_mb=256, timeout_s=COMPLETES_S)
    assert not passed
    assert not result.timed_out
    assert "MemoryError" in result.stderr
    assert_contained(result, outside, tmp_path)


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_is_a_failure(tmp_path: Path, outside: Path, exit_call: str) -> None:
    result, passed = run_candidate(f"{SOLUTION}{exit_call}\n", tmp_path, timeout_s=COMPLETES_S)
    assert result.returncode == 0  # the exit status alone would call this a success
    assert not passed
    assert_contained(result, outside, tmp_path)


def test_death_by_signal_reads_as_a_negative_status(tmp_path: Path, outside: Path) -> None:
    result, passed = run_candidate(f"import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n{SOLUTION}", tmp_path)
    assert not passed
    assert result.returncode == -signal.SIGKILL and result.killed and not result.timed_out
    assert_contained(result, outside, tmp_path)


def test_several_megabytes_of_output_are_cut(tmp_path: Path, outside: Path) -> None:
    candidate = (
        "import sys\n"
        "for _ in range(40):\n"
        "    sys.stdout.write('o' * 100_000)\n"
        "    sys.stderr.write('e' * 100_000)\n"
        "def add(a, b):\n    return a * b\n"
    )
    result, passed = run_candidate(candidate, tmp_path, max_output_bytes=50_000, timeout_s=10.0)
    assert not passed
    assert result.truncated and not result.timed_out
    assert len(result.stdout) < 50_100 and len(result.stderr) < 50_100
    assert "AssertionError" in result.stderr  # the end of the output (the traceback) is kept
    assert_contained(result, outside, tmp_path)


def test_a_test_that_sleeps_past_the_limit_is_stopped(tmp_path: Path, outside: Path) -> None:
    result, passed = run_candidate("import time\ndef add(a, b):\n    time.sleep(60)\n    return a + b\n", tmp_path)
    assert not passed
    assert result.timed_out
    assert result.duration_s < TIMEOUT_S + SLACK_S
    assert_contained(result, outside, tmp_path)


def test_stdin_and_any_command(tmp_path: Path) -> None:
    result = run_sandboxed(["/bin/sh", "-c", "read line; echo got $line; exit 3"], timeout_s=5, memory_mb=256,
                           workdir=tmp_path, stdin="hello\n")
    assert result.stdout == "got hello\n"
    assert result.returncode == 3 and not result.killed


def test_kept_run_folder_holds_what_the_run_wrote(tmp_path: Path) -> None:
    result = run_python("open('out.txt', 'w').write('result')", timeout_s=5, memory_mb=256, workdir=tmp_path,
                        keep_dir=True)
    assert result.run_dir is not None and (result.run_dir / "out.txt").read_text() == "result"


@pytest.mark.parametrize("limits", [{"timeout_s": 0, "memory_mb": 256}, {"timeout_s": 1, "memory_mb": 0}])
def test_bad_limits_are_user_errors(tmp_path: Path, limits: dict[str, float]) -> None:
    with pytest.raises(UserError):
        run_python("pass", workdir=tmp_path, **limits)  # type: ignore[arg-type]


# ---------------------------------------------------------------- what a run is and sees


def test_runs_are_unprivileged_in_namespaces_of_their_own(tmp_path: Path, outside: Path) -> None:
    candidate = (
        "import os, socket\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(os.getuid(), os.getgid(), status['CapEff'].strip(), status['CapBnd'].strip(),\n"
        "      status['NoNewPrivs'].strip(), socket.gethostname())\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        + SOLUTION
    )
    result, passed = run_candidate(candidate, tmp_path)
    assert passed, result.stderr
    ids, pids = result.stdout.splitlines()[:2]
    assert ids.split() == ["65534", "65534", "0000000000000000", "0000000000000000", "1", "sandbox"]
    assert pids == "[1, 2]"  # bwrap's init and the program: no process of the host
    assert result.isolation == isolation()
    assert_contained(result, outside, tmp_path)


def test_files_named_readable_are_the_only_extra_files_a_run_reads(tmp_path: Path, outside: Path) -> None:
    program = f"print(open({str(outside)!r}).read())"
    hidden = run_python(program, timeout_s=10, memory_mb=256, workdir=tmp_path / "runs")
    shown = run_python(program, timeout_s=10, memory_mb=256, workdir=tmp_path / "runs", readable=[outside])
    assert "FileNotFoundError" in hidden.stderr and "precious" not in hidden.stdout
    assert shown.stdout == "precious\n", shown.stderr
    assert_contained(shown, outside, tmp_path)


# ---------------------------------------------------------------- attacks: files


@pytest.mark.parametrize(
    "attack",
    [
        "os.remove(TARGET)",
        "open(TARGET, 'w').write('overwritten')",
        "os.truncate(TARGET, 0)",
        "os.rename(TARGET, TARGET + '.moved')",
        "shutil.rmtree(os.path.dirname(TARGET))",
        "open(os.path.join(os.path.dirname(TARGET), 'new.txt'), 'w').write('dropped')",
    ],
)
def test_files_outside_the_run_folder_stay_intact(tmp_path: Path, outside: Path, attack: str) -> None:
    candidate = f"import os, shutil\nTARGET = {str(outside)!r}\n{attack}\n{SOLUTION}"
    result, passed = run_candidate(candidate, tmp_path)
    assert not passed
    assert re.search(r"(FileNotFoundError|PermissionError|OSError)", result.stderr), result.stderr
    assert_contained(result, outside, tmp_path)


def test_a_file_outside_cannot_be_read(tmp_path: Path, outside: Path) -> None:
    secret = secrets.token_hex(16)
    canary = tmp_path / "outside" / "canary.txt"
    canary.write_text(secret)
    canary.chmod(0o644)
    result = run_python(f"print(open({str(canary)!r}).read())", timeout_s=10, memory_mb=256,
                        workdir=tmp_path / "runs")
    assert secret not in result.stdout + result.stderr
    assert "FileNotFoundError" in result.stderr  # not mounted at all
    assert_isolated(result)


@pytest.mark.parametrize("place", ["outside", "in the workdir"])
@pytest.mark.parametrize(
    "attack",
    ["os.chmod(TARGET, 0o777)", "os.chown(TARGET, 65534, 65534)", "os.utime(TARGET, (0, 0))", "Path(TARGET).touch()"],
)
def test_metadata_of_host_files_stays_unchanged(tmp_path: Path, outside: Path, place: str, attack: str) -> None:
    """Outside: not mounted. In the workdir (which runs see, read-only): the mount refuses."""
    target = outside if place == "outside" else tmp_path / "runs" / "visible.txt"
    target.parent.mkdir(exist_ok=True)
    target.write_text("precious")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    before = os.stat(target)
    candidate = (
        f"import os\nfrom pathlib import Path\nTARGET = {str(target)!r}\n"
        f"try:\n    {attack}\n    print('changed')\nexcept OSError as error:\n    print(type(error).__name__)\n"
    )
    result = run_python(candidate, timeout_s=10, memory_mb=256, workdir=tmp_path / "runs")
    after = os.stat(target)
    assert result.returncode == 0 and "changed" not in result.stdout, result.stdout + result.stderr
    assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns) == (
        before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns)
    assert_isolated(result)


@pytest.mark.parametrize("folder", ["/dev/shm", "/tmp"])
def test_shared_memory_and_tmp_files_do_not_outlive_the_run(tmp_path: Path, outside: Path, folder: str) -> None:
    name = f"{folder}/spd-sandbox-test-{secrets.token_hex(8)}"
    result, passed = run_candidate(f"open({name!r}, 'w').write('left behind')\nprint('written')\n{SOLUTION}", tmp_path)
    assert passed and "written" in result.stdout, result.stderr
    assert not os.path.exists(name)
    assert_contained(result, outside, tmp_path)


# ---------------------------------------------------------------- attacks: network, processes, secrets


def test_udp_datagrams_do_not_reach_the_host(tmp_path: Path, outside: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    try:
        candidate = (
            "import socket\n"
            "sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(5):\n"
            "    try:\n"
            f"        sender.sendto(b'leak', ('127.0.0.1', {receiver.getsockname()[1]}))\n"
            "    except OSError:\n"
            "        pass\n"
            + SOLUTION
        )
        result, _ = run_candidate(candidate, tmp_path)
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(100)  # the run has ended: a datagram sent to this socket would be here
    finally:
        receiver.close()
    assert_contained(result, outside, tmp_path)


def test_tcp_to_the_host_is_refused(tmp_path: Path, outside: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        candidate = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)\n"
            "    print('reached')\n"
            "except OSError:\n"
            "    print('blocked')\n"
            + SOLUTION
        )
        result, _ = run_candidate(candidate, tmp_path)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert result.stdout.split()[0] == "blocked", result.stderr
    assert_contained(result, outside, tmp_path)


@pytest.fixture
def unix_listener() -> Iterator[tuple[socket.socket, str]]:
    """A Unix socket listening at a short path outside any run."""
    folder = tempfile.mkdtemp(prefix="sbx-test-")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = os.path.join(folder, "sock")
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen()
    try:
        yield server, path
    finally:
        server.close()
        shutil.rmtree(folder)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0spd-sandbox-test-{secrets.token_hex(8)}"
    server.bind(name)
    server.listen()
    try:
        yield server, name
    finally:
        server.close()


@pytest.mark.parametrize("listener", ["unix_listener", "abstract_listener"])
def test_unix_sockets_of_the_host_are_out_of_reach(tmp_path: Path, outside: Path, listener: str,
                                                   request: pytest.FixtureRequest) -> None:
    server, address = request.getfixturevalue(listener)
    candidate = (
        "import socket\n"
        "client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n"
        f"    client.connect({address!r})\n"
        "    print('reached')\n"
        "except OSError as error:\n"
        "    print('blocked', type(error).__name__)\n"
        + SOLUTION
    )
    result, _ = run_candidate(candidate, tmp_path)
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()
    assert result.stdout.split()[0] == "blocked", result.stdout + result.stderr
    assert_contained(result, outside, tmp_path)


def test_processes_of_the_host_cannot_be_signalled(tmp_path: Path, outside: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        candidate = (
            "import os, signal\n"
            "try:\n"
            f"    os.kill({victim.pid}, signal.SIGKILL)\n"
            "    print('reached')\n"
            "except OSError:\n"
            "    print('blocked')\n"
            + SOLUTION
        )
        result, _ = run_candidate(candidate, tmp_path)
        time.sleep(0.1)
        assert victim.poll() is None
        assert result.stdout.split()[0] == "blocked", result.stderr
    finally:
        victim.kill()
        victim.wait()
    assert_contained(result, outside, tmp_path)


HARNESS = (
    "import sys\n"
    "from pathlib import Path\n"
    "from spd_bench.scoring.sandbox import run_python\n"
    "result = run_python(sys.argv[2], timeout_s=300, memory_mb=256, workdir=Path(sys.argv[1]))\n"
    "print(result.stdout, end='')\n"
    "print(result.stderr, end='', file=sys.stderr)\n"
)


def start_harness(workdir: Path, code: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A harness process of its own, which runs ``code`` in the sandbox (its environment is its own too)."""
    return subprocess.Popen([sys.executable, "-c", HARNESS, str(workdir), code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **OFFLINE, **(env or {})})


@pytest.mark.parametrize("source", ["os.environ", "/proc/1/environ", "/proc/<ppid>/environ", "every /proc/*/environ"])
def test_the_harness_environment_is_out_of_reach(tmp_path: Path, source: str) -> None:
    """A token in the harness's environment (e.g. HF_TOKEN) appears nowhere a run can look."""
    token = f"hf_{secrets.token_hex(16)}"
    reads = {
        "os.environ": "print(*(f'{key}={value}' for key, value in os.environ.items()))",
        "/proc/1/environ": "print(open('/proc/1/environ', 'rb').read())",
        "/proc/<ppid>/environ": "print(open(f'/proc/{os.getppid()}/environ', 'rb').read())",
        "every /proc/*/environ": (
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError:\n"
            "        pass\n"
        ),
    }
    harness = start_harness(tmp_path / "runs", f"import os\n{reads[source]}\n", {"HF_TOKEN": token})
    stdout, stderr = harness.communicate(timeout=120)
    assert harness.returncode == 0, stderr
    assert "PATH=" in stdout, stderr  # the run could read an environment: just not the harness's
    assert token not in stdout + stderr
    assert "sandbox: fallback" not in stderr, stderr


GRANDCHILD = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        while True:\n"
    "            open('beat-grandchild', 'a').write('.')\n"
    "            time.sleep(0.05)\n"
    "    os._exit(0)\n"
)


@pytest.mark.parametrize("ending", ["exits", "loops past the limit"])
def test_a_double_forked_setsid_grandchild_dies_with_the_run(tmp_path: Path, outside: Path, ending: str) -> None:
    candidate = (
        GRANDCHILD
        + "while not os.path.exists('beat-grandchild'):\n    time.sleep(0.01)\n"
        + "print('grandchild up', flush=True)\n"
        + ("" if ending == "exits" else "while True:\n    pass\n")
        + SOLUTION
    )
    result, _ = run_candidate(candidate, tmp_path, timeout_s=4.0)
    assert "grandchild up" in result.stdout, result.stderr
    assert result.timed_out == (ending != "exits")
    assert_contained(result, outside, tmp_path)  # the census finds nothing with the run's paths


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_harness_leaves_no_process_of_the_run(tmp_path: Path, signum: int) -> None:
    workdir = tmp_path / "runs"
    code = GRANDCHILD + "while True:\n    open('beat', 'a').write('.')\n    time.sleep(0.05)\n"
    harness = start_harness(workdir, code)
    try:
        running = wait_for(lambda: any(workdir.glob("sandbox-*/beat-grandchild")) or harness.poll() is not None, 60)
        assert running and harness.poll() is None, harness.communicate()
        assert len(census(str(workdir))) >= 4  # harness, bwrap, the program, its grandchild (at least)
        harness.send_signal(signum)
        harness.wait(timeout=60)
        assert wait_for(lambda: census(str(workdir)) == [], 10), census(str(workdir))
    finally:
        if harness.poll() is None:
            harness.kill()
        harness.communicate()


# ---------------------------------------------------------------- the fallback


@pytest.fixture
def without_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sandbox._isolation.cache_clear()
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: None)
    yield
    sandbox._isolation.cache_clear()


def test_the_fallback_is_reported_once_and_still_runs(without_bwrap: None, tmp_path: Path, outside: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        text = isolation()
        assert isolation() == text
    assert text.startswith("fallback: ") and "(bubblewrap not found: apt-get install bubblewrap)" in text
    assert [record.getMessage() for record in caplog.records] == [
        f"sandbox: {text}; docs/sandbox.md lists what this leaves open"]
    result, passed = run_candidate(SOLUTION, tmp_path)
    assert passed, result.stderr
    assert result.isolation == text
    if sandbox.landlock_abi():
        assert result.confined
        blocked, _ = run_candidate(f"open({str(outside)!r}, 'w').write('overwritten')\n{SOLUTION}", tmp_path)
        assert "PermissionError" in blocked.stderr
    assert outside.read_text() == "precious"


def test_a_bwrap_that_cannot_start_is_reported(monkeypatch: pytest.MonkeyPatch, without_bwrap: None) -> None:
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: "/bin/false")
    text = isolation()
    assert text.startswith("fallback: ") and "cannot start a sandbox here" in text


def test_a_run_whose_bwrap_fails_to_set_up_is_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolation()  # probed (once per process) with the real options
    options = sandbox._bwrap_options
    monkeypatch.setattr(sandbox, "_bwrap_options",
                        lambda *args: [*options(*args), "--ro-bind", str(tmp_path / "missing"), "/missing"])
    result = run_python("print('ran')", timeout_s=10, memory_mb=256, workdir=tmp_path / "runs")
    assert_isolated(result)
    assert result.returncode == 1 and "bwrap" in result.stderr and "ran" not in result.stdout
    assert census(str(tmp_path)) == []
