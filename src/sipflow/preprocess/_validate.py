"""The checks of :func:`sipflow.physics.checked_counts`, streamed over lazy frames before a run."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import schema
from ..physics import checked_counts


def precheck_counts(ds: xr.Dataset, *, stage: str, allow_invalid: bool = False) -> None:
    """The errors of :func:`checked_counts`, streamed over the (lazy) frames before a run.

    Reads the frames chunk by chunk (bounded memory) and raises the same
    :class:`~sipflow.errors.DataError` the stage would raise, so that a bad input
    fails before any work (or any orchestration server) starts. Empty frames are
    left to the stage, which warns about them.

    Parameters
    ----------
    ds : xarray.Dataset
        As returned by :func:`sipflow.load` (``intensity`` may be a dask array).
    stage : str
        The stage that will consume the counts, for messages.
    allow_invalid : bool
        That stage masks NaN/negative counts instead of failing (``on_invalid: mask``).
    """
    import dask.array as da

    var = ds[schema.INTENSITY]
    if var.ndim not in (2, 3):
        checked_counts(ds, stage=stage)  # raises the dimension error
    data = var.data if isinstance(var.data, da.Array) else da.from_array(np.asarray(var.data))
    mask = None
    if schema.MASK in ds:
        m = np.asarray(ds[schema.MASK].values).astype(bool)
        if m.shape != tuple(var.shape[-m.ndim:]) or m.ndim < 2:
            checked_counts(ds, stage=stage)  # raises the mask-shape error
        mask = m
    bad = ~da.isfinite(data) | (data < 0) if not allow_invalid else None
    valid = mask if mask is not None else True
    checks = [da.any((data > 0) & valid)]
    if bad is not None:
        checks.append(da.any(bad & valid))
    results = da.compute(*checks)
    has_signal = bool(results[0])
    has_bad = bool(results[1]) if bad is not None else False
    if has_bad or not has_signal:
        checked_counts(ds.load(), stage=stage)  # raises the stage's own message


