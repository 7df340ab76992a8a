"""The sandbox against hostile candidate programs.

Each candidate is a solution followed by its tests and a success marker, as a code scorer would
run it. Every hostile case must come out as a failed candidate, return within its time limit,
leave no process of the run alive, and leave files outside the run folder untouched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spd_bench.errors import UserError
from spd_bench.scoring.sandbox import SandboxResult, run_python, run_sandboxed

MARKER = "ALL-TESTS-PASSED"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
TIMEOUT_S = 1.5
SLACK_S = 2.0  # start-up, kill and clean-up on a busy machine
COMPLETES_S = 30.0  # for programs that end by themselves: only a stuck run would reach it


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside every run folder that no run may change."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_text("precious")
    return path


def run_candidate(candidate: str, workdir: Path, **limits: float) -> tuple[SandboxResult, bool]:
    """Run candidate + tests in the sandbox; the verdict is pass only if the marker line was printed."""
    program = f"{candidate}\n{TESTS}print({MARKER!r})\n"
    settings = {"timeout_s": TIMEOUT_S, "memory_mb": 512, **limits}
    result = run_python(program, workdir=workdir / "runs", **settings)  # type: ignore[arg-type]
    passed = result.returncode == 0 and not result.timed_out and result.stdout.strip().endswith(MARKER)
    return result, passed


def live_in_run(sid: int) -> list[int]:
    """Processes, other than zombies, whose session or process group is the run's."""
    alive = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp, session = stat[stat.rfind(")") + 2 :].split()[:4]
        if state not in ("Z", "X") and sid in (int(pgrp), int(session)):
            alive.append(int(name))
    return alive


def assert_contained(result: SandboxResult, outside: Path, workdir: Path) -> None:
    assert result.confined, "Landlock is missing: this kernel cannot keep runs inside their folder"
    assert live_in_run(result.pid) == []
    assert outside.read_text() == "precious"
    assert sorted(os.listdir(outside.parent)) == ["precious.txt"]
    assert list((workdir / "runs").iterdir()) == []  # run folder and program file are gone


def test_a_correct_candidate_passes_in_a_fresh_folder(tmp_path: Path, outside: Path) -> None:
    candidate = (
        "import os, tempfile\n"
        "open('scratch.txt', 'w').write('inside')\n"
        "tempfile.NamedTemporaryFile(delete=False).write(b'tmp')\n"
        "print(os.getcwd(), os.environ['HOME'], tempfile.gettempdir())\n"
        "def add(a, b):\n    return a + b\n"
    )
    first, passed = run_candidate(candidate, tmp_path)
    second, _ = run_candidate(candidate, tmp_path)
    assert passed, first.stderr
    cwd, home, tmp = first.stdout.split("\n")[0].split()
    assert Path(cwd).parent == (tmp_path / "runs").resolve() and Path(home).parent == Path(cwd)
    cwd2, _, tmp2 = second.stdout.split()[:3]
    assert cwd2 != cwd and tmp2 != tmp  # every run gets its own folders
    assert len(tmp) < 60 and not Path(tmp).exists()  # short enough for Unix sockets, and removed
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
        "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], process_group=0)\n"
        "    print('child', p.pid, flush=True)\n"
        + ("def add(a, b):\n    return a - b\n" if ending == "wrong answer" else "while True:\n    pass\n")
    )
    result, passed = run_candidate(candidate, tmp_path, timeout_s=4.0)
    children = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("child ")]
    assert not passed
    assert len(children) == 30, result.stderr
    assert result.timed_out == (ending == "endless loop")
    for pid in children:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue  # gone and reaped
        fields = stat[stat.rfind(")") + 2 :].split()
        assert fields[0] == "Z" or int(fields[3]) != result.pid, f"child {pid} is still running"
    assert_contained(result, outside, tmp_path)


@pytest.mark.parametrize("gigabytes", [50, 1])  # 1 GB fits this machine: only the limit stops it
def test_large_allocations_fail_fast(tmp_path: Path, outside: Path, gigabytes: int) -> None:
    candidate = f"data = bytearray({gigabytes} * 2**30)\ndef add(a, b):\n    return a + b\n"
    result, passed = run_candidate(candidate, tmp_path, memory_mb=256, timeout_s=COMPLETES_S)
    assert not passed
    assert not result.timed_out
    assert "MemoryError" in result.stderr
    assert_contained(result, outside, tmp_path)


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_is_a_failure(tmp_path: Path, outside: Path, exit_call: str) -> None:
    result, passed = run_candidate(f"def add(a, b):\n    return a + b\n{exit_call}\n", tmp_path, timeout_s=COMPLETES_S)
    assert result.returncode == 0  # the exit status alone would call this a success
    assert not passed
    assert_contained(result, outside, tmp_path)


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
    candidate = f"import os, shutil\nTARGET = {str(outside)!r}\n{attack}\ndef add(a, b):\n    return a + b\n"
    result, passed = run_candidate(candidate, tmp_path)
    assert not passed
    assert "PermissionError" in result.stderr
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


def test_other_processes_and_the_network_are_out_of_reach(tmp_path: Path, outside: Path) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        candidate = (
            "import os, signal, socket\n"
            f"for attempt in (lambda: os.kill({victim.pid}, signal.SIGKILL),\n"
            f"                lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)):\n"
            "    try:\n"
            "        attempt()\n"
            "        print('reached')\n"
            "    except PermissionError:\n"
            "        print('blocked')\n"
            "def add(a, b):\n    return a + b\n"
        )
        result, _ = run_candidate(candidate, tmp_path)
        assert result.stdout.split()[:2] == ["blocked", "blocked"], result.stderr
        time.sleep(0.1)
        assert victim.poll() is None
    finally:
        server.close()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
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
