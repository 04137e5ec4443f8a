"""Running a scan through a deployment (on whatever worker takes it) and waiting for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import OrchestrationError, OrchestrationUnavailable

#: name of the deployments ``sipflow serve`` creates (one per flow)
DEPLOYMENT_NAME = "sipflow"


#: the one-scan deployment, as ``run_deployment`` and ``sipflow watch --deployment`` name it
SCAN_DEPLOYMENT = f"sipflow-process-scan/{DEPLOYMENT_NAME}"


#: the many-scans deployment
SCANS_DEPLOYMENT = f"sipflow-process-scans/{DEPLOYMENT_NAME}"


#: seconds between heartbeats of the flow runs of sipflow's deployments (Prefect's least;
#: its default is 180)
HEARTBEAT_S = 30

#: the environment variable that sets a flow run's heartbeat interval
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"

#: how the message of a flow run that :func:`crash_if_lost` marked Crashed begins
LOST = "lost:"

#: heartbeats a running flow run may miss before it counts as lost (its process gone)
MISSED_HEARTBEATS = 3


def api_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the Prefect API did not answer (a connection refused or cut, a
    timeout, a 5xx answer): an outage of the orchestration, not a fault of the scan."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, OrchestrationUnavailable | httpx.TransportError | ConnectionError):
        return True
    return isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code >= 500


def _heartbeats(client: Any, run: Any) -> list[float]:
    """POSIX times of the last two heartbeat events of flow run `run`, latest first."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"])), limit=2)
    return sorted((e.occurred.timestamp() for e in page.events), reverse=True)


def heartbeat_interval(client: Any, run: Any, beats: list[float] | None = None) -> float:
    """Seconds between the heartbeats of flow run `run`: as its job variables or its
    deployment's set them (``sipflow serve``'s: :data:`HEARTBEAT_S`), else as its last
    two heartbeats were apart, else Prefect's setting (180 s by default)."""
    from prefect.settings import get_current_settings

    envs = [(run.job_variables or {}).get("env") or {}]
    if run.deployment_id is not None:
        try:
            deployment = client.read_deployment(run.deployment_id)
            envs.append((deployment.job_variables or {}).get("env") or {})
        except Exception:  # a deleted deployment: the beats say it
            pass
    for env in envs:
        try:
            return max(float(env[HEARTBEAT_ENV]), float(HEARTBEAT_S))
        except (KeyError, TypeError, ValueError):
            continue
    beats = _heartbeats(client, run) if beats is None else beats
    if len(beats) == 2 and beats[0] - beats[1] > 1:
        return max(beats[0] - beats[1], float(HEARTBEAT_S))
    return float(get_current_settings().flows.heartbeat_frequency or 180)


def crash_if_lost(client: Any, run: Any, *, since: float, stale_s: float | None = None
                  ) -> Any:
    """Mark flow run `run` Crashed when, Running or Pending (handed to a worker), it has
    sent no heartbeat and changed no state for `stale_s` seconds of an answering API
    (counted from `since`, POSIX time: after an outage a live run has `stale_s` to be
    heard again); return the new state, or None while it lives.

    `stale_s` defaults to :data:`MISSED_HEARTBEATS` of the run's own heartbeat interval
    (:func:`heartbeat_interval`: 90 s for the runs of ``sipflow serve``'s deployments), so
    that a live run of another deployment, which beats less often, is never taken for lost.

    A run whose worker and process died together (a killed ``sipflow serve``, a lost
    machine) stays Running or Pending on the server forever otherwise, and whoever waits
    on it too. A Scheduled run waits for a worker and is left alone.
    """
    import time

    from prefect.states import Crashed

    if run.state is None or not (run.state.is_running() or run.state.is_pending()):
        return None
    beats = _heartbeats(client, run)
    times = [t.timestamp() for t in (run.state.timestamp, run.start_time) if t is not None]
    quiet = time.time() - max([*times, *beats[:1], since])
    if stale_s is None:
        stale_s = MISSED_HEARTBEATS * heartbeat_interval(client, run, beats)
    if quiet <= stale_s:
        return None
    state = Crashed(message=f"{LOST} no heartbeat for {quiet:.0f} s (its worker or machine "
                    "stopped while it ran); marked crashed by sipflow so that the scan can "
                    "be run again")
    client.set_flow_run_state(run.id, state, force=True)
    return client.read_flow_run(run.id).state


