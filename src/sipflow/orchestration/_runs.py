"""Running a scan through a deployment (on whatever worker takes it) and waiting for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import OrchestrationError

#: name of the deployments ``sipflow serve`` creates (one per flow)
DEPLOYMENT_NAME = "sipflow"


#: the one-scan deployment, as ``run_deployment`` and ``sipflow watch --deployment`` name it
SCAN_DEPLOYMENT = f"sipflow-process-scan/{DEPLOYMENT_NAME}"


#: the many-scans deployment
SCANS_DEPLOYMENT = f"sipflow-process-scans/{DEPLOYMENT_NAME}"


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
