"""A Prefect API server that sipflow starts for itself and that never outlives it.

Prefect's own ephemeral server waits 20 s for start-up (too short on a busy 2-core
machine, where its first start also migrates a database) and keeps running with
parent PID 1 when its parent is killed. This one is the same uvicorn app, started
with a generous, configurable limit, and the kernel stops it when sipflow dies
(``PR_SET_PDEATHSIG``), however sipflow dies.

Environment
-----------
SIPFLOW_PREFECT_STARTUP_S
    Seconds to wait for the server to answer (default 180).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from .._system import die_with_parent
from ..errors import OrchestrationError

DEFAULT_STARTUP_S = 180.0


def startup_limit() -> float:
    """Seconds to wait for the embedded server (``SIPFLOW_PREFECT_STARTUP_S``, default 180)."""
    raw = os.environ.get("SIPFLOW_PREFECT_STARTUP_S", "")
    try:
        value = float(raw) if raw else DEFAULT_STARTUP_S
    except ValueError:
        raise OrchestrationError(f"SIPFLOW_PREFECT_STARTUP_S={raw!r} is not a number of "
                                 "seconds") from None
    return max(value, 1.0)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    die_with_parent(signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def check_prefect_home() -> Path:
    """The folder Prefect keeps its database in (``PREFECT_HOME``, else ``~/.prefect``),
    created and writable; else :class:`OrchestrationError` saying what to set."""
    raw = os.environ.get("PREFECT_HOME")
    try:
        home = Path(raw).expanduser() if raw else Path.home() / ".prefect"
    except RuntimeError:  # no HOME and no password entry
        raise OrchestrationError("Prefect needs a folder for its database, and this user has "
                                 "no home (HOME is unset); set PREFECT_HOME to a writable "
                                 "folder, or use --engine local") from None
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".sipflow-write-test-"):
            pass
    except OSError as exc:
        what = "PREFECT_HOME" if raw else f"HOME={os.environ.get('HOME', '')}"
        raise OrchestrationError(f"Prefect keeps its database in {home} ({what}), which "
                                 f"cannot be created or written ({exc.strerror or exc}); set "
                                 "PREFECT_HOME to a writable folder, or use --engine local"
                                 ) from None
    return home


@contextlib.contextmanager
def embedded_server(timeout: float | None = None) -> Iterator[str]:
    """Start a private Prefect API server on 127.0.0.1; yield its API URL; stop it.

    Parameters
    ----------
    timeout : float, optional
        Seconds to wait for it to answer (default :func:`startup_limit`).

    Raises
    ------
    OrchestrationError
        When it does not answer in time or exits, with its last output.
    """
    check_prefect_home()
    import prefect

    limit = startup_limit() if timeout is None else timeout
    log = tempfile.TemporaryFile(prefix="sipflow-prefect-server-")
    env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                        "PREFECT__SERVER_FINAL": "1",
                        "PREFECT_SERVER_ANALYTICS_ENABLED":
                            os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false")}
    env.pop("PREFECT_API_URL", None)
    proc = None
    try:
        for _attempt in range(3):  # another process may take the port first
            port = _free_port()
            url = f"http://127.0.0.1:{port}/api"
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir",
                 str(Path(prefect.__file__).parent.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port",
                 str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            t0 = time.monotonic()
            while time.monotonic() - t0 < limit and proc.poll() is None:
                if _healthy(url):
                    break
                time.sleep(0.2)
            else:
                log.seek(0)
                if proc.poll() == 3 and b"already in use" in log.read():  # another took it
                    continue
                waited = time.monotonic() - t0
                proc.kill()
                proc.wait()
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                state = (f"it exited with status {proc.returncode}"
                         if waited < limit else f"it did not answer within {limit:.0f} s")
                raise OrchestrationError(
                    f"the embedded Prefect server could not be started: {state} "
                    f"(machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
                    + (f"; its last output: {' | '.join(tail)}" if tail else "")
                    + ". Raise SIPFLOW_PREFECT_STARTUP_S, set PREFECT_API_URL to a running "
                    "Prefect server, or use --engine local.")
            break
        else:
            raise OrchestrationError("the embedded Prefect server could not find a free port "
                                     "on 127.0.0.1 in 3 tries; use --engine local")
        yield url
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API to use: ``PREFECT_API_URL`` when set, else an embedded server.

    Inside the block Prefect talks to that API (set through Prefect's settings, so it
    works whether or not Prefect was imported already).
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        check_reachable(configured)
        yield configured
        return
    with embedded_server() as url, use_api(url):
        try:
            yield url
        finally:
            drain_prefect()


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`OrchestrationError` (exit 4) when the Prefect API at `url` does not
    answer its health check, before any flow run is attempted."""
    health = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            if response.status == 200:
                return
            why = f"HTTP {response.status}"
    except OSError as exc:  # refused, unreachable, timed out, HTTP errors
        why = str(getattr(exc, "reason", None) or exc)
    except ValueError as exc:  # not a URL at all
        why = str(exc)
    raise OrchestrationError(f"PREFECT_API_URL={url} does not answer ({why}); start that "
                             "server (sipflow serve prints its URL) or unset PREFECT_API_URL "
                             "to run with an embedded one")


@contextlib.contextmanager
def use_api(url: str) -> Iterator[str]:
    """Inside the block, this process and the processes it starts talk to `url`.

    Sets ``PREFECT_API_URL`` in the environment (for subprocesses) and in Prefect's
    settings (read once at import, so the environment alone does not reach this
    process); both are restored after the block.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def drain_prefect(timeout: float = 20.0) -> None:
    """Send Prefect's queued logs and events now, while the server still runs.

    Otherwise they are sent at interpreter exit to a server that is gone, and the
    process hangs for a minute retrying before it can exit.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)
