"""Checks on detector counts, shared by every stage that consumes intensity."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .. import schema
from ..errors import DataError


def _where(bad: np.ndarray, limit: int = 3) -> str:
    idx = np.argwhere(bad)[:limit]
    return ", ".join(str(tuple(int(v) for v in row)) for row in idx)


def checked_counts(ds: xr.Dataset, *, stage: str, on_invalid: str = "error"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Intensity as float32 and the full-shape validity mask, after checking them.

    Parameters
    ----------
    ds : xarray.Dataset
        Has ``intensity`` (2-D or 3-D) and optionally ``mask``.
    stage : str
        Name of the calling stage, for messages.
    on_invalid : {"error", "mask"}
        What to do with NaN, Inf or negative counts on valid pixels: raise, or
        mask them (their number is logged by the caller via the returned mask).

    Returns
    -------
    intensity : ndarray, float32, detector shape
    mask : ndarray, bool, detector shape (True = valid)

    Raises
    ------
    DataError
        For 1-D/4-D data, a mask of the wrong shape, invalid counts (with how
        many and where), or no positive count on any valid pixel.
    """
    source = ds.attrs.get("source", "input dataset")
    var = ds[schema.INTENSITY]
    if var.ndim not in (2, 3):
        raise DataError(f"{source}: intensity has shape {var.shape} ({var.ndim}-D); "
                        f"stage {stage!r} expects 2-D (rows, cols) or 3-D (frames, rows, cols)")
    raw = np.asarray(var.values)
    mask = np.ones(raw.shape, dtype=bool)
    if schema.MASK in ds:
        m = np.asarray(ds[schema.MASK].values).astype(bool)
        if m.shape != raw.shape[-m.ndim:] or m.ndim < 2:
            raise DataError(f"{source}: mask has shape {m.shape}; expected the detector shape "
                            f"{raw.shape[-2:]} or the intensity shape {raw.shape}")
        mask &= np.broadcast_to(m, raw.shape)
    if np.issubdtype(raw.dtype, np.integer):
        # Eiger and friends flag saturated / dead pixels with the largest value of the dtype.
        flagged = raw == np.iinfo(raw.dtype).max
        mask &= ~flagged
    counts = raw.astype(np.float32)
    nonfinite = ~np.isfinite(counts) & mask
    negative = (counts < 0) & mask
    for bad, what in ((nonfinite, "NaN or Inf"), (negative, "negative")):
        n = int(bad.sum())
        if n and on_invalid == "error":
            raise DataError(
                f"{source}: intensity has {n} {what} count(s) on valid pixels, e.g. at "
                f"{_where(bad)} (index order {var.dims}). Fix the data, add these pixels to the "
                f"mask, or set on_invalid: mask in {stage!r}.")
        mask &= ~bad
    counts[~mask] = 0
    if not np.any(counts[mask] > 0):
        raise DataError(f"{source}: intensity is zero on every valid pixel "
                        f"({int(mask.sum())} of {mask.size}); nothing to reconstruct")
    return counts, mask
