"""The in-process API: load, run_pipeline, save, open_result."""

from __future__ import annotations

import logging
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr

from .pipeline import Pipeline, Step
from .stage import Context, ProgressFn, _no_progress

log = logging.getLogger("sipflow")


def stage_seed(seed: int, index: int) -> int:
    """Seed of the `index`-th stage of a run seeded with `seed` (stable, independent)."""
    return (seed * 1_000_003 + 7919 * (index + 1)) % (2**31)


def run_step(step: Step, ds: xr.Dataset, context: Context) -> tuple[xr.Dataset, dict[str, Any]]:
    """Run one validated step; return the new dataset and its provenance record."""
    t0 = time.perf_counter()
    out = step.stage()(ds, step.params, context)  # checks required variables, then runs
    record = step.spec() | {"seed": context.seed, "wall_s": round(time.perf_counter() - t0, 4)}
    return out, record


def base_provenance(pipeline: Pipeline, ds: xr.Dataset, device: str, seed: int,
                    engine: str) -> dict[str, Any]:
    """Provenance fields known before the stages run."""
    import numpy
    import torch

    from . import __version__

    return {
        "sipflow_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "device": device,
        "seed": seed,
        "engine": engine,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "pipeline": {"name": pipeline.name, "origin": pipeline.origin, "text": pipeline.text},
        "input": {"path": ds.attrs.get("source"), "sha256": ds.attrs.get("source_sha256"),
                  "dataset": ds.attrs.get("source_dataset")},
        "stages": [],
    }


def load_input(data: xr.Dataset | str | Path, pipeline: Pipeline,
               **load_options: Any) -> xr.Dataset:
    """`data` itself, or the file it names read with the pipeline's input options."""
    if isinstance(data, xr.Dataset):
        return data
    from .io import load

    return load(data, **(pipeline.input | load_options))


def run_pipeline(pipeline: Pipeline | str | Path | dict, data: xr.Dataset | str | Path, *,
                 device: str | None = "auto", seed: int | None = None,
                 progress: ProgressFn | None = None, dtype: str = "float32",
                 **load_options: Any) -> xr.Dataset:
    """Run a pipeline in this process (no Prefect) and return the result dataset.

    Parameters
    ----------
    pipeline : Pipeline, str, Path or dict
        A template name (``default``, ``cdi``, ``bcdi``), a YAML file, YAML text or a dict.
        Validated completely before any data is read.
    data : xarray.Dataset, str or Path
        A dataset (e.g. from :func:`sipflow.load`, or built by hand) or an input file.
    device : str, optional
        torch device; ``"auto"`` picks CUDA when available.
    seed : int, optional
        Random seed; drawn (and recorded in provenance) when None.
    progress : callable, optional
        Receives :class:`~sipflow.ProgressRecord` objects from long stages.
    dtype : {"float32", "float64"}
        Precision of the science code.
    **load_options
        Reader options when `data` is a path (e.g. ``dataset="/entry/data/data"``).

    Returns
    -------
    xarray.Dataset
        The last stage's output, with ``attrs["provenance"]``.
    """
    pipeline = Pipeline.load(pipeline)
    device = Context.resolve_device(device)
    seed = Context.new_seed() if seed is None else int(seed)
    ds = load_input(data, pipeline, **load_options)
    provenance = base_provenance(pipeline, ds, device, seed, engine="local")
    t0 = time.perf_counter()
    for index, step in enumerate(pipeline.steps):
        ctx = Context(device=device, seed=stage_seed(seed, index), logger=log,
                      progress=progress or _no_progress, dtype=dtype)
        ds, record = run_step(step, ds, ctx)
        provenance["stages"].append(record)
    provenance["wall_s"] = round(time.perf_counter() - t0, 4)
    ds = ds.copy()
    ds.attrs = dict(ds.attrs) | {"provenance": provenance}
    return ds
