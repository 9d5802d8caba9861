"""Warm starts: run ``python -m pipeline ...`` in a fork of a process that has torch imported.

A stage process spends 3-5 s importing torch, torchvision (with torch._dynamo) and timm before
doing anything; over the 66 stages of the default DAG that is most of ``dvc repro``'s time on
a small machine. So the first stage command starts a *warm server* in the background (and runs
cold itself); later commands hand their command line, working directory, environment, sys.path,
CPU affinity and stdin/stdout/stderr to that server over a Unix socket, and it forks a worker
that runs exactly what the command would have run. The command waits for the worker, forwards
signals to it (Ctrl-C, SIGTERM), and exits with its exit status. DVC and the Prefect flow see an
ordinary process.

What the worker runs is always the checkout's current code: the server imports only third-party
libraries (never this project's modules), and the worker imports ``pipeline`` fresh from the
command's sys.path. The server is keyed by the interpreter, its sys.path, the installed files of
the preloaded libraries, the import-time environment (thread and CUDA settings) and this file:
change any of them and a new server starts, the old one exits after ``PIPELINE_WARM_IDLE``
seconds (default 300) without requests.

Off when: ``PIPELINE_WARM=0``; the machine has NVIDIA or AMD GPU devices (CUDA cannot be used in
a process forked after the CUDA driver may have been touched, and on such machines stages are
long anyway); under torchrun; the interpreter runs with special flags (``-X``, ``-W``, ``-O``,
``-I``); the platform lacks fork, ``pidfd_open`` or passing file descriptors. Any failure to
reach a server runs the command cold, as before. Each request of a server is logged to ``<socket>.log``.
The socket lives in a directory only this user can open (``$XDG_RUNTIME_DIR`` or ``/tmp``).

This module is imported by the command before anything heavy, so it imports only the standard
library.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import signal
import socket
import stat
import struct
import sys
import time

#: Imported once by the server; every worker gets them for free.
PRELOAD = (
    "numpy",
    "yaml",
    "pydantic",
    "torch",
    "torchvision",
    "timm",
    "sklearn.linear_model",
    "webdataset",
    "lightly.loss",
)
#: Environment read at import time by the preloaded libraries: part of the server's key.
_IMPORT_ENV = (
    "OMP_", "MKL_", "KMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "LD_", "PYTHON", "TIMM_",
    "HF_", "SKLEARN_", "LC_", "LANG",
)  # fmt: skip
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_WORKER_FLAG = "PIPELINE_WARM_WORKER"
_HEADER = struct.Struct("!I")


# -- where, and whether ------------------------------------------------------------------------


def enabled() -> bool:
    """Whether this command may use a warm server (see the module docstring)."""
    if os.environ.get("PIPELINE_WARM", "1").lower() in ("0", "false", "no", "off"):
        return False
    if os.environ.get(_WORKER_FLAG) or "LOCAL_RANK" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    if not (hasattr(socket, "send_fds") and hasattr(os, "pidfd_open") and hasattr(os, "fork")):
        return False
    flags = sys.flags
    if sys.warnoptions or sys._xoptions or flags.optimize or flags.isolated or flags.dev_mode:
        return False
    if flags.ignore_environment or flags.no_site:
        return False
    return not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def socket_dir() -> str | None:
    """A directory only this user can enter, created if needed; None if that is not so."""
    base = os.environ.get("PIPELINE_WARM_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"robust-transfer-warm-{os.getuid()}"
    )
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        st = os.lstat(base)
    except OSError:
        return None
    private = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    return base if private else None


def _library_stamp(name: str) -> str:
    """Where a preloaded library is installed and when its files last changed (no import)."""
    try:
        spec = importlib.util.find_spec(name.split(".")[0])
    except (ImportError, ValueError):
        return "absent"
    if spec is None or not spec.origin:
        return "absent"
    folder = os.path.dirname(spec.origin)
    with contextlib.suppress(OSError):
        return f"{spec.origin}:{os.stat(spec.origin).st_mtime_ns}:{os.stat(folder).st_mtime_ns}"
    return "absent"


def _site_stamp(path: list[str]) -> list[str]:
    """The ``.pth`` files (editable installs' finders among them) of the path's folders."""
    stamps = []
    for folder in path:
        for pth in sorted(glob.glob(os.path.join(folder or ".", "*.pth"))):
            with contextlib.suppress(OSError):
                stamps.append(f"{pth}:{os.stat(pth).st_mtime_ns}")
    return stamps


def _process_context() -> list[str]:
    """What a fork inherits from the server but a command may differ in: namespaces, cgroup,
    resource limits, niceness. A command from another container or job gets its own server."""
    import resource

    context = []
    for ns in ("mnt", "pid", "net", "user"):
        with contextlib.suppress(OSError):
            context.append(f"{ns}:{os.stat(f'/proc/self/ns/{ns}').st_ino}")
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        context.append(f.read())
    for name in ("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_STACK", "RLIMIT_CORE"):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            context.append(f"{name}:{resource.getrlimit(getattr(resource, name))}")
    with contextlib.suppress(OSError):
        context.append(f"nice:{os.getpriority(os.PRIO_PROCESS, 0)}")
    return context


def server_key(path: list[str]) -> str:
    """Everything that decides what a fork of the server would be: the interpreter, the
    preloaded modules and what they read at import, and the process context."""
    with open(__file__, "rb") as f:
        own = hashlib.sha256(f.read()).hexdigest()
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_IMPORT_ENV))
    parts = [sys.executable, sys.version, sys.prefix, path[1:], own, env, _site_stamp(path[1:])]
    parts += [_library_stamp(name) for name in PRELOAD]
    parts += _process_context()
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


# -- the command's side ------------------------------------------------------------------------


def run_warm(module: str, argv: list[str]) -> int | None:
    """Run ``python -m module argv`` in a warm worker; its exit status, or None to run cold."""
    if not enabled():
        return None
    folder = socket_dir()
    if folder is None:
        return None
    address = os.path.join(folder, server_key(sys.path) + ".sock")
    if len(os.fsencode(address)) > 100:  # beyond what a Unix socket address can hold
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        _start_server(address)
        return None
    ignored = [s for s in _FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    forwarded = [s for s in _FORWARDED if s not in ignored]
    with conn:
        request = {
            "module": module,
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "path": sys.path,
            "umask": _umask(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "ignored": [int(s) for s in ignored],
            # -u or PYTHONUNBUFFERED: the command's stdout writes through
            "unbuffered": bool(getattr(sys.stdout, "write_through", False)),
        }
        # Held until forwarding is in place, so no signal is lost while the worker starts.
        signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
        try:
            payload = json.dumps(request).encode()
            conn.settimeout(30.0)  # a server that does not answer (stopped, say): run cold
            socket.send_fds(conn, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
            started = _read_message(conn)
            conn.settimeout(None)
        except (OSError, ValueError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
            return None  # nothing ran: run cold
        if started is None or "pid" not in started:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
            return None
        return _wait_for_worker(conn, forwarded)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _wait_for_worker(conn: socket.socket, forwarded: list[int]) -> int:
    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            _send_message(conn, {"signal": signum})

    previous = {sig: signal.signal(sig, forward) for sig in forwarded}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
    try:
        done = _read_message(conn)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if done is None or "exit" not in done:
        print("pipeline: the warm worker was lost before it finished", file=sys.stderr)
        return 1
    code = int(done["exit"])
    if code < 0:  # the worker died by a signal: so does this command, as a cold one would
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code  # not reached for signals that terminate
    return code


def _start_server(address: str) -> None:
    """Start a server for ``address`` in the background, detached from this command's output."""
    import subprocess

    # This very file, loaded by path: the server imports nothing of the project it serves.
    boot = (
        "import importlib.util as u; "
        f"s = u.spec_from_file_location('pipeline_warm_server', {os.path.abspath(__file__)!r}); "
        f"m = u.module_from_spec(s); s.loader.exec_module(m); m.serve({address!r})"
    )
    with contextlib.suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-c", boot],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd=os.path.dirname(address),
        )


