"""Warm starts (pipeline.core.warm): a forked worker must behave exactly like the cold command.

Each test drives a real server (preloading torch takes a few seconds, once per module) and a
small probe module written into a temporary directory, run the way ``python -m`` runs one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core import warm

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"),
    reason="warm starts need Linux (fork, pidfd, fd passing)",
)

PROBE = """
import os, sys, time
print("VERSION", {version!r}, "PID", os.getpid(), "CWD", os.getcwd(), flush=True)
print("ENV", os.environ.get("PROBE_VALUE"), "ARGV", sys.argv[1:], flush=True)
print("TORCH_PRELOADED", "torch" in sys.modules, flush=True)
line = sys.stdin.readline().strip()
print("STDIN", line, flush=True)
print("to stderr", file=sys.stderr, flush=True)
if "sleep" in sys.argv:
    print("READY", flush=True)
    time.sleep(60)
sys.exit(int(sys.argv[1]))
"""

CLIENT = (
    "import os, sys; from pipeline.core.warm import run_warm; "
    "print('CLIENT', os.getpid(), file=sys.stderr, flush=True); "
    "code = run_warm('warmprobe', sys.argv[1:]); "
    "print('COLD' if code is None else '', file=sys.stderr, flush=True); "
    "sys.exit(0 if code is None else code)"
)


@pytest.fixture(scope="module")
def warm_env(tmp_path_factory):
    """A probe module and an environment whose warm server has started (and is reachable)."""
    root = tmp_path_factory.mktemp("warm")
    (root / "warmprobe.py").write_text(PROBE.format(version="v1"))
    env = {
        **os.environ,
        "PIPELINE_WARM": "1",
        "PIPELINE_WARM_DIR": str(root / "sockets"),
        "PIPELINE_WARM_IDLE": "20",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    first = client(root, env, ["0"], stdin="x\n")
    assert "COLD" in first.stderr  # no server yet: ran cold, started one in the background
    deadline = time.monotonic() + 120
    while not list((root / "sockets").glob("*.sock")):
        assert time.monotonic() < deadline, "the warm server did not come up"
        time.sleep(0.2)
    return root, env


def client(root: Path, env: dict, argv: list[str], stdin: str = "", **kw):
    return subprocess.run(
        [sys.executable, "-c", CLIENT, *argv],
        cwd=root, env=env, input=stdin, capture_output=True, text=True, timeout=60, **kw,
    )  # fmt: skip


def _served_lines(root: Path) -> list[str]:
    logs = list((root / "sockets").glob("*.log"))
    return logs[0].read_text().splitlines() if logs else []


def test_a_warm_worker_gets_the_commands_arguments_cwd_env_streams_and_exit_status(warm_env):
    root, env = warm_env
    done = client(root, {**env, "PROBE_VALUE": "42"}, ["3", "a b"], stdin="hello\n")
    assert "COLD" not in done.stderr, done.stderr
    assert done.returncode == 3
    out = done.stdout
    assert "VERSION v1" in out and f"CWD {root}" in out
    assert "ENV 42 ARGV ['3', 'a b']" in out
    assert "TORCH_PRELOADED True" in out  # the point: imported once, by the server
    assert "STDIN hello" in out and "to stderr" in done.stderr
    client_pid = int(done.stderr.split("CLIENT")[1].split()[0])
    worker_pid = int(out.split("PID")[1].split()[0])
    assert worker_pid != client_pid
    assert any(f"pid={worker_pid} exit=3" in line for line in _served_lines(root))


def test_a_warm_worker_runs_the_current_code_not_what_the_server_saw(warm_env):
    root, env = warm_env
    (root / "warmprobe.py").write_text(PROBE.format(version="v2"))
    try:
        done = client(root, env, ["0"], stdin="\n")
        assert "COLD" not in done.stderr and "VERSION v2" in done.stdout
    finally:
        (root / "warmprobe.py").write_text(PROBE.format(version="v1"))


def _start_sleeper(root: Path, env: dict):
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, "0", "sleep"],
        cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc.stdin.write("\n")
    proc.stdin.flush()
    pid = None
    for line in proc.stdout:
        if line.startswith("VERSION"):
            pid = int(line.split("PID")[1].split()[0])
        if line.startswith("READY"):
            return proc, pid
    raise AssertionError("the probe never became ready")


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_reaches_the_worker_and_both_die_by_it(warm_env, sig):
    """As a cold interpreter: killed by SIGTERM; Ctrl-C raises KeyboardInterrupt, then dies by
    SIGINT (so a calling shell loop stops too)."""
    root, env = warm_env
    proc, worker = _start_sleeper(root, env)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == -sig
    assert _gone(worker)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in proc.stderr.read()


def test_killing_the_command_kills_its_worker_and_the_server_serves_on(warm_env):
    root, env = warm_env
    proc, worker = _start_sleeper(root, env)
    proc.kill()
    proc.wait(timeout=20)
    assert _gone(worker)
    again = client(root, env, ["0"], stdin="\n")
    assert again.returncode == 0 and "COLD" not in again.stderr


def test_ignored_signals_stay_ignored_in_the_worker(warm_env):
    """Under nohup a cold command ignores SIGHUP; so must its warm worker."""
    root, env = warm_env
    code = (
        "import signal, subprocess, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        f"rc = subprocess.call([sys.executable, '-c', {CLIENT!r}, '0', 'sleep'], "
        "stdin=subprocess.DEVNULL); print('RC', rc, flush=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid = None
    for line in proc.stdout:
        if line.startswith("VERSION"):
            pid = int(line.split("PID")[1].split()[0])
        if line.startswith("READY"):
            break
    os.kill(pid, signal.SIGHUP)  # straight to the worker: it must ignore it
    time.sleep(0.5)
    assert not _gone(pid, within_s=0.1)
    os.kill(pid, signal.SIGTERM)
    rest, _ = proc.communicate(timeout=20)
    assert f"RC {-signal.SIGTERM}" in rest  # the command died by the worker's signal


def test_warm_starts_are_off_when_asked_or_when_the_socket_folder_is_not_private(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PIPELINE_WARM", "0")
    assert not warm.enabled()
    assert warm.run_warm("warmprobe", []) is None
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("PIPELINE_WARM_DIR", str(shared))
    assert warm.socket_dir() is None  # another user could connect and run code as us
    shared.chmod(0o700)
    assert warm.socket_dir() == str(shared)


def test_the_server_key_changes_with_import_time_settings(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    base = warm.server_key(sys.path)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert warm.server_key(sys.path) != base
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert warm.server_key(sys.path) == base
    assert warm.server_key([sys.path[0], "/elsewhere", *sys.path[1:]]) != base
