"""Checks on detector counts, shared by every stage that consumes intensity."""

from __future__ import annotations

import logging

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
    warn_zero_frames(counts, source)
    if not np.any(counts[mask] > 0):
        raise DataError(f"{source}: intensity is zero on every valid pixel "
                        f"({int(mask.sum())} of {mask.size}); nothing to reconstruct")
    return counts, mask


def warn_zero_frames(counts: np.ndarray, source: str) -> list[int]:
    """Log a warning naming the frames of a 3-D stack that are zero everywhere.

    Returns
    -------
    list of int
        Indices of the empty frames.
    """
    if counts.ndim != 3:
        return []
    empty = [int(k) for k in np.nonzero(~np.any(counts != 0, axis=(1, 2)))[0]]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        logging.getLogger("sipflow").warning(
            "%s: %d of %d frames of intensity are zero everywhere (frame %s); a detector "
            "or shutter fault? They are used as measured zeros.", source, len(empty),
            counts.shape[0], shown)
    return empty


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


def measurement_coherence(ds: xr.Dataset, shape: tuple[int, ...]):
    """The partial-coherence model an earlier stage estimated for these data, or None.

    ``phase.classic`` with ``psf`` in its schedule stores the kernel as
    ``coherence_kernel`` (centred, detector dims); the deep priors and refinement
    then fit the same blurred model ``K ⊛ |F x|^2`` (``FarField(coherence=...)``).
    """
    import torch

    from ..physics import kernel_coherence

    if schema.COHERENCE_KERNEL not in ds or ds[schema.COHERENCE_KERNEL].shape != tuple(shape):
        return None
    kernel = torch.as_tensor(np.asarray(ds[schema.COHERENCE_KERNEL].values, np.float64))
    return kernel_coherence(torch.fft.ifftshift(kernel))
