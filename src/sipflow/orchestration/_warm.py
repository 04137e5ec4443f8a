"""A warm process for flow runs: Prefect, sipflow and torch imported once, each flow run
forked off it (``sipflow serve`` starts one; its workers' command is
:mod:`._warm_client`).

A process worker starts every flow run as a new Python process, which spends seconds
importing Prefect, sipflow and torch before the first stage. Here those imports are done
once, in a process that never runs a stage itself (no torch thread pool, no API client
exists when it forks); a flow run's client hands over its environment, working folder
and standard streams through a Unix socket, and the fork runs ``prefect.engine`` as
``python -m prefect.engine`` would, with that environment. The fork dies with its client
(the process Prefect's worker watches and signals) and with this process; this process
dies with its parent.

Usage: ``python -m sipflow.orchestration._warm SOCKET`` (what :func:`start_warm` runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .._warm_client import SOCKET_ENV

#: the command of a flow run that goes through the warm process (the default of the work
#: pool that ``sipflow serve`` makes: this machine's interpreter)
CLIENT_COMMAND = f"{sys.executable} -m sipflow._warm_client"

__all__ = ["CLIENT_COMMAND", "SOCKET_ENV", "start_warm"]


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    with contextlib.suppress(OSError):  # the client is gone: nobody to tell
        conn.sendall(struct.pack("!I", len(body)) + body)


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """The client's request and its three standard streams."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
    while len(data) >= 4 and len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = conn.recv(1 << 20)
        if not more:
            break
        data += more
    if len(data) < 4 or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return None
    (size,) = struct.unpack("!I", data[:4])
    return json.loads(data[4:4 + size]), fds


def _child(request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
    """In the fork: become ``python -m prefect.engine`` with the client's environment."""
    import atexit
    import runpy

    from .._system import die_with_parent

    code = 1
    try:
        os.setpgid(0, 0)  # a group of its own, as a process worker gives its runs
        if sys.platform.startswith("linux"):
            die_with_parent(signal.SIGKILL)  # and dies with the warm process
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])

        def client_gone() -> None:  # the worker's process for this run died: so does it
            with contextlib.suppress(OSError):
                while conn.recv(1024):
                    pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=client_gone, daemon=True).start()
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # the settings of the client's environment
        sys.argv = ["prefect.engine", *request["argv"]]
        try:
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()  # Prefect's log and event workers send what they hold
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, conn: socket.socket) -> None:
    """Tell the client its fork's exit status once it ends."""
    _, status = os.waitpid(pid, 0)
    _send(conn, {"exit": os.waitstatus_to_exitcode(status) % 256})
    conn.close()


def serve_warm(path: str) -> None:
    """Import what flow runs need, then fork one per client on socket `path`, forever."""
    import prefect.engine
    import prefect.flow_engine
    import torch

    from ..plugins import get_registry
    from . import _prefect  # the flows, their stages

    del prefect, torch, _prefect  # imported for the forks, not used here

    get_registry()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    print(f"sipflow warm process {os.getpid()} ready on {path}", flush=True)
    while True:
        conn, _ = server.accept()
        conn.settimeout(10.0)  # a client that sends nothing must not stall the others
        try:
            got = _receive(conn)
        except (OSError, ValueError):
            got = None
        conn.settimeout(None)
        if got is None:
            conn.close()
            continue
        request, fds = got
        pid = os.fork()  # in the main thread: the waiting threads hold no lock
        if pid == 0:
            server.close()
            _child(request, fds, conn)
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        threading.Thread(target=_wait, args=(pid, conn), daemon=True).start()


def start_warm(path: str | Path, *, log: Any = None) -> subprocess.Popen:
    """Start the warm process on socket `path` (stopped when this process dies) and
    wait until it is ready (its imports take a few seconds)."""
    import time

    from ._workers import _die_with_parent

    proc = subprocess.Popen([sys.executable, "-m", "sipflow.orchestration._warm", str(path)],
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT if log else None,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux")
                            else None)
    deadline = time.monotonic() + 120
    while not Path(path).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


if __name__ == "__main__":
    serve_warm(sys.argv[1])
