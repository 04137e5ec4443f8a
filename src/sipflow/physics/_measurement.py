"""One scan's measurement, built once: counts, mask, held-out pixels, coherence.

Every phase, refinement and learned stage takes its data from a :class:`Measurement`
(:meth:`Measurement.from_dataset` checks the counts and reads the mask, the free
pixels and the coherence model an earlier stage stored), so the rules for invalid
counts, the held-out (free) pixels and the likelihoods are written once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import xarray as xr

from .. import schema
from ..errors import DataError
from ._likelihood import free_llk, normalised_llk
from ._model import Coherence, FarField


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


def measurement_coherence(ds: xr.Dataset, shape: tuple[int, ...]):
    """The partial-coherence model an earlier stage estimated for these data, or None.

    ``phase.classic`` with ``psf`` in its schedule stores the kernel as
    ``coherence_kernel`` (centred, detector dims); the deep priors and refinement
    then fit the same blurred model ``K ⊛ |F x|^2`` (``FarField(coherence=...)``).
    """
    from ._coherence import kernel_coherence

    if schema.COHERENCE_KERNEL not in ds or ds[schema.COHERENCE_KERNEL].shape != tuple(shape):
        return None
    kernel = torch.as_tensor(np.asarray(ds[schema.COHERENCE_KERNEL].values, np.float64))
    return kernel_coherence(torch.fft.ifftshift(kernel))


def free_pixel_mask(mask: torch.Tensor, fraction: float, radius: float, generator: torch.Generator,
                    min_q: float = 0.1, clearance: float = 3.0) -> torch.Tensor:
    """Pixels held out for the free log-likelihood: small islands away from the centre.

    Parameters
    ----------
    mask : torch.Tensor, bool, (*spatial), centred
        Valid pixels.
    fraction : float
        Target share of valid pixels to hold out (e.g. 0.05).
    radius : float
        Island radius [pixels].
    min_q : float
        Islands start beyond this fraction of the half-size from q = 0, where the
        few strongest pixels carry the most information.
    clearance : float
        Every island pixel also stays at least this far from q = 0 [pixels]. On small
        arrays ``min_q`` alone lets an island reach the central speckle: at 32 x 32 one
        island next to q = 0 held out a quarter of all counts, and every run's support
        exploded because the lowest frequencies were left unconstrained.

    Returns
    -------
    torch.Tensor, bool, centred, True on held-out (valid) pixels.
    """
    shape = mask.shape
    ndim = len(shape)
    device = mask.device
    free = torch.zeros(shape, dtype=torch.bool, device=device)
    if fraction <= 0:
        return free
    coords = torch.meshgrid(*[torch.arange(n, device=device) - n // 2 for n in shape],
                            indexing="ij")
    rq = torch.sqrt(sum((c / (n / 2)) ** 2 for c, n in zip(coords, shape, strict=True)))
    distance = torch.sqrt(sum(c.to(torch.float32) ** 2 for c in coords))  # [pixels]
    candidates = torch.nonzero(mask & (rq > min_q) & (rq < 0.95)
                               & (distance >= radius + clearance))
    if len(candidates) == 0:
        return free
    target = fraction * float(mask.sum())
    island = math.pi * radius**2 if ndim == 2 else 4 / 3 * math.pi * radius**3
    n_islands = max(1, int(target / island))
    picks = candidates[torch.randint(len(candidates), (n_islands,), generator=generator,
                                     device=device)]
    r = math.ceil(radius)
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-r, r + 1, device=device)] * ndim,
                                         indexing="ij"), dim=-1).reshape(-1, ndim)
    offsets = offsets[(offsets.to(torch.float32) ** 2).sum(-1) <= radius**2]
    points = (picks.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1, ndim)
    sizes = torch.tensor(shape, device=device)
    points = points[((points >= 0) & (points < sizes)).all(dim=1)]
    free[tuple(points.T)] = True
    return free & mask


@dataclass(frozen=True)
class Measurement:
    """A far-field measurement: what every phase stage fits and scores against.

    Attributes
    ----------
    counts : ndarray, float32, detector shape (centred)
        Measured intensity [photons]; zero on unmeasured pixels.
    mask : ndarray, bool, detector shape
        Measured (valid) pixels.
    free : ndarray, bool, detector shape
        Valid pixels held out of fitting and scored by the free LLK (all False: none).
    coherence : callable or None
        The partial-coherence model an earlier stage estimated (``coherence_kernel``).
    source : str
        Where the data came from, for messages.
    free_from : {"dataset", "new", "none"}
        Where the held-out pixels came from.
    """

    counts: np.ndarray
    mask: np.ndarray
    free: np.ndarray
    coherence: Coherence | None = None
    source: str = "the input"
    free_from: str = "none"

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, *, stage: str, on_invalid: str = "error"
                     ) -> Measurement:
        """The checked measurement of `ds` (see :func:`checked_counts`).

        ``free_mask`` of an earlier stage is kept (restricted to valid pixels), so that
        stages of one pipeline score their runs on the same held-out pixels.

        Parameters
        ----------
        ds : xarray.Dataset
            With ``intensity`` and optionally ``mask``, ``free_mask``, ``coherence_kernel``.
        stage : str
            The calling stage, for messages.
        on_invalid : {"error", "mask"}
            NaN, Inf or negative counts on valid pixels: raise, or mask them.
        """
        counts, mask = checked_counts(ds, stage=stage, on_invalid=on_invalid)
        free, origin = np.zeros(counts.shape, bool), "none"
        if schema.FREE_MASK in ds and ds[schema.FREE_MASK].shape == counts.shape:
            free, origin = np.asarray(ds[schema.FREE_MASK].values, bool) & mask, "dataset"
        return cls(counts, mask, free, measurement_coherence(ds, counts.shape),
                   str(ds.attrs.get("source", "the input")), origin)

    @property
    def ndim(self) -> int:
        """Spatial dimensions (2 or 3)."""
        return self.counts.ndim

    @property
    def valid(self) -> np.ndarray:
        """The fitted pixels: measured and not held out."""
        return self.mask & ~self.free

    @property
    def has_free(self) -> bool:
        """True when pixels are held out."""
        return bool(self.free.any())

    def hold_out(self, fraction: float, radius: float, generator: torch.Generator
                 ) -> Measurement:
        """This measurement with new held-out pixels (see :func:`free_pixel_mask`).

        The islands are drawn on `generator`'s device, so a seed gives the same pixels
        as the engine's own draws there.
        """
        mask = torch.as_tensor(self.mask, device=generator.device)
        free = free_pixel_mask(mask, fraction, radius, generator)
        return replace(self, free=free.cpu().numpy(), free_from="new")

    def model(self) -> FarField:
        """The forward model of these data (centred layout, their coherence)."""
        return FarField(self.ndim, coherence=self.coherence)

    def llk(self, x: Any, kind: str = "poisson") -> float:
        """Normalised LLK of object `x` (centred) on the fitted pixels (~1: fit to noise)."""
        calc = self.model().intensity(np.asarray(x).astype(np.complex128))
        return float(normalised_llk(calc, self.counts, self.valid, kind=kind))

    def free_llk(self, x: Any, kind: str = "poisson") -> float:
        """Normalised LLK of object `x` on the held-out pixels (NaN when none are)."""
        if not self.has_free:
            return float("nan")
        calc = self.model().intensity(np.asarray(x).astype(np.complex128))
        return float(free_llk(calc, self.counts, self.free, kind=kind))
