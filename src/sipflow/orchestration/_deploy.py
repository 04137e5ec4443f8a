"""Deployments and the one-machine facility (``sipflow serve``) on Prefect.

Everything here talks to the Prefect API that is current (``PREFECT_API_URL``);
:func:`serve` puts the pieces together: server, work pool, deployments, device limits
(:mod:`._limits`), workers (:mod:`._workers`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import OrchestrationError
from ._limits import set_device_limit
from ._runs import (
    DEPLOYMENT_NAME,
    HEARTBEAT_ENV,
    HEARTBEAT_S,
    SCAN_DEPLOYMENT,
    SCANS_DEPLOYMENT,
)
from ._warm import CLIENT_COMMAND, SOCKET_ENV, start_warm
from ._workers import (
    _adopt_orphans,
    _children_of,
    _die_with_parent,
    descendants,
    start_worker,
    stop_worker,
)


def deploy(pool: str = "sipflow", *, concurrency: int | None = None,
           command: str | None = None) -> list[str]:
    """Create the process work pool `pool` (if missing) and deploy both flows to it.

    The deployments name their flows by module path, so any machine with sipflow
    installed can run them (no code to pull); their parameters are the flows'.

    Parameters
    ----------
    pool : str
        Work pool name (type ``process``).
    concurrency : int, optional
        Flow runs of the pool at once (None: no limit; the pool's workers decide).
    command : str, optional
        The pool's command for a flow run (None: Prefect's ``python -m prefect.engine``;
        ``sipflow serve`` gives :data:`~._warm.CLIENT_COMMAND`).

    Returns
    -------
    list of str
        ``[SCAN_DEPLOYMENT, SCANS_DEPLOYMENT]``.
    """
    from prefect import deploy as prefect_deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.types.entrypoint import EntrypointType
    from prefect.workers.process import ProcessWorker

    from ._prefect import process_scan, process_scans

    if concurrency is not None and concurrency < 1:
        raise OrchestrationError(f"a work pool's concurrency must be at least 1, got "
                                 f"{concurrency}")
    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = command
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", concurrency_limit=concurrency,
                base_job_template=template))
        else:
            client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=concurrency,
                                                         base_job_template=template))
    # their runs beat every 30 s on any worker: a lost one is known after 90 s
    deployments = [f.to_deployment(name=DEPLOYMENT_NAME, tags=["sipflow"],
                                   entrypoint_type=EntrypointType.MODULE_PATH,
                                   job_variables={"env": {HEARTBEAT_ENV: str(HEARTBEAT_S)}})
                   for f in (process_scan, process_scans)]
    prefect_deploy(*deployments, work_pool_name=pool, build=False, push=False,
                   print_next_steps_message=False, ignore_warnings=True)
    return [SCAN_DEPLOYMENT, SCANS_DEPLOYMENT]


@contextlib.contextmanager
def _home_lock(home: Path) -> Any:
    """Hold `home` for this serve: a second serve on it would share its database."""
    from ..errors import OutputError
    from ..io import OutputLock

    lock = OutputLock(home / "sipflow-serve")
    try:
        lock.acquire()
    except OutputError:
        raise OrchestrationError(f"another sipflow serve runs with --home {home} (its "
                                 "database and logs); stop it, or give this one another "
                                 "--home and --port") from None
    try:
        yield
    finally:
        lock.release()


def _check_port_free(port: int) -> None:
    """Refuse at once a port another program holds (the server would fail to bind it
    and the cause would show only in its log)."""
    import socket

    with socket.socket() as s:
        # as the server binds: a port left in TIME_WAIT by a killed server is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise OrchestrationError(f"port {port} on 127.0.0.1 is taken by another program "
                                     f"({exc.strerror or exc}), not a Prefect server; choose "
                                     "another --port") from None


def _start_server(port: int, home: Path, log: Any) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on 127.0.0.1:`port` with its database in `home`."""
    import time

    from ._server import _healthy, startup_limit

    url = f"http://127.0.0.1:{port}/api"
    if _healthy(url):
        raise OrchestrationError(f"something already answers on 127.0.0.1:{port}; set "
                                 f"PREFECT_API_URL={url} to use that server, or choose "
                                 "another --port")
    _check_port_free(port)
    home.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED":
                        os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux")
                            else None)
    limit, t0 = startup_limit(), time.monotonic()
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() - t0 > limit:
            stop_worker(proc)
            raise OrchestrationError(f"the Prefect server on 127.0.0.1:{port} did not start "
                                     f"within {limit:.0f} s (exit status {proc.returncode}); "
                                     f"its log: {getattr(log, 'name', 'inherited')}")
        time.sleep(0.5)
    return proc, url


