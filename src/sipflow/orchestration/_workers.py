"""Worker processes: started to die with their parent, stopped with all they started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    from ._server import _die_with_parent as die

    die()
    os.setpgrp()  # its own group: stopping it stops the flow runs it started


def start_worker(pool: str = "sipflow", *, name: str | None = None,
                 env: dict[str, str] | None = None, log: Any = None) -> subprocess.Popen:
    """Start a Prefect process worker on `pool`, stopped when this process dies.

    The worker runs in a process group of its own; :func:`stop_worker` stops it and
    the flow runs it started.

    Parameters
    ----------
    pool : str
        Work pool to poll.
    name : str, optional
        Worker name (Prefect's default otherwise).
    env : dict, optional
        Extra environment, e.g. ``{"CUDA_VISIBLE_DEVICES": "1"}`` to pin it to a card.
    log : file, optional
        Where its output goes (default: inherited).
    """
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
           "process"] + (["--name", name] if name else [])
    from ._runs import HEARTBEAT_ENV, HEARTBEAT_S

    # a scan waits for the worker's next look at the pool: every 1 s, not Prefect's 10 s;
    # its flow runs send a heartbeat every 30 s, not 180 s: a lost run is found sooner
    base = {"PREFECT_WORKER_QUERY_SECONDS": "1",
            HEARTBEAT_ENV: str(HEARTBEAT_S)} | os.environ
    return subprocess.Popen(cmd, env=base | (env or {}), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT if log else None,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux")
                            else None)


def _children_by_parent() -> dict[int, list[int]]:
    """``{parent PID: [child PIDs]}`` of every process, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    return parents


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (children, their children, ...), from /proc.

    Prefect's process worker starts each flow run in a session of its own, so a
    process group does not hold them; the parent links do.
    """
    parents = _children_by_parent()
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_worker(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a process from :func:`start_worker` (or the server) and every process below it.

    TERM first (a worker reports its flow runs' end to the server), KILL after
    `timeout` seconds and for whatever is left.
    """
    below = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in below + descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _children_of(pid: int) -> list[int]:
    return _children_by_parent().get(pid, [])


def _adopt_orphans() -> bool:
    """Make this process the parent of orphans among its descendants (Linux).

    A worker that dies leaves its flow run running (Prefect starts it in a session of
    its own); adopted, the run still finishes its scan, and stopping ``serve`` stops it.
    """
    from .._system import prctl

    return sys.platform.startswith("linux") and prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER
