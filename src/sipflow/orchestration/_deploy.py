"""Deployments, work pools, workers and per-device slots: a facility set-up on Prefect.

Everything here talks to the Prefect API that is current (``PREFECT_API_URL``);
:func:`sipflow.orchestration.serve` puts the pieces together on one machine.

Device slots
------------
A heavy stage (:attr:`sipflow.Stage.heavy`) holds one slot of a Prefect *global concurrency limit*
named after the device it runs on, on this host (:func:`device_limit_name`:
``sipflow-<host>-cuda<physical index>``, or ``sipflow-<host>-cpu``), for as long as it
runs. With a limit of 1 per card, two reconstructions never share a card, whatever
worker or flow run they come from; a device without a limit is not limited. The slot
is a lease that the running stage renews: when its worker is killed, the slot comes
back within :data:`LEASE_S` seconds plus the server's 15 s sweep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import OrchestrationError

#: name of the deployments ``sipflow serve`` creates (one per flow)
DEPLOYMENT_NAME = "sipflow"
#: the one-scan deployment, as ``run_deployment`` and ``sipflow watch --deployment`` name it
SCAN_DEPLOYMENT = f"sipflow-process-scan/{DEPLOYMENT_NAME}"
#: the many-scans deployment
SCANS_DEPLOYMENT = f"sipflow-process-scans/{DEPLOYMENT_NAME}"
#: seconds a device slot stays held after its holder died (the server's minimum lease)
LEASE_S = 60.0


def device_limit_name(device: str, host: str | None = None) -> str:
    """Name of the global concurrency limit that guards `device` on `host`.

    Parameters
    ----------
    device : str
        A resolved torch device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ``cuda:N`` is
        mapped to the physical card through ``CUDA_VISIBLE_DEVICES``, so workers pinned
        to different cards use different limits and two pinned to the same card share
        one.
    host : str, optional
        Host name (default: this machine's).

    Returns
    -------
    str
        ``sipflow-<host>-cpu`` or ``sipflow-<host>-cuda<physical index>``.
    """
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", host or socket.gethostname())
    if not device.startswith("cuda"):
        return f"sipflow-{host}-{device.split(':')[0]}"
    index = int(device.split(":")[1]) if ":" in device else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if v.strip()]
    physical = visible[index] if index < len(visible) else str(index)
    return f"sipflow-{host}-cuda{physical}"


@contextlib.contextmanager
def device_slot(device: str) -> Iterator[str | None]:
    """Hold one slot of `device`'s limit while the block runs (none when it has no limit).

    Yields the limit's name, or None when no such limit exists on the server.
    """
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    name = device_limit_name(device)
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        yield None
        return
    # the lease is renewed while the stage runs; a killed holder's slot comes back
    # after at most LEASE_S (+ the server's 15 s sweep)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S):
        yield name


def set_device_limit(device: str, slots: int = 1, host: str | None = None) -> str:
    """Create (or update) the global concurrency limit of `device`; return its name.

    Parameters
    ----------
    device : str
        As for :func:`device_limit_name`.
    slots : int
        Heavy stages allowed on it at once (1: a card is never shared).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    if slots < 1:
        raise OrchestrationError(f"a device needs at least one slot, got {slots}")
    name = device_limit_name(device, host)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=int(slots)))
        else:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=int(slots)))
    return name


