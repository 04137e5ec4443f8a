"""Orchestration adapter: sipflow pipelines as Prefect flows (the only Prefect import).

Importing this package imports Prefect (slow); ``import sipflow`` never does.
"""

from ._prefect import process_scan, process_scans, set_progress_sink

__all__ = ["process_scan", "process_scans", "set_progress_sink"]
