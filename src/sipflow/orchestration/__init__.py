"""Orchestration adapter: sipflow pipelines as Prefect flows (the only Prefect import).

Importing this package imports Prefect (slow); ``import sipflow`` never does.
"""

from ..errors import OrchestrationError
from ._deploy import deploy, serve
from ._events import EVENT_COMPLETED, EVENT_FAILED, emit_scan_event, scan_events
from ._limits import device_limit_name, set_device_limit
from ._logging import progress_to, quiet_user_errors, set_progress_sink
from ._prefect import dask_task_runner, process_scan, process_scans
from ._runs import SCAN_DEPLOYMENT, SCANS_DEPLOYMENT, run_scan_deployment, wait_for_run
from ._server import embedded_server, prefect_api, use_api
from ._workers import start_worker, stop_worker

__all__ = ["EVENT_COMPLETED", "EVENT_FAILED", "SCANS_DEPLOYMENT", "SCAN_DEPLOYMENT",
           "OrchestrationError", "dask_task_runner", "deploy", "device_limit_name",
           "embedded_server", "emit_scan_event", "prefect_api", "process_scan",
           "process_scans", "progress_to", "quiet_user_errors", "run_scan_deployment",
           "scan_events", "serve", "set_device_limit", "set_progress_sink", "start_worker",
           "stop_worker", "use_api", "wait_for_run"]
