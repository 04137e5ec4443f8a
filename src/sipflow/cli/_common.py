"""What the commands share: messages, the Prefect set-up, progress bars, one scan run, figures."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _prefect_env() -> None:
    import warnings

    # No telemetry from beamline machines; an offline host otherwise logs DNS errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # an unwritable Prefect home is reported as one paragraph by the server start
    warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")


class _Bar:
    """A rich progress bar fed with ProgressRecords (one task per stage)."""

    def __init__(self, enabled: bool) -> None:
        self.wanted = enabled  # False: silent (e.g. a scan of a batch, which has its own lines)
        self.enabled = enabled and sys.stderr.isatty()
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("{task.fields[metrics]}"),
                                     TimeRemainingColumn(), transient=False)
            self.progress.__enter__()
        return self

    def __call__(self, record) -> None:
        metrics = " ".join(f"{k}={v:.3g}" for k, v in record.metrics.items())
        if self.progress is None:
            if self.wanted and record.iteration == record.total:
                _stderr(f"{record.stage}: {record.iteration}/{record.total} {metrics}")
            return
        if record.stage not in self.tasks:
            self.tasks[record.stage] = self.progress.add_task(record.stage, total=record.total,
                                                              metrics="")
        self.progress.update(self.tasks[record.stage], completed=record.iteration,
                             metrics=metrics)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def _run(pipeline: str, input_path: str, output: str, *, engine: str, device: str,
         seed: int | None, overwrite: bool, dtype: str, load_options: dict[str, Any],
         progress: bool = True, time_limit: float | None = None) -> Path:
    """Check everything, lock the output, run under `engine`, return the store's path.

    Every check that needs no computation (pipeline, device, output, the input's
    structure, size and counts, memory estimates) runs before any work and before
    an orchestration server starts, so a bad input fails the same way under every
    engine and leaves nothing behind.
    """
    from .._api import preflight
    from ..io import OutputLock

    requested = device  # resolved again where each stage runs (a worker's own card)
    chosen: Any = pipeline
    if time_limit is not None:  # max_seconds on every stage that takes a time budget
        from ..pipeline import Pipeline

        chosen = Pipeline.load(pipeline).with_time_limit(time_limit)
    pipe, device, ds = preflight(chosen, input_path, output, device=device,
                                 overwrite=overwrite, dtype=dtype,
                                 check_counts=engine != "local", **load_options)
    if engine == "local":
        from .._api import run_into_store

        with _Bar(progress) as bar:
            return run_into_store(pipe, ds, output, overwrite=overwrite, inputs=(input_path,),
                                  device=device, seed=seed, progress=bar, dtype=dtype)
    with OutputLock(output), _Bar(progress) as bar:
        _prefect_env()
        from ..orchestration import prefect_api, process_scan, progress_to, quiet_user_errors

        with prefect_api(), quiet_user_errors(), progress_to(bar):
            result = process_scan(str(input_path), pipe.text, str(output), device=requested,
                                  seed=seed, dtype=dtype, overwrite=overwrite,
                                  load_options=load_options)
        return Path(result["output"])


def _figures(out: Path) -> tuple[float, float]:
    """(free LLK of the selected run, error against the truth) of a result store, NaN if absent.

    Read from the :class:`~sipflow.contracts.PhaseRecord` every phase stage writes.
    """
    from ..contracts import PhaseRecord
    from ..io import open_result

    ds = open_result(out)
    record = PhaseRecord.from_attrs(ds.attrs)
    free = record.best_llk_free if record is not None else None
    error = ds.attrs.get("metrics", {}).get("error")
    return (float("nan") if free is None else float(free),
            float("nan") if error is None else float(error))


def _json_default(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def input_options(args: Any) -> dict[str, Any]:
    """The reader options given on the command line (``--dataset``, ``--scan``, ...)."""
    out = {"dataset": getattr(args, "dataset", None), "scan": getattr(args, "scan", None),
           "frames": getattr(args, "frames", None), "beamline": getattr(args, "beamline", None)}
    return {k: v for k, v in out.items() if v is not None}
