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

from .contracts import Context, ProgressFn
from .contracts._stage import _no_progress
from .errors import PluginError, SipflowError
from .pipeline import Pipeline, Step

log = logging.getLogger("sipflow")


def stage_seed(seed: int, index: int) -> int:
    """Seed of the `index`-th stage of a run seeded with `seed` (stable, independent)."""
    return (seed * 1_000_003 + 7919 * (index + 1)) % (2**31)


def run_step(step: Step, ds: xr.Dataset, context: Context) -> tuple[xr.Dataset, dict[str, Any]]:
    """Run one validated step; return the new dataset and its provenance record."""
    from ._resources import cpu_threads

    t0 = time.perf_counter()
    name = step.stage.name
    try:
        if step.stage.heavy and context.device == "cpu":
            with cpu_threads() as threads:
                context.logger.debug("%s: %d CPU threads", name, threads)
                out = step.stage()(ds, step.params, context)
        else:
            out = step.stage()(ds, step.params, context)  # checks required variables, runs
    except SipflowError:
        raise
    except MemoryError as exc:
        from .errors import ResourceError

        raise ResourceError(f"stage {name!r} ran out of memory on {context.device} "
                            f"({exc or 'MemoryError'}); use fewer runs, crop or bin the data, "
                            "or another device") from exc
    except Exception as exc:
        module = getattr(step.stage, "__module__", "?")
        if module.startswith("sipflow."):
            raise
        raise PluginError(f"stage {name!r} (from {module}) failed with "
                          f"{type(exc).__name__}: {exc}. This is a fault in that plugin; report "
                          "it to its authors (--debug shows the traceback)") from exc
    if not isinstance(out, xr.Dataset):
        raise PluginError(f"stage {name!r} (from {step.stage.__module__}) returned "
                          f"{type(out).__name__}, expected an xarray.Dataset; the stage is "
                          "broken, report it to its authors")
    _check_finite_object(out, name, ds)
    record = step.spec() | {"seed": context.seed, "wall_s": round(time.perf_counter() - t0, 4)}
    return out, record


def _check_finite_object(out: xr.Dataset, name: str, before: xr.Dataset) -> None:
    """No stage may hand on (and no run save) an object with NaN or Inf as a success."""
    import numpy as np

    from . import schema
    from .errors import ReconstructionError

    if schema.OBJ not in out.data_vars or (schema.OBJ in before.data_vars
                                           and out[schema.OBJ] is before[schema.OBJ]):
        return
    values = np.asarray(out[schema.OBJ].values)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ReconstructionError(
            f"stage {name!r} produced an object with {bad} non-finite values (NaN or Inf) of "
            f"{values.size}: it diverged (or its model is damaged); nothing is saved as a "
            "result. Check the stage's parameters (a smaller step or learning rate) or its "
            "model file")


def base_provenance(pipeline: Pipeline, ds: xr.Dataset, device: str, seed: int,
                    engine: str) -> dict[str, Any]:
    """Provenance fields known before the stages run."""
    import numpy
    import torch

    from ._version import __version__

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


def preflight(pipeline: Pipeline | str | Path | dict, input_path: str | Path,
              output: str | Path | None = None, *, device: str | None = "auto",
              overwrite: bool = False, dtype: str = "float32", check_counts: bool = True,
              **load_options: Any) -> tuple[Pipeline, str, xr.Dataset]:
    """Check everything a run needs before any work (or any server) starts.

    The pipeline (stages, parameters, input options), the device, the output path
    (never the input, never a non-sipflow folder, not locked by another run), the
    input file (readable, frames found, declared size within memory), each stage's
    memory estimate against the device and, with `check_counts`, the counts
    (streamed: NaN, negative, no signal). In-process runs can leave the counts to
    the first stage, which raises the same error before any work; a run that hands
    the data to another process (an orchestration server) checks them here.

    Returns
    -------
    pipeline : Pipeline
    device : str
        The resolved torch device.
    ds : xarray.Dataset
        The input, read lazily.

    Raises
    ------
    SipflowError
        The same errors the run itself would raise, with the same messages.
    """
    from . import schema
    from ._resources import check_memory_estimate
    from .io import check_writable
    from .preprocess import precheck_counts

    pipe = Pipeline.load(pipeline)
    device = Context.resolve_device(device)
    path = Path(input_path)
    if output is not None:
        check_writable(output, overwrite=overwrite, inputs=(path,))
    ds = load_input(path, pipe, **load_options)
    shape = tuple(int(n) for n in ds[schema.INTENSITY].shape)
    itemsize = 8 if dtype == "float64" else 4
    for step in pipe.steps:
        step.stage.preflight(step.params, shape)
        need = step.stage.estimate_memory(step.params, shape, itemsize)
        if need:
            check_memory_estimate(step.stage.name, int(need), device)
    consumer = next((s for s in pipe.steps if schema.INTENSITY in s.stage.requires), None)
    if check_counts and consumer is not None:
        precheck_counts(ds, stage=consumer.stage.name,
                        allow_invalid=getattr(consumer.params, "on_invalid", "error") == "mask")
    return pipe, device, ds


def load_input(data: xr.Dataset | str | Path, pipeline: Pipeline,
               **load_options: Any) -> xr.Dataset:
    """`data` itself, or the file it names read with the pipeline's input options."""
    if isinstance(data, xr.Dataset):
        return data
    from .io import load

    return load(data, registry=pipeline.registry, **(pipeline.input | load_options))


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
                      progress=progress or _no_progress, dtype=dtype,
                      registry=pipeline.registry)
        ds, record = run_step(step, ds, ctx)
        provenance["stages"].append(record)
    provenance["wall_s"] = round(time.perf_counter() - t0, 4)
    ds = ds.copy()
    ds.attrs = dict(ds.attrs) | {"provenance": provenance}
    return ds


def run_into_store(pipeline: Pipeline | str | Path | dict, data: xr.Dataset | str | Path,
                   output: str | Path, *, overwrite: bool = False,
                   inputs: tuple[str | Path, ...] = (), cancelled: Any = None,
                   **options: Any) -> Path:
    """Run a pipeline in this process and write its result store, holding the output's lock.

    The one way a scan becomes a store in this process (``sipflow run --engine local``,
    ``sipflow batch``/``watch`` through it, the napari Run widget): the output is
    locked for the whole run (a second run onto it fails at once), and the store
    appears only complete.

    Parameters
    ----------
    pipeline, data
        As for :func:`run_pipeline`.
    output : path
        The Zarr store to write.
    overwrite : bool
        Replace an existing sipflow store.
    inputs : tuple of path
        Input files the output must not be (checked again when saving).
    cancelled : callable() -> bool, optional
        Checked after the run: True raises :class:`~sipflow.errors.Cancelled`, nothing
        is written.
    **options
        Passed to :func:`run_pipeline` (``device``, ``seed``, ``progress``, ``dtype``).
    """
    from .errors import Cancelled
    from .io import OutputLock, save

    with OutputLock(output):
        result = run_pipeline(pipeline, data, **options)
        if cancelled is not None and cancelled():
            raise Cancelled("run cancelled; nothing was written")
        return save(result, output, overwrite=overwrite, inputs=inputs)
