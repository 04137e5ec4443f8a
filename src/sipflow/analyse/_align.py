"""Alignment modulo the trivial ambiguities, as the analysis uses it (numpy in, numpy out).

The group and its algorithms live in :mod:`sipflow.symmetry`; these are the
numpy-facing names the metrics and older callers use.
"""

from __future__ import annotations

import numpy as np

from ..symmetry import Alignment, subpixel_shift, translate, twin
from ..symmetry import align as _align


def fourier_shift(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x(r - shift)`` by a Fourier phase ramp (periodic, sub-pixel); see ``symmetry``."""
    return translate(np.asarray(x), np.asarray(shift, dtype=float))


def align(truth: np.ndarray, rec: np.ndarray, precision: float = 0.01) -> Alignment:
    """Align `rec` to `truth` over twin, sub-pixel translation and global phase.

    Returns the aligned reconstruction and the relative error
    ``||truth - g(rec)|| / ||truth||`` minimised over the group.
    """
    return _align(np.asarray(truth, np.complex128), np.asarray(rec, np.complex128),
                  precision=precision)


__all__ = ["Alignment", "align", "fourier_shift", "subpixel_shift", "twin"]
