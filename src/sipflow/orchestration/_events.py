"""Prefect events of finished scans (sipflow.scan.completed / failed), and reading them back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

#: names of the events a finished scan emits (automations can trigger on them)
EVENT_COMPLETED = "sipflow.scan.completed"


EVENT_FAILED = "sipflow.scan.failed"


def _numbers(values: dict[str, Any]) -> dict[str, float | int]:
    return {k: v for k, v in values.items() if isinstance(v, int | float)
            and not isinstance(v, bool)}


def emit_scan_event(input_path: str, output: str, status: str, *,
                    metrics: dict[str, Any] | None = None, reason: str = "",
                    seed: int | None = None) -> None:
    """Tell Prefect (and the facility's automations) that a scan is finished.

    Event ``sipflow.scan.completed`` or ``sipflow.scan.failed``; resource
    ``sipflow.scan.<input stem>`` with the input path; payload: result path, status,
    the numeric figures of merit, the seed and, on failure, the reason. Never raises:
    an event that cannot be sent must not fail the scan.
    """
    from prefect.events import emit_event

    try:
        emit_event(event=EVENT_COMPLETED if status == "completed" else EVENT_FAILED,
                   resource={"prefect.resource.id": f"sipflow.scan.{Path(input_path).stem}",
                             "prefect.resource.name": Path(input_path).name,
                             "sipflow.input": str(input_path)},
                   payload={"input": str(input_path), "output": str(output),
                            "status": status, "metrics": _numbers(metrics or {}),
                            "seed": seed, "reason": reason})
    except Exception:  # pragma: no cover - the events client logs its own failures
        logging.getLogger("sipflow").debug("could not emit the scan event", exc_info=True)


def scan_events(limit: int = 50) -> list[dict[str, Any]]:
    """The latest scan events the current Prefect API holds, newest first.

    Each is ``{"event", "occurred", "resource", "payload"}`` (plain values), as an
    automation or a facility dashboard sees them. Events are written by the server
    shortly after they are sent.

    Parameters
    ----------
    limit : int
        At most this many (the API pages by 50 at most).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(
            name=[EVENT_COMPLETED, EVENT_FAILED])), limit=min(int(limit), 50))
    return [{"event": e.event, "occurred": e.occurred.isoformat(),
             "resource": dict(e.resource), "payload": dict(e.payload)} for e in page.events]