# -- messages: a 4-byte length, then JSON ----------------------------------------------------


def _send_message(conn: socket.socket, message: dict) -> None:
    payload = json.dumps(message).encode()
    conn.sendall(_HEADER.pack(len(payload)) + payload)


def _read_exact(conn: socket.socket, n: int, head: bytes = b"") -> bytes | None:
    data = bytearray(head)
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _read_message(conn: socket.socket, head: bytes = b"") -> dict | None:
    header = _read_exact(conn, _HEADER.size, head[: _HEADER.size])
    if header is None:
        return None
    body = _read_exact(conn, _HEADER.unpack(header)[0], head[_HEADER.size :])
    return None if body is None else json.loads(body)


# -- the server's side -------------------------------------------------------------------------


def serve(address: str) -> None:
    """Preload, then fork a handler per request until idle; one server per address."""
    import fcntl

    lock = os.open(address + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server for this key is starting or running
    with contextlib.suppress(OSError):
        open(address + ".log", "w").close()  # the log covers this server's lifetime
    idle = float(os.environ.get("PIPELINE_WARM_IDLE", "300"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address)  # before the preload: a server that cannot bind costs nothing
    except OSError:
        return
    os.chmod(address, 0o600)
    listener.listen(16)  # commands arriving during the preload wait in the backlog
    for name in PRELOAD:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    listener.settimeout(5.0)
    handlers: set[int] = set()
    last = time.monotonic()
    try:
        while handlers or time.monotonic() - last < idle:
            for pid in list(handlers):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        handlers.discard(pid)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    listener.close()
                    os.close(lock)  # the lock is the server's alone, not its workers'
                    code = _handle(conn, address)
                finally:
                    os._exit(code)  # never back into this loop, whatever happened
            handlers.add(pid)
            conn.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        listener.close()


def _handle(conn: socket.socket, address: str) -> int:
    """One request: fork the worker, report its PID, forward signals, report its exit status."""
    conn.settimeout(None)
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    if struct.unpack("3i", creds)[1] != os.getuid():
        return 1  # only this user's commands (the folder already ensures it)
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        request = _read_message(conn, data)
    except (OSError, ValueError):
        return 1
    if request is None or len(fds) != 3:
        return 1
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        conn.close()
        _become_worker(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # as the worker does: no signal can arrive before its group exists
    try:
        pidfd = os.pidfd_open(pid)
        _send_message(conn, {"pid": pid})
        code = _supervise(conn, pid, pidfd)
    except BaseException:  # the command went away mid-hand-off: no worker outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    with contextlib.suppress(OSError):
        _send_message(conn, {"exit": code})
    with contextlib.suppress(OSError), open(address + ".log", "a") as log:
        cmd = " ".join([request["module"], *request["argv"]])
        log.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid={pid} exit={code} "
            f"{time.monotonic() - t0:.1f}s cwd={request['cwd']} {cmd}\n"
        )
    return 0


def _supervise(conn: socket.socket, pid: int, pidfd: int) -> int:
    """Wait for the worker; forward the command's signals; kill it if the command goes away."""
    import select

    pending = b""
    watched = [pidfd, conn]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if pidfd in ready:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])  # -N: killed by signal N
        try:
            chunk = conn.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:  # the command was killed: its worker must not outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            watched = [pidfd]
            continue
        pending += chunk
        while len(pending) >= _HEADER.size:
            size = _HEADER.size + _HEADER.unpack(pending[: _HEADER.size])[0]
            if len(pending) < size:
                break
            message, pending = json.loads(pending[_HEADER.size : size]), pending[size:]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, int(message["signal"]))