def deploy(pool: str = "sipflow", *, concurrency: int | None = None) -> list[str]:
    """Create the process work pool `pool` (if missing) and deploy both flows to it.

    The deployments name their flows by module path, so any machine with sipflow
    installed can run them (no code to pull); their parameters are the flows'.

    Parameters
    ----------
    pool : str
        Work pool name (type ``process``).
    concurrency : int, optional
        Flow runs of the pool at once (None: no limit; the pool's workers decide).

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
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process", concurrency_limit=concurrency,
                base_job_template=ProcessWorker.get_default_base_job_template()))
        else:
            client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=concurrency))
    deployments = [f.to_deployment(name=DEPLOYMENT_NAME, tags=["sipflow"],
                                   entrypoint_type=EntrypointType.MODULE_PATH)
                   for f in (process_scan, process_scans)]
    prefect_deploy(*deployments, work_pool_name=pool, build=False, push=False,
                   print_next_steps_message=False, ignore_warnings=True)
    return [SCAN_DEPLOYMENT, SCANS_DEPLOYMENT]


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
    # a scan waits for the worker's next look at the pool: every 2 s, not Prefect's 10 s
    base = {"PREFECT_WORKER_QUERY_SECONDS": "2"} | os.environ
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


def wait_for_run(flow_run_id: Any, timeout: float | None = None,
                 poll_s: float = 1.0) -> Any:
    """Wait until a flow run is final; return its state.

    Raises
    ------
    OrchestrationError
        When `timeout` seconds pass first.
    """
    import time

    from prefect.client.orchestration import get_client

    t0 = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run.state
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise OrchestrationError(f"flow run {run.name} ({flow_run_id}) is still "
                                         f"{run.state.name if run.state else 'pending'} "
                                         f"after {timeout:.0f} s")
            time.sleep(poll_s)


def run_scan_deployment(input_path: str | Path, output: str | Path, pipeline: str, *,
                        deployment: str = SCAN_DEPLOYMENT, key: str | None = None,
                        timeout: float | None = None, **parameters: Any) -> dict[str, Any]:
    """Run one scan through a deployment (on whatever worker takes it) and wait for it.

    Parameters
    ----------
    input_path, output, pipeline
        As for :func:`~sipflow.orchestration.process_scan`.
    deployment : str
        ``flow-name/deployment-name``.
    key : str, optional
        Idempotency key: a second call with the same key returns the first call's flow
        run instead of starting another (a restarted watcher waits for the run it had
        started).
    timeout : float, optional
        Seconds to wait for the run to finish (None: as long as it takes).
    **parameters
        Further flow parameters (``device``, ``seed``, ``dtype``, ...).

    Returns
    -------
    dict
        ``flow_run_id``, ``state`` (name) and, when it completed, the flow's result
        (``output``, ``metrics``, ...); ``error`` with the state's message otherwise.
    """
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={
        "input_path": str(input_path), "output": str(output), "pipeline": pipeline,
        **parameters}, timeout=0, idempotency_key=key)
    state = wait_for_run(run.id, timeout=timeout)
    row: dict[str, Any] = {"flow_run_id": str(run.id), "state": state.name}
    if state.is_completed():
        try:
            row |= dict(state.result())
        except Exception:  # result not persisted: the store is the result
            row |= {"output": str(output)}
    else:
        row["error"] = state.message or state.name
    return row


def _children_of(pid: int) -> list[int]:
    return _children_by_parent().get(pid, [])


def _adopt_orphans() -> bool:
    """Make this process the parent of orphans among its descendants (Linux).

    A worker that dies leaves its flow run running (Prefect starts it in a session of
    its own); adopted, the run still finishes its scan, and stopping ``serve`` stops it.
    """
    from ._server import prctl

    return sys.platform.startswith("linux") and prctl(36, 1) == 0  # PR_SET_CHILD_SUBREAPER


def _start_server(port: int, home: Path, log: Any) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on 127.0.0.1:`port` with its database in `home`."""
    import time

    from ._server import _healthy, startup_limit

    url = f"http://127.0.0.1:{port}/api"
    if _healthy(url):
        raise OrchestrationError(f"something already answers on 127.0.0.1:{port}; set "
                                 f"PREFECT_API_URL={url} to use that server, or choose "
                                 "another --port")
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


def serve(*, port: int = 4200, home: str | Path | None = None, pool: str = "sipflow",
          workers: int = 1, concurrency: int | None = None, gpu_slots: int = 1,
          cpu_slots: int | None = None, poll_s: float = 2.0,
          on_ready: Any = None, stop: Any = None) -> None:
    """A one-machine facility: Prefect server, work pool, deployments, workers; until stopped.

    1. Uses the server at ``PREFECT_API_URL`` when set, else starts ``prefect server
       start`` on 127.0.0.1:`port` (database and logs in `home`).
    2. Creates the process work pool `pool` and deploys both flows to it
       (:data:`SCAN_DEPLOYMENT`, :data:`SCANS_DEPLOYMENT`).
    3. Gives every CUDA card of this machine a limit of `gpu_slots` heavy stages at
       once (and the CPU `cpu_slots`, when given).
    4. Starts `workers` process workers, and starts again any that dies (the flow run
       a dead worker leaves behind finishes its scan, adopted by this process).

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
    with open(home / "sipflow-serve.log", "ab") as log, contextlib.ExitStack() as stack:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            server, url = _start_server(port, home, log)
            stack.callback(stop_worker, server)
        stack.enter_context(use_api(url))
        deployments = deploy(pool, concurrency=concurrency)
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
        running += [start_worker(pool, log=log) for _ in range(workers)]
        if on_ready is not None:
            on_ready({"api_url": url, "pool": pool, "deployments": deployments,
                      "limits": limits, "workers": [p.pid for p in running]})
        while stop is None or not stop():
            time.sleep(poll_s)
            if server is not None and server.poll() is not None:
                raise OrchestrationError(f"the Prefect server stopped (exit status "
                                         f"{server.returncode}); see {home}/sipflow-serve.log")
            for i, proc in enumerate(running):
                if proc.poll() is not None:  # a worker died: another takes its place
                    log.write(f"worker {proc.pid} exited with {proc.returncode}; "
                              "starting another\n".encode())
                    log.flush()
                    running[i] = start_worker(pool, log=log)
            if adopted:  # a dead worker's flow run finishes under this process: reap it
                ours = {p.pid for p in running} | ({server.pid} if server else set())
                for pid in set(_children_of(os.getpid())) - ours - before:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
