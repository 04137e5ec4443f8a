"""Figures of merit of a reconstruction against its data and, when known, its truth."""

from __future__ import annotations

import numpy as np

from ..physics import FarField, noise_model, normalised_llk
from ._align import align


def calc_intensity(obj: np.ndarray) -> np.ndarray:
    """``|F x|^2`` of a centred object (unitary FFT), centred."""
    return FarField(ndim=np.ndim(obj)).intensity(np.asarray(obj))


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

    Thin wrapper over :func:`sipflow.physics.normalised_llk` (one definition each).

    Parameters
    ----------
    obs, calc : ndarray, real, same shape
        Measured and calculated intensity [photons].
    mask : ndarray, bool
        Valid pixels.
    dof : int, optional
        Degrees of freedom (valid pixels minus support size); default valid pixels.
    """
    n = dof if dof is not None else int(np.asarray(mask).sum())
    return {f"llk_{kind}": float(normalised_llk(np.asarray(calc, np.float64),
                                                np.asarray(obs, np.float64), mask,
                                                dof=max(n, 1), kind=kind))
            for kind in ("poisson", "gaussian", "euclidean")}


def data_metrics(obj: np.ndarray, intensity: np.ndarray, mask: np.ndarray,
                 support: np.ndarray | None = None) -> dict[str, float]:
    """R-factor and LLKs of `obj` against the measured `intensity` (same grid).

    Scaled counts (a gain, a symmetrised pattern: :func:`sipflow.physics.noise_model`)
    are divided by their quantum before the LLKs, so that those of a good fit are about
    1 there too; ``photon_scale`` is the quantum used (1 for counts and for processed
    data whose scale is unknown).
    """
    calc = calc_intensity(obj)
    calc = calc * _scale(intensity, calc, mask)
    dof = int(mask.sum()) - (int(support.sum()) if support is not None else 0)
    out = {"rfactor": rfactor(intensity, calc, mask)}
    scale = noise_model(intensity, mask).scale
    out.update(llk(intensity / scale, calc / scale, mask, dof=dof))
    out["photon_scale"] = scale
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
