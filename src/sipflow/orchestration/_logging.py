"""Where stage progress and user errors go under Prefect: a progress sink, quiet library logs."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable

from ..contracts import ProgressRecord
from ..errors import SipflowError

#: where progress records of stage tasks go besides the run logger: a context variable,
#: so each caller (and each concurrent flow run it starts) has its own
_progress_sink: contextvars.ContextVar[Callable[[ProgressRecord], None] | None] = \
    contextvars.ContextVar("sipflow_progress_sink", default=None)


@contextlib.contextmanager
def progress_to(fn: Callable[[ProgressRecord], None] | None):
    """Inside the block, stage tasks run in this process send progress records to `fn`.

    Tasks run by Prefect's thread pool inherit the caller's context; tasks on other
    processes (Dask workers, deployments) report through their run logs only.
    """
    token = _progress_sink.set(fn)
    try:
        yield
    finally:
        _progress_sink.reset(token)


def set_progress_sink(fn: Callable[[ProgressRecord], None] | None) -> None:
    """Deprecated form of :func:`progress_to` (sets the sink in the current context)."""
    _progress_sink.set(fn)


class _UserErrorFilter(logging.Filter):
    """Keep Prefect's failure records of sipflow's user errors to one line, or drop them.

    A :class:`~sipflow.errors.SipflowError` is a message for the user, not a bug: its
    traceback (tens of lines per task and flow) only hides the paragraph that says
    what to fix.
    """

    def __init__(self, drop: bool) -> None:
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SipflowError):
            if self.drop:
                return False
            record.exc_info = None
            record.exc_text = None
        return True


_LIBRARY_FILTER = _UserErrorFilter(drop=False)


for _name in ("prefect.flow_runs", "prefect.task_runs"):
    logging.getLogger(_name).addFilter(_LIBRARY_FILTER)


@contextlib.contextmanager
def quiet_user_errors():
    """Inside the block, Prefect logs nothing about runs that failed with a user error.

    The CLI uses it: it prints the error's paragraph itself, the same under every engine.
    """
    f = _UserErrorFilter(drop=True)
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for lg in loggers:
        lg.addFilter(f)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(f)


def _progress(logger: logging.Logger | logging.LoggerAdapter) -> Callable[[ProgressRecord], None]:
    sink = _progress_sink.get()

    def report(record: ProgressRecord) -> None:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in record.metrics.items())
        logger.info("%s: iteration %d/%d %s", record.stage, record.iteration, record.total,
                    metrics)
        if sink is not None:
            sink(record)

    return report