def crash_lost_runs(pool: str, *, since: float, stale_s: float | None = None) -> list[str]:
    """Mark Crashed every Running or Pending flow run of work pool `pool` that lost its worker (see
    :func:`crash_if_lost`); return their names. ``sipflow serve`` calls it now and then,
    so that a run its killed predecessor left behind does not stay Running forever."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        return [run.name for run in runs
                if crash_if_lost(client, run, since=since, stale_s=stale_s) is not None]


def wait_for_run(flow_run_id: Any, timeout: float | None = None, poll_s: float = 1.0, *,
                 stale_s: float | None = None, outage_s: float = 60.0) -> Any:
    """Wait until a flow run is final; return its state (asked every 0.2 s at first,
    every `poll_s` seconds after 16 s).

    A run that stops sending heartbeats while Running (its process gone with its worker)
    is marked Crashed after `stale_s` seconds (default: three of its heartbeats, see
    :func:`crash_if_lost`) and that state returned; an API that stops answering is
    waited for up to `outage_s` seconds.

    Raises
    ------
    OrchestrationError
        When `timeout` seconds pass first.
    OrchestrationUnavailable
        When the API does not answer for `outage_s` seconds (the run may go on).
    """
    import time

    from prefect.client.orchestration import get_client

    t0 = time.monotonic()
    answered, since, checked = time.monotonic(), time.time(), 0.0
    with get_client(sync_client=True) as client:
        while True:
            try:
                run = client.read_flow_run(flow_run_id)
                if time.monotonic() - answered > 2 * poll_s + 5:  # back after an outage:
                    since = time.time()  # the run has stale_s from now to be heard again
                answered = time.monotonic()
                if run.state is not None and run.state.is_final():
                    return run.state
                if time.monotonic() - checked > min(10.0, (stale_s or 30.0) / 3):
                    checked = time.monotonic()
                    crashed = crash_if_lost(client, run, since=since, stale_s=stale_s)
                    if crashed is not None:
                        return crashed
            except Exception as exc:
                if not api_unavailable(exc):
                    raise
                if time.monotonic() - answered > outage_s:
                    raise OrchestrationUnavailable(
                        f"the Prefect API has not answered for {outage_s:.0f} s while "
                        f"waiting for flow run {flow_run_id} ({type(exc).__name__}: "
                        f"{exc}); the run may go on without it") from exc
                time.sleep(poll_s)
                continue
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise OrchestrationError(f"flow run {run.name} ({flow_run_id}) is still "
                                         f"{run.state.name if run.state else 'pending'} "
                                         f"after {timeout:.0f} s")
            # often at first (a short scan ends within seconds), then every poll_s
            time.sleep(min(poll_s, 0.2 + 0.05 * (time.monotonic() - t0)))


def run_scan_deployment(input_path: str | Path, output: str | Path, pipeline: str, *,
                        deployment: str = SCAN_DEPLOYMENT, key: str | None = None,
                        timeout: float | None = None, stale_s: float | None = None,
                        **parameters: Any) -> dict[str, Any]:
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
    stale_s : float, optional
        Seconds without a heartbeat after which the run counts as lost (default: three
        of its heartbeats, see :func:`crash_if_lost`).
    **parameters
        Further flow parameters (``device``, ``seed``, ``dtype``, ...).

    Returns
    -------
    dict
        ``flow_run_id``, ``state`` (name) and, when it completed, the flow's result
        (``output``, ``metrics``, ...); ``error`` with the state's message otherwise, and
        ``lost: True`` when the run lost its worker (see :func:`crash_if_lost`).

    Raises
    ------
    OrchestrationUnavailable
        When the Prefect API stops answering (see :func:`wait_for_run`).
    """
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={
        "input_path": str(input_path), "output": str(output), "pipeline": pipeline,
        **parameters}, timeout=0, idempotency_key=key)
    state = wait_for_run(run.id, timeout=timeout, stale_s=stale_s)
    row: dict[str, Any] = {"flow_run_id": str(run.id), "state": state.name}
    if state.is_completed():
        try:
            row |= dict(state.result())
        except Exception:  # result not persisted: the store is the result
            row |= {"output": str(output)}
    else:
        row["error"] = state.message or state.name
        row["lost"] = state.is_crashed() and row["error"].startswith(LOST)
    return row