def _start_warm(stack: contextlib.ExitStack, log: Any) -> dict[str, str]:
    """Start the warm process (stopped with `stack`); the workers' environment for it."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="sipflow-warm-")  # a socket path must be short
    stack.callback(shutil.rmtree, folder, True)
    path = str(Path(folder) / "socket")
    proc = start_warm(path, log=log)
    stack.callback(stop_worker, proc)
    if proc.poll() is not None or not Path(path).exists():
        raise OrchestrationError(f"the warm process for flow runs did not start (exit "
                                 f"status {proc.returncode}); its log: "
                                 f"{getattr(log, 'name', 'inherited')}; `sipflow serve "
                                 "--no-warm` starts Python for each flow run instead")
    return {SOCKET_ENV: path}


def _reap_lost_runs(pool: str, since: float, log: Any) -> None:
    """:func:`~._runs.crash_lost_runs` for `serve`, said in its log; never raises (an
    API that does not answer now is asked again next time)."""
    from ._runs import crash_lost_runs

    try:
        lost = crash_lost_runs(pool, since=since)
    except Exception as exc:
        said = f"could not look for lost flow runs: {type(exc).__name__}: {exc}"
    else:
        if not lost:
            return
        said = f"flow runs that lost their worker, marked crashed: {', '.join(lost)}"
    log.write(f"{said}\n".encode())
    log.flush()


def serve(*, port: int = 4200, home: str | Path | None = None, pool: str = "sipflow",
          workers: int = 1, concurrency: int | None = None, gpu_slots: int = 1,
          cpu_slots: int | None = None, poll_s: float = 2.0, warm: bool = True,
          on_ready: Any = None, stop: Any = None) -> None:
    """A one-machine facility: Prefect server, work pool, deployments, workers; until stopped.

    1. Uses the server at ``PREFECT_API_URL`` when set, else starts ``prefect server
       start`` on 127.0.0.1:`port` (database and logs in `home`).
    2. Creates the process work pool `pool` and deploys both flows to it
       (:data:`SCAN_DEPLOYMENT`, :data:`SCANS_DEPLOYMENT`).
    3. Gives every CUDA card of this machine a limit of `gpu_slots` heavy stages at
       once (and the CPU `cpu_slots`, when given).
    4. Starts `workers` process workers, and starts again any that dies (the flow run
       a dead worker leaves behind finishes its scan, adopted by this process). With
       `warm`, their flow runs are forked off a warm process that has imported Prefect,
       sipflow and torch once (:mod:`._warm`): seconds less per scan.
    5. Every 30 s, marks Crashed the pool's Running or Pending flow runs that missed
       three of their heartbeats (:func:`~._runs.crash_lost_runs`; the deployments' runs
       beat every 30 s): runs whose process died with its worker, e.g. under a ``serve``
       that was killed before this one.

    Everything it started stops when it returns, and when its process dies.

    Parameters
    ----------
    port : int
        Port of the server it starts.
    home : path, optional
        ``PREFECT_HOME`` of that server (default ``~/.sipflow/prefect``).
    pool : str
        Work pool name.
    workers : int
        Process workers to keep running.
    concurrency : int, optional
        Flow runs (scans) of the pool at once.
    gpu_slots, cpu_slots : int
        Heavy stages per card / on the CPU at once (see :func:`device_slot`).
    poll_s : float
        Seconds between checks of the workers.
    warm : bool
        Fork flow runs off a warm process (the pool's command is
        :data:`~._warm.CLIENT_COMMAND`) instead of starting Python for each.
    on_ready : callable(dict), optional
        Called once everything runs, with ``api_url``, ``pool``, ``deployments``,
        ``limits`` and ``workers`` (their PIDs).
    stop : callable() -> bool, optional
        Checked every `poll_s`; True ends the service (else it runs until interrupted).
    """
    import time

    from ._server import use_api

    if workers < 1:
        raise OrchestrationError(f"serve needs at least one worker, got {workers}")
    home = Path(home) if home else Path.home() / ".sipflow" / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    server = None
    running: list[subprocess.Popen] = []
    with _home_lock(home), open(home / "sipflow-serve.log", "ab") as log, \
            contextlib.ExitStack() as stack:
        url = os.environ.get("PREFECT_API_URL")
        if url:  # a server of the user's: it must answer, or serve would wait on it forever
            from ._server import check_reachable

            check_reachable(url)
        else:
            server, url = _start_server(port, home, log)
            stack.callback(stop_worker, server)
        stack.enter_context(use_api(url))
        worker_env: dict[str, str] = {}
        if warm:
            worker_env = _start_warm(stack, log)
        deployments = deploy(pool, concurrency=concurrency,
                             command=CLIENT_COMMAND if warm else None)
        limits = []
        with contextlib.suppress(Exception):  # no torch CUDA: no card to limit
            import torch

            limits += [set_device_limit(f"cuda:{i}", gpu_slots)
                       for i in range(torch.cuda.device_count())]
        if cpu_slots:
            limits.append(set_device_limit("cpu", cpu_slots))

        adopted = _adopt_orphans()
        before = set(_children_of(os.getpid()))

        def stop_all() -> None:
            for proc in running:
                stop_worker(proc)
            # flow runs of workers that died before (adopted by this process) stop too
            for pid in set(_children_of(os.getpid())) - before:
                for p in [pid, *descendants(pid)]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

        stack.callback(stop_all)
        running += [start_worker(pool, env=worker_env, log=log) for _ in range(workers)]
        if on_ready is not None:
            on_ready({"api_url": url, "pool": pool, "deployments": deployments,
                      "limits": limits, "workers": [p.pid for p in running]})
        ready_at, reaped = time.time(), time.monotonic()
        while stop is None or not stop():
            time.sleep(poll_s)
            if time.monotonic() - reaped > 30:
                reaped = time.monotonic()
                _reap_lost_runs(pool, ready_at, log)
            if server is not None and server.poll() is not None:
                raise OrchestrationError(f"the Prefect server stopped (exit status "
                                         f"{server.returncode}); see {home}/sipflow-serve.log")
            for i, proc in enumerate(running):
                if proc.poll() is not None:  # a worker died: another takes its place
                    log.write(f"worker {proc.pid} exited with {proc.returncode}; "
                              "starting another\n".encode())
                    log.flush()
                    running[i] = start_worker(pool, env=worker_env, log=log)
            if adopted:  # a dead worker's flow run finishes under this process: reap it
                ours = {p.pid for p in running} | ({server.pid} if server else set())
                for pid in set(_children_of(os.getpid())) - ours - before:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
