"""What a mask leaves undetermined: the object modes whose power falls on unmeasured pixels.

A beamstop hides the pixels around q = 0 that carry most of a compact object's power.
Inside a support ``S``, the objects the data cannot see are the eigenvectors of

    A = P_S F^-1 P_U F P_S

(``P_S`` keeps the support, ``P_U`` the unmeasured detector pixels, ``F`` the unitary
far-field transform): an eigenvalue ``f`` is the share of that mode's power that falls
on unmeasured pixels, so a mode with ``f`` close to 1 can be added to any
reconstruction at almost no cost in likelihood (the "unconstrained modes" of Thibault
et al., 2006). No algorithm can recover a mode the data do not measure; counting
them tells a user whether a beamstop is too large for an object before trusting any
reconstruction's low frequencies.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._farfield import farfield, inverse_farfield

#: below this many unknowns the operator is built as a dense matrix
_DENSE = 400


@dataclass(frozen=True)
class UnmeasuredModes:
    """The object modes that put the largest share of their power on unmeasured pixels.

    Attributes
    ----------
    fractions : ndarray, float64, (k,)
        Share of each mode's power (``|F m|^2``) on unmeasured pixels, in [0, 1],
        largest first.
    modes : ndarray, complex128, (k, *spatial), or None
        The modes, centred like the support, unit norm, zero outside the support
        (None when not asked for).
    support_size, unmeasured_size : int
        Pixels in the support and unmeasured detector pixels.
    """

    fractions: np.ndarray
    modes: np.ndarray | None
    support_size: int
    unmeasured_size: int

    def count(self, threshold: float = 0.99) -> int:
        """Number of modes with at least `threshold` of their power unmeasured.

        Only the ``k`` modes computed are counted: a count equal to ``k`` means "k or
        more".
        """
        return int((self.fractions >= threshold).sum())


def unmeasured_modes(support: np.ndarray, measured: np.ndarray, k: int = 8,
                     tol: float = 1e-2, maxiter: int = 60, with_modes: bool = True
                     ) -> UnmeasuredModes:
    """The `k` modes of `support` that the pixels not in `measured` hide most.

    Parameters
    ----------
    support : ndarray, bool, (*spatial)
        Real-space support, centred (the object's centre at ``n // 2``).
    measured : ndarray, bool, (*spatial)
        Measured detector pixels, centred (q = 0 at ``n // 2``); same shape.
    k : int
        Number of modes (largest fractions first).
    tol : float
        Residual norm at which an eigenpair has converged (LOBPCG's ``tol``); the
        default leaves the fractions good to ~1e-3 (to ~1e-4 near 1), enough to count
        modes against a threshold such as 0.99.
    maxiter : int
        Most LOBPCG iterations (each one a product with a block of vectors).
    with_modes : bool
        Also return the modes (`k` full-size arrays; False when only the fractions are
        wanted, e.g. to count them).

    Returns
    -------
    UnmeasuredModes

    Notes
    -----
    ``A = P_S F^-1 P_U F P_S`` and ``P_U F P_S F^-1 P_U`` share their non-zero
    eigenvalues; the one on the smaller of the support and the unmeasured set is
    solved (LOBPCG on a block of ~2k vectors, one pair of FFTs per vector
    and iteration; a block converges on the clusters of values near 1 that a
    single-vector Lanczos misses), so a nearly complete detector costs
    little. 2-D and 3-D.
    """
    support = np.asarray(support, bool)
    measured = np.asarray(measured, bool)
    if support.shape != measured.shape:
        raise ValueError(f"support {support.shape} and measured {measured.shape} must have "
                         "the same shape")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ndim = support.ndim
    axes = tuple(range(ndim))
    # unshifted layout: the object's centre and q = 0 at index 0, as farfield expects
    s = torch.from_numpy(np.fft.ifftshift(support, axes=axes))
    u = torch.from_numpy(np.fft.ifftshift(~measured, axes=axes))
    n_s, n_u = int(s.sum()), int(u.sum())
    if n_s == 0 or n_u == 0:
        none = np.zeros((0, *support.shape), np.complex128) if with_modes else None
        return UnmeasuredModes(np.zeros(0), none, n_s, n_u)
    on_support = n_s <= n_u
    inner, outer = (s, u) if on_support else (u, s)
    to_outer, back = ((farfield, inverse_farfield) if on_support
                      else (inverse_farfield, farfield))
    n = min(n_s, n_u)
    # columns transformed together: at most ~64 MB of complex128 arrays at a time
    chunk = max(1, int(64e6 // (16 * support.size)))

    def apply(v: np.ndarray) -> np.ndarray:
        """``P_in T^-1 P_out T P_in`` on the inner pixels, one column or a block."""
        v = torch.from_numpy(np.ascontiguousarray(np.asarray(v).reshape(n, -1),
                                                  np.complex128)).T  # (columns, n)
        out = torch.empty_like(v)
        for j in range(0, v.shape[0], chunk):
            block = v[j:j + chunk]
            full = torch.zeros((block.shape[0], *support.shape), dtype=torch.complex128)
            full[:, inner] = block
            f = to_outer(full, ndim)
            f = torch.where(outer, f, torch.zeros_like(f))
            out[j:j + chunk] = back(f, ndim)[:, inner]
        return out.T.numpy()

    kk = min(k, n)
    if n <= _DENSE or kk >= n - 1:
        matrix = apply(np.eye(n, dtype=np.complex128))
        values, vectors = np.linalg.eigh((matrix + matrix.conj().T) / 2)
        values, vectors = values[::-1][:kk], vectors[:, ::-1][:, :kk]
    else:
        from scipy.sparse.linalg import LinearOperator, lobpcg

        op = LinearOperator((n, n), matvec=lambda v: apply(v)[:, 0], matmat=apply,
                            dtype=np.complex128)
        block = min(n // 3, max(2 * kk, kk + 8))  # extra vectors: clusters near 1 converge
        start = np.random.default_rng(0).standard_normal((n, block)).astype(np.complex128)
        with warnings.catch_warnings():  # stopped at maxiter: values still good to ~tol
            warnings.simplefilter("ignore", UserWarning)
            values, vectors = lobpcg(op, start, largest=True, tol=tol, maxiter=maxiter)
        order = np.argsort(values)[::-1][:kk]
        values, vectors = values[order], vectors[:, order]
    fractions = np.clip(values.real, 0.0, 1.0)
    if not with_modes:
        return UnmeasuredModes(fractions, None, n_s, n_u)
    modes = np.zeros((kk, *support.shape), np.complex128)
    for j in range(kk):
        w = torch.zeros(support.shape, dtype=torch.complex128)
        w[inner] = torch.from_numpy(np.ascontiguousarray(vectors[:, j]))
        if not on_support:  # a detector-side vector: its real-space mode is P_S F^-1 w
            m = inverse_farfield(w, ndim)
            w = torch.where(s, m, torch.zeros_like(m))
            w = w / max(float(torch.linalg.vector_norm(w)), 1e-300)
        modes[j] = np.fft.fftshift(w.numpy(), axes=axes)
    return UnmeasuredModes(fractions, modes, n_s, n_u)