def _become_worker(request: dict, fds: list[int]) -> None:
    """Turn this fork into the command's process and run its module as ``__main__``."""
    import random
    import runpy
    import threading

    code, by_signal = 1, 0
    try:
        os.setpgid(0, 0)  # its own group: a forwarded signal reaches its children too
        for stream in (sys.stdout, sys.stderr):  # the server's, bound for /dev/null
            with contextlib.suppress(BaseException):
                stream.flush()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[_WORKER_FLAG] = "1"
        os.umask(request["umask"])
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, request["cpus"])
        # New stream objects, set up as a fresh interpreter would for these descriptors.
        out_buffering = 1 if request["unbuffered"] or os.isatty(1) else -1
        sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115 - kept open
        sys.stdout = sys.__stdout__ = open(1, "w", buffering=out_buffering, closefd=False)  # noqa: SIM115
        sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
            2, "w", buffering=1, errors="backslashreplace", closefd=False
        )
        sys.path[:] = request["path"]
        importlib.invalidate_caches()
        for sig in _FORWARDED + (signal.SIGCHLD,):
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, signal.SIG_IGN if sig in request["ignored"] else default)
        for name in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
            del sys.modules[name]  # the checkout's code, imported fresh
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.argv = [request["module"], *request["argv"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        by_signal = signal.SIGINT  # a cold interpreter dies by SIGINT here
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    finally:
        import atexit

        with contextlib.suppress(BaseException):
            threading._shutdown()  # join non-daemon threads, as interpreter exit does
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        if by_signal:
            signal.signal(by_signal, signal.SIG_DFL)
            os.kill(os.getpid(), by_signal)
        os._exit(code)
