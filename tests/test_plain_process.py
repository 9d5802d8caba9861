"""A stage command is an ordinary process: when it exits, nothing it started is left running.

The command runs in a session of its own (``start_new_session``); every process the project could
have left behind (a server, a data-loader worker, a forked helper) would still carry that session
id in ``/proc/<pid>/stat`` after the command has exited, whatever its parent became.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _session_members(sid: int) -> list[str]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        # the command name may hold spaces and parentheses: the fields follow the last ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            members.append(f"{entry.name}: {cmdline}")
    return members


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "--dataset", "digits_0to4"],
        ["plan"],
    ],
)
def test_nothing_of_a_stage_command_outlives_it(workdir, argv):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=workdir, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    sid = proc.pid  # a new session's id is its leader's pid
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _session_members(sid) == []


def test_the_check_sees_a_process_left_behind(tmp_path):
    """The check can fail: a command that leaves a sleeping child behind is caught."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; subprocess.Popen(['sleep', '30'])"],
        start_new_session=True,
    )
    proc.wait(timeout=60)
    try:
        left = _session_members(proc.pid)
        assert any("sleep 30" in m for m in left), left
    finally:
        subprocess.run(["pkill", "-s", str(proc.pid)], check=False)
