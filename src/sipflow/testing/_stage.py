"""The stage contract check (:func:`assert_stage_contract`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..contracts import Context, Stage, StageParams
from ._datasets import simulated_dataset


def _strip_timing(ds: xr.Dataset) -> xr.Dataset:
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k != "provenance"}
    return out


def assert_outputs(stage: type[Stage], out: xr.Dataset, ndim: int) -> None:
    """Check the variables `stage` declares in ``produces`` against :mod:`sipflow.schema`.

    ``obj`` is complex with the real-space dimensions of `ndim` and no ``run``
    dimension, ``support`` boolean on the same dimensions, ``obj_runs`` /
    ``support_runs`` have ``run`` first, ``llk`` / ``llk_free`` are (run, iter).
    """
    rdims = schema.real_dims(ndim)
    for name in stage.produces:
        assert name in out, f"{stage.name}: declares {name!r} in produces but did not make it"
    checks = {
        schema.OBJ: (rdims, "c"), schema.SUPPORT: (rdims, "b"),
        schema.OBJ_RUNS: ((schema.RUN, *rdims), "c"),
        schema.SUPPORT_RUNS: ((schema.RUN, *rdims), "b"),
        schema.LLK: ((schema.RUN, schema.ITER), "f"),
        schema.LLK_FREE: ((schema.RUN, schema.ITER), "f"),
        schema.LOSS: ((schema.RUN, schema.ITER), "f"),
        schema.ES_VARIANCE: ((schema.RUN, schema.ITER), "f"),
    }
    for name, (dims, kind) in checks.items():
        if name in stage.produces:
            var = out[name]
            assert var.dims == dims, f"{stage.name}: {name} has dims {var.dims}, expected {dims}"
            assert var.dtype.kind == kind, f"{stage.name}: {name} has dtype {var.dtype}"
            if kind in "cf":
                assert np.isfinite(np.asarray(var.values)).any(), f"{stage.name}: {name} is NaN"
    if schema.OBJ in out:
        assert schema.RUN not in out[schema.OBJ].dims, f"{stage.name}: obj has a run dimension"


def assert_params_contract(owner: str, model: type[StageParams],
                           values: dict[str, Any] | None = None) -> StageParams:
    """Check a parameter model: a :class:`~sipflow.StageParams` whose every field has a
    default and a description; `values` (default: the defaults) round-trip through JSON.

    Returns the validated parameters.
    """
    assert isinstance(model, type) and issubclass(model, StageParams), (
        f"{owner}: Params must be StageParams")
    for fname, field in model.model_fields.items():
        assert not field.is_required(), f"{owner}: parameter {fname!r} has no default"
        assert field.description, f"{owner}: parameter {fname!r} has no description"
    p = model(**(values or {}))
    assert model.model_validate_json(p.model_dump_json()) == p, (
        f"{owner}: parameters do not round-trip through JSON")
    return p


def assert_stage_contract(stage: type[Stage], ds: xr.Dataset | None = None,
                          params: dict[str, Any] | None = None) -> xr.Dataset:
    """Check that `stage` honours the stage contract (docs/design.md, README); return its output.

    Checks: a ``kind.method`` name and a version; a ``StageParams`` model whose
    every field has a default and a description and which round-trips through
    JSON; ``run`` returns a new Dataset, leaves its input untouched, gives
    ``obj`` no ``run`` dimension, and is deterministic for a fixed seed on CPU.

    Parameters
    ----------
    stage : Stage subclass
    ds : xarray.Dataset, optional
        Input; default a 32x32 simulated dataset (with ``obj`` when the stage needs it).
    params : dict, optional
        Parameters for the run (default: all defaults).
    """
    assert isinstance(stage, type) and issubclass(stage, Stage), f"{stage!r} is not a Stage"
    assert stage.name and "." in stage.name, f"stage name {stage.name!r} is not 'kind.method'"
    assert stage.name == stage.name.strip().lower(), f"stage name {stage.name!r} not lowercase"
    assert isinstance(stage.version, str) and stage.version, f"{stage.name}: no version"
    p = assert_params_contract(stage.name, stage.Params, params)
    if ds is None:
        ds = simulated_dataset(with_obj=schema.OBJ in stage.requires)
    before = ds.copy(deep=True)
    ctx = Context(device="cpu", seed=1234)
    out = stage()(ds, p, ctx)
    assert isinstance(out, xr.Dataset), f"{stage.name}: run returned {type(out).__name__}"
    assert out is not ds, f"{stage.name}: run must return a new Dataset"
    xr.testing.assert_identical(ds, before)
    assert_outputs(stage, out, 2 if ds[schema.INTENSITY].ndim == 2 else 3)
    second = stage()(ds, p, Context(device="cpu", seed=1234))
    xr.testing.assert_identical(_strip_timing(out), _strip_timing(second))
    return out
