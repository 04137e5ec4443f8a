"""Orchestration adapter: sipflow pipelines as Prefect flows (the only Prefect import).

Importing this package imports Prefect (slow); ``import sipflow`` never does.
"""

from ..errors import OrchestrationError
from ._prefect import process_scan, process_scans, quiet_user_errors, set_progress_sink
from ._server import embedded_server, prefect_api

__all__ = ["OrchestrationError", "embedded_server", "prefect_api", "process_scan",
           "process_scans", "quiet_user_errors", "set_progress_sink"]
