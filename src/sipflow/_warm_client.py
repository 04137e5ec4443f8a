"""The command a ``sipflow serve`` worker runs for each flow run: hand it to the warm
process (:mod:`sipflow.orchestration._warm`), which forks it off with Prefect, sipflow
and torch already imported, and stand for it until it ends.

Run as ``python -m sipflow._warm_client [flow run id]``: standard library only (and
``import sipflow``, which imports neither Prefect nor torch), so that it starts at once.
It passes its environment, working folder and standard streams to the warm process,
forwards SIGTERM and SIGINT to the forked run and exits with its exit status; the run
dies with this process (also when it is killed). When no warm process answers it becomes
``python -m prefect.engine`` itself: a flow run is never lost to this shortcut.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

#: environment variable that names the warm process's socket (set by ``sipflow serve``)
SOCKET_ENV = "SIPFLOW_WARM_SOCKET"


def _fallback() -> None:
    """Run the flow run the ordinary way, in this process."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])


def _read_message(conn: socket.socket) -> dict | None:
    head = b""
    while len(head) < 4:
        part = conn.recv(4 - len(head))
        if not part:
            return None
        head += part
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        part = conn.recv(size - len(body))
        if not part:
            return None
        body += part
    return json.loads(body)


def main() -> None:
    path = os.environ.get(SOCKET_ENV)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no warm process")
        conn.connect(path)
        request = json.dumps({"argv": sys.argv[1:], "env": dict(os.environ),
                              "cwd": os.getcwd()}).encode()
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2])
        started = _read_message(conn)
    except OSError:
        started = None
    if not started or "pid" not in started:  # no warm process: nothing was started
        conn.close()
        _fallback()
        return
    pid = int(started["pid"])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    ended = _read_message(conn)
    # no answer: the warm process died, and the run with it
    sys.exit(int(ended["exit"]) if ended else 1)


if __name__ == "__main__":
    main()
