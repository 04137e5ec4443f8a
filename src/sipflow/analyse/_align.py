"""Alignment modulo the trivial ambiguities of far-field phase retrieval.

The measured intensity cannot distinguish ``x`` from ``exp(i phi) x`` (global
phase), ``x(. - t)`` (translation) and ``conj(x(-.))`` (twin). Scoring against a
known truth minimises over all three (SCIENCE.md §1); sub-pixel translation uses
the upsampled cross-correlation of Guizar-Sicairos et al. (2008).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _freqs(n: int) -> np.ndarray:
    return np.fft.fftfreq(n) * n


def _refine(prod: np.ndarray, centre: np.ndarray, half_width: float, step: float
            ) -> np.ndarray:
    """Maximise |cross-correlation| on a fine grid around `centre` by a separable matrix DFT."""
    k = round(half_width / step)
    offsets = np.arange(-k, k + 1) * step
    out = prod
    for axis, n in enumerate(prod.shape):
        s = centre[axis] + offsets
        kernel = np.exp(2j * np.pi * np.outer(s, _freqs(n)) / n)  # (n_fine, n)
        out = np.moveaxis(np.tensordot(kernel, out, axes=([1], [axis])), 0, axis)
    fine = np.unravel_index(np.argmax(np.abs(out)), out.shape)
    return np.array([centre[a] + offsets[fine[a]] for a in range(prod.ndim)])


def subpixel_shift(ref: np.ndarray, mov: np.ndarray, precision: float = 0.01) -> np.ndarray:
    """Translation ``t`` (pixels, one per axis) that best aligns ``mov(r - t)`` to `ref`.

    The integer peak of the FFT cross-correlation is refined twice by upsampled
    matrix DFTs (Guizar-Sicairos et al. 2008): to 0.1 px in a 1.5-px window, then
    to `precision` in a 0.1-px window.

    Parameters
    ----------
    ref, mov : ndarray, complex or real, same shape (2-D or 3-D)
    precision : float
        Final step of the search [pixels].

    Returns
    -------
    ndarray of float, shape (ndim,)
    """
    prod = np.fft.fftn(ref) * np.conj(np.fft.fftn(mov))
    cc = np.abs(np.fft.ifftn(prod))
    peak = np.array(np.unravel_index(np.argmax(cc), cc.shape), dtype=float)
    shape = np.array(ref.shape)
    peak = np.where(peak > shape // 2, peak - shape, peak)
    peak = _refine(prod, peak, 0.75, 0.1)
    return _refine(prod, peak, 0.1, precision)


def fourier_shift(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x(r - shift)`` by a phase ramp in Fourier space (periodic, sub-pixel)."""
    f = np.fft.fftn(x)
    for axis, (n, t) in enumerate(zip(x.shape, shift, strict=True)):
        view = [1] * x.ndim
        view[axis] = n
        f = f * np.exp(-2j * np.pi * _freqs(n) * t / n).reshape(view)
    out = np.fft.ifftn(f)
    return out if np.iscomplexobj(x) else out.real


def twin(x: np.ndarray) -> np.ndarray:
    """The twin image ``conj(x(-r))`` (up to a translation)."""
    return np.conj(np.flip(x))


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align`."""

    aligned: np.ndarray
    error: float
    twin: bool
    shift: tuple[float, ...]
    phase: float


def align(truth: np.ndarray, rec: np.ndarray, precision: float = 0.01) -> Alignment:
    """Align `rec` to `truth` over twin, sub-pixel translation and global phase.

    Returns the aligned reconstruction and the relative error
    ``||truth - g(rec)|| / ||truth||`` minimised over the group.
    """
    truth = np.asarray(truth, dtype=np.complex128)
    norm = np.linalg.norm(truth)
    best: Alignment | None = None
    for is_twin in (False, True):
        cand = twin(rec) if is_twin else np.asarray(rec, dtype=np.complex128)
        # translation from the amplitudes (insensitive to phase ramps), then refine on complex
        t = subpixel_shift(np.abs(truth), np.abs(cand), precision)
        moved = fourier_shift(cand, t)
        inner = np.vdot(moved, truth)  # sum conj(moved) * truth
        phase = float(np.angle(inner))
        aligned = moved * np.exp(1j * phase)
        err = float(np.linalg.norm(truth - aligned) / norm)
        if best is None or err < best.error:
            best = Alignment(aligned, err, is_twin, tuple(float(v) for v in t), phase)
    assert best is not None
    return best
