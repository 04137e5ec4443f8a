"""Orchestration adapter: sipflow pipelines as Prefect flows (the only Prefect import).

Importing this package imports Prefect (slow); ``import sipflow`` never does.
"""

from ..errors import OrchestrationError
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
from ._server import embedded_server, prefect_api

__all__ = ["EVENT_COMPLETED", "EVENT_FAILED", "OrchestrationError", "dask_task_runner",
           "embedded_server",
           "emit_scan_event", "prefect_api", "process_scan", "process_scans",
           "progress_to", "quiet_user_errors", "scan_events", "set_progress_sink"]
