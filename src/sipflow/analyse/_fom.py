"""Figures of merit of a reconstruction against its data and, when known, its truth."""

from __future__ import annotations

import numpy as np

from ..physics import centred_farfield
from ._align import align


def calc_intensity(obj: np.ndarray) -> np.ndarray:
    """``|F x|^2`` of a centred object (unitary FFT), centred."""
    return np.abs(centred_farfield(obj)) ** 2


def _scale(obs: np.ndarray, calc: np.ndarray, mask: np.ndarray) -> float:
    """Least-squares global scale of ``calc`` onto ``obs`` on valid pixels."""
    den = float((calc[mask] ** 2).sum())
    return float((obs[mask] * calc[mask]).sum() / den) if den > 0 else 1.0


def rfactor(obs: np.ndarray, calc: np.ndarray, mask: np.ndarray) -> float:
    """``sum |sqrt(obs) - sqrt(calc)| / sum sqrt(obs)`` on valid pixels."""
    a, b = np.sqrt(np.clip(obs[mask], 0, None)), np.sqrt(calc[mask])
    return float(np.abs(a - b).sum() / max(a.sum(), 1e-30))


def llk(obs: np.ndarray, calc: np.ndarray, mask: np.ndarray, dof: int | None = None
        ) -> dict[str, float]:
    """Poisson, Gaussian and Euclidean log-likelihoods, normalised (ideal fit ~ 1).

    Parameters
    ----------
    obs, calc : ndarray, real, same shape
        Measured and calculated intensity [photons].
    mask : ndarray, bool
        Valid pixels.
    dof : int, optional
        Degrees of freedom (valid pixels minus support size); default valid pixels.
    """
    o = obs[mask].astype(np.float64)
    c = np.clip(calc[mask].astype(np.float64), 1e-12, None)
    n = max(dof if dof is not None else o.size, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pois = c - o + np.where(o > 0, o * np.log(np.where(o > 0, o, 1) / c), 0.0)
    return {
        "llk_poisson": float(2 * pois.sum() / n),
        "llk_gaussian": float(((o - c) ** 2 / (o + 1)).sum() / n),
        "llk_euclidean": float((4 * (np.sqrt(o) - np.sqrt(c)) ** 2).sum() / n),
    }


def data_metrics(obj: np.ndarray, intensity: np.ndarray, mask: np.ndarray,
                 support: np.ndarray | None = None) -> dict[str, float]:
    """R-factor and LLKs of `obj` against the measured `intensity` (same grid)."""
    calc = calc_intensity(obj)
    calc = calc * _scale(intensity, calc, mask)
    dof = int(mask.sum()) - (int(support.sum()) if support is not None else 0)
    out = {"rfactor": rfactor(intensity, calc, mask)}
    out.update(llk(intensity, calc, mask, dof=dof))
    return out


def truth_metrics(obj: np.ndarray, truth: np.ndarray, support_true: np.ndarray | None = None
                  ) -> dict[str, float | bool | list[float]]:
    """Errors of `obj` against `truth` modulo global phase, translation and twin.

    Returns
    -------
    dict
        ``error`` (relative complex error), ``error_amplitude`` (relative error of
        ``|x|``), ``phase_rms_rad`` (RMS phase difference inside the true support,
        weighted by amplitude), ``phase_ramp_rad_per_px`` (residual linear phase
        ramp magnitude), ``twin`` and ``shift_px``.
    """
    a = align(truth, obj)
    t = np.asarray(truth, np.complex128)
    amp_err = float(np.linalg.norm(np.abs(t) - np.abs(a.aligned)) / np.linalg.norm(np.abs(t)))
    inside = support_true if support_true is not None else np.abs(t) > 0.1 * np.abs(t).max()
    diff = np.angle(a.aligned * np.conj(t))[inside]
    w = np.abs(t)[inside]
    phase_rms = float(np.sqrt((w * diff**2).sum() / max(w.sum(), 1e-30)))
    # residual ramp: weighted least squares of the phase difference on coordinates
    coords = np.stack([c[inside] for c in np.indices(t.shape)], axis=1).astype(float)
    design = np.concatenate([coords - coords.mean(0), np.ones((coords.shape[0], 1))], axis=1)
    sw = np.sqrt(w)[:, None]
    slope, *_ = np.linalg.lstsq(design * sw, diff * sw[:, 0], rcond=None)
    return {
        "error": a.error,
        "error_amplitude": amp_err,
        "phase_rms_rad": phase_rms,
        "phase_ramp_rad_per_px": float(np.linalg.norm(slope[:-1])),
        "twin": a.twin,
        "shift_px": list(a.shift),
    }
