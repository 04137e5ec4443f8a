"""Orchestration adapter: sipflow pipelines as Prefect flows (the only Prefect import).

Importing this package imports Prefect (slow); ``import sipflow`` never does.
"""

from ..errors import OrchestrationError
from ._deploy import (
    SCAN_DEPLOYMENT,
    SCANS_DEPLOYMENT,
    deploy,
    device_limit_name,
    run_scan_deployment,
    serve,
    set_device_limit,
    start_worker,
    stop_worker,
    wait_for_run,
)
from ._prefect import (
    EVENT_COMPLETED,
    EVENT_FAILED,
    dask_task_runner,
    emit_scan_event,
    process_scan,
    process_scans,
    progress_to,
    quiet_user_errors,
    scan_events,
    set_progress_sink,
)
from ._server import embedded_server, prefect_api, use_api

__all__ = ["EVENT_COMPLETED", "EVENT_FAILED", "SCANS_DEPLOYMENT", "SCAN_DEPLOYMENT",
           "OrchestrationError", "dask_task_runner", "deploy", "device_limit_name",
           "embedded_server", "emit_scan_event", "prefect_api", "process_scan",
           "process_scans", "progress_to", "quiet_user_errors", "run_scan_deployment",
           "scan_events", "serve", "set_device_limit", "set_progress_sink", "start_worker",
           "stop_worker", "use_api", "wait_for_run"]
