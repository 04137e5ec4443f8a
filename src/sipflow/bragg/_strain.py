"""Phase → displacement → strain of a Bragg-CDI object on an orthonormal grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def surface_layer(support: np.ndarray) -> np.ndarray:
    """Support voxels with at least one face neighbour outside the support.

    Parameters
    ----------
    support : bool ndarray, (z, y, x) or (y, x)

    Returns
    -------
    bool ndarray, the shape of `support`
        The outer layer: there a finite difference mixes in phase from outside the
        crystal, so strain there is computed one-sided and flagged.
    """
    support = np.asarray(support, bool)
    inside = support.copy()
    for axis in range(support.ndim):
        for shift in (1, -1):
            neighbour = np.roll(support, shift, axis=axis)
            edge = [slice(None)] * support.ndim
            edge[axis] = 0 if shift == 1 else -1
            neighbour[tuple(edge)] = False  # no wrap-around: the array's edge is outside
            inside &= neighbour
    return support & ~inside


def unwrap(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrap `phase` [rad] inside `support` (scikit-image's reliability-ordered
    unwrapping); NaN outside.

    Each connected part of the support is unwrapped on its own; its level is arbitrary
    up to 2π (the ramp fit removes a common offset).
    """
    from skimage.restoration import unwrap_phase

    phase = np.asarray(phase, np.float64)
    support = np.asarray(support, bool)
    if not support.any():
        return np.full(phase.shape, np.nan)
    masked = np.ma.masked_array(np.where(support, phase, 0.0), mask=~support)
    out = np.asarray(unwrap_phase(masked).filled(np.nan), np.float64)
    out[~support] = np.nan
    return out


