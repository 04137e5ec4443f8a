"""Deployment entry points for the sipflow Prefect flows.

The flows themselves live in :mod:`sipflow.orchestration` (the adapter, installed
with the package, so the CLI and workers run the same code). This file serves
them for a Prefect server::

    prefect server start --host 127.0.0.1 &
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/process_scan.py          # serves both flows on this machine

or see ``prefect.yaml`` for work-pool deployments (GPU pool for heavy stages).
"""

from __future__ import annotations

from prefect import serve

from sipflow.orchestration import process_scan, process_scans

__all__ = ["process_scan", "process_scans"]

if __name__ == "__main__":
    serve(
        process_scan.to_deployment(name="sipflow-process-scan", tags=["sipflow"]),
        process_scans.to_deployment(name="sipflow-process-scans", tags=["sipflow"]),
    )
