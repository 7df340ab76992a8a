"""The reproduce command a record keeps pastes back into a shell as the same arguments."""

from __future__ import annotations

import shlex
import sys

import pytest

from spd_bench.engine.records import command_line


def test_the_recorded_command_is_shell_quoted(monkeypatch: pytest.MonkeyPatch):
    argv = ["/venv/bin/spd-bench", "run", "--set", "train.target_modules=[q_proj, v_proj]", "--tasks", "arith"]
    monkeypatch.setattr(sys, "argv", argv)
    command = command_line()
    assert command is not None and shlex.split(command) == ["spd-bench", *argv[1:]]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/spd-bench", "run", "--allow-code-execution"])
    assert command_line() == "spd-bench run --allow-code-execution"  # plain arguments stay as typed