def fit_ramp(phase: np.ndarray, support: np.ndarray, spacing: np.ndarray,
             weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Least-squares plane ``φ ≈ φ0 + k · r`` over `support`.

    Parameters
    ----------
    phase : ndarray [rad], unwrapped
    support : bool ndarray
    spacing : (ndim,) float
        Voxel size along each axis [nm].
    weights : ndarray, optional
        Per-voxel weights (e.g. the amplitude), default uniform.

    Returns
    -------
    offset : float [rad]
        The phase at the support's centroid.
    gradient : (ndim,) float [rad/nm]
        The ramp; a ramp k is a Bragg peak off the array centre by k / 2π [1/nm].
    """
    idx = np.nonzero(support)
    coords = np.stack([i * s for i, s in zip(idx, spacing, strict=True)], axis=1)
    centre = coords.mean(axis=0)
    a = np.concatenate([np.ones((coords.shape[0], 1)), coords - centre], axis=1)
    b = phase[idx]
    if weights is not None:
        w = np.sqrt(np.asarray(weights, np.float64)[idx])
        a, b = a * w[:, None], b * w
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(sol[0]), sol[1:]


def directional_derivative(u: np.ndarray, support: np.ndarray, spacing: np.ndarray,
                           direction: np.ndarray) -> np.ndarray:
    """``ĝ · ∇u`` inside `support` by finite differences that use support voxels only.

    Central differences where both neighbours along an axis are in the support,
    one-sided where one is, NaN where neither is (a one-voxel-thin part).

    Parameters
    ----------
    u : ndarray [nm]
    support : bool ndarray
    spacing : (ndim,) float [nm]
    direction : (ndim,) float
        Unit vector in the array's axis order.

    Returns
    -------
    ndarray, unitless; NaN outside the support.
    """
    out = np.zeros(u.shape)
    bad = np.zeros(u.shape, bool)
    for axis, (h, g) in enumerate(zip(spacing, direction, strict=True)):
        if g == 0:
            continue
        fwd = np.full(u.shape, np.nan)
        bwd = np.full(u.shape, np.nan)
        n = u.shape[axis]
        lo = [slice(None)] * u.ndim
        hi = [slice(None)] * u.ndim
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        lo, hi = tuple(lo), tuple(hi)
        both = support[lo] & support[hi]
        diff = np.where(both, (u[hi] - u[lo]) / h, np.nan)
        fwd[lo] = diff
        bwd[hi] = diff
        d = np.where(np.isnan(fwd), bwd, np.where(np.isnan(bwd), fwd, 0.5 * (fwd + bwd)))
        bad |= np.isnan(d)
        out += g * np.nan_to_num(d)
    out[bad | ~support] = np.nan
    return out


@dataclass(frozen=True)
class StrainResult:
    """What :func:`strain_from_object` returns.

    Attributes
    ----------
    phase : ndarray [rad]
        Unwrapped phase with the ramp and offset removed; NaN outside the support.
    displacement : ndarray [nm]
        ``u = φ / |G|``, the displacement along G (the phase convention ``φ = G · u``).
    strain : ndarray
        ``∂u/∂ĝ``; NaN outside the support.
    surface : bool ndarray
        The support's outer layer (one-sided differences; left out of the statistics).
    ramp : (ndim,) float [rad/nm]
        The removed phase ramp.
    """

    phase: np.ndarray
    displacement: np.ndarray
    strain: np.ndarray
    surface: np.ndarray
    ramp: np.ndarray

    def summary(self, support: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
        """Mean and RMS strain over the interior, its voxel count, and the volume."""
        interior = support & ~self.surface & np.isfinite(self.strain)
        values = self.strain[interior]
        return {
            "strain_mean": float(values.mean()) if values.size else float("nan"),
            "strain_rms": float(np.sqrt(np.mean((values - values.mean()) ** 2)))
            if values.size else float("nan"),
            "strain_max_abs": float(np.abs(values).max()) if values.size else float("nan"),
            "interior_voxels": int(interior.sum()),
            "surface_voxels": int((support & self.surface).sum()),
            "volume_nm3" if support.ndim == 3 else "area_nm2":
                float(support.sum() * np.prod(spacing)),
            "displacement_rms_nm": float(np.sqrt(np.nanmean(
                self.displacement[support] ** 2))),
        }


def strain_from_object(obj: np.ndarray, support: np.ndarray, spacing: np.ndarray,
                       g_vector: np.ndarray, *, remove_ramp: bool = True,
                       unwrap_phase: bool = True) -> StrainResult:
    """Displacement and strain along the Bragg vector from a reconstructed object.

    Parameters
    ----------
    obj : complex ndarray, (z, y, x) or (y, x)
        The object on an orthonormal grid (e.g. after ``bragg.orthogonalize``).
    support : bool ndarray, the shape of `obj`
    spacing : (ndim,) float
        Voxel size along each axis [nm].
    g_vector : (ndim,) float
        The Bragg vector G in the array's axis order [1/nm] (``|G| = 2π / d``).
    remove_ramp : bool
        Fit and remove ``φ0 + k · r`` (amplitude-weighted) over the support: a ramp is
        an off-centre Bragg peak, not strain; the offset is the arbitrary global phase.
    unwrap_phase : bool

    Returns
    -------
    StrainResult
    """
    obj = np.asarray(obj)
    support = np.asarray(support, bool)
    spacing = np.asarray(spacing, np.float64)
    g = np.asarray(g_vector, np.float64)
    if g.shape != (obj.ndim,) or not np.all(np.isfinite(g)) or np.linalg.norm(g) == 0:
        raise ValueError(f"g_vector must be {obj.ndim} finite numbers, not all zero; got {g}")
    if spacing.shape != (obj.ndim,) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be {obj.ndim} positive voxel sizes [nm]; got {spacing}")
    if support.shape != obj.shape:
        raise ValueError(f"support {support.shape} does not match obj {obj.shape}")
    if not support.any():
        raise ValueError("the support is empty: there is no crystal to analyse")
    # the phase relative to the support's mean phase first, so wrapping starts near 0
    mean = np.angle(np.sum(obj[support]))
    phase = np.angle(obj * np.exp(-1j * mean))
    phase = unwrap(phase, support) if unwrap_phase else np.where(support, phase, np.nan)
    ramp = np.zeros(obj.ndim)
    if remove_ramp:
        offset, ramp = fit_ramp(phase, support, spacing, weights=np.abs(obj))
        grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(obj.shape, spacing,
                                                                 strict=True)],
                            indexing="ij")
        idx = np.nonzero(support)
        centre = [float(np.mean(gr[idx])) for gr in grids]
        plane = offset + sum(k * (gr - c) for k, gr, c in zip(ramp, grids, centre,
                                                              strict=True))
        phase = phase - plane
    gnorm = float(np.linalg.norm(g))
    u = phase / gnorm
    eps = directional_derivative(np.nan_to_num(u), support, spacing, g / gnorm)
    return StrainResult(phase=phase, displacement=u, strain=eps,
                        surface=surface_layer(support), ramp=np.asarray(ramp))
