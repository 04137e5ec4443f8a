"""Working with many runs: breeding generations and the PRTF (numpy; averages: sipflow.runset)."""

from __future__ import annotations

import numpy as np

from ..physics import centred_farfield
from ..runset import align_to


def breed(runs: np.ndarray, supports: np.ndarray, best: int) -> np.ndarray:
    """Children for the next generation (cohere's ``sqrt_ab``).

    Each run is aligned to the best one and replaced by
    ``sqrt(|a| |b|) exp(i (phi_a + phi_b) / 2)``; the best run carries on unchanged.
    """
    aligned, _ = align_to(runs[best], runs, supports)
    b = aligned[best]
    children = np.sqrt(np.abs(aligned) * np.abs(b)) * np.exp(
        0.5j * (np.angle(aligned) + np.angle(b)))
    children[best] = runs[best]
    return children.astype(runs.dtype)


def prtf(obj: np.ndarray, intensity: np.ndarray, mask: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """Phase-retrieval transfer function per radial shell.

    ``PRTF(q) = sum |F x| / sum sqrt(I)`` over the valid pixels of each one-pixel
    shell, normalised to its maximum. Computed on an average of aligned runs it
    falls where the runs disagree on the phases.

    Returns
    -------
    shells : ndarray, float, (n_shells,)
        Shell radius [pixels from q = 0].
    values : ndarray, float, (n_shells,)
    """
    calc = np.abs(centred_farfield(obj))
    coords = np.meshgrid(*[np.arange(n) - n // 2 for n in obj.shape], indexing="ij")
    r = np.sqrt(sum(c.astype(float) ** 2 for c in coords))
    shell = np.rint(r).astype(int)
    n = shell.max() + 1
    num = np.bincount(shell[mask], weights=calc[mask], minlength=n)
    den = np.bincount(shell[mask], weights=np.sqrt(np.clip(intensity[mask], 0, None)),
                      minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(den > 0, num / den, np.nan)
    limit = min(obj.shape) // 2
    values = values[:limit]
    peak = np.nanmax(values) if np.isfinite(values).any() else 1.0
    return np.arange(limit, dtype=float), values / peak
