"""Negative log-likelihoods of photon counts, and the normalised and free LLKs built on them.

Each NLL is written so that it is zero for a perfect fit (a data-only constant
removed) and ``2 * NLL / dof`` is about 1 for a correct fit with noise:

=========  ============================================  =================================
model      per-pixel NLL (``o`` observed, ``c`` calc)     from
=========  ============================================  =================================
Poisson    ``c - o + o ln(o / c)``                        counting statistics
Gaussian   ``(o - c)^2 / (2 (o + 1))``                    Poisson variance ~ o (+1 at 0)
Euclidean  ``2 (sqrt(o) - sqrt(c))^2``                    variance of sqrt(Poisson) = 1/4
=========  ============================================  =================================

All are differentiable torch functions of ``calc``, masked, summed over the last
`ndim` axes and batched over any leading axes (runs). numpy arrays are accepted and
give numpy results.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ._farfield import spatial_dims

Kind = Literal["poisson", "gaussian", "euclidean"]


def _prep(calc, obs, mask, ndim, eps):
    numpy_in = isinstance(calc, np.ndarray)
    if numpy_in:
        calc = torch.from_numpy(np.array(calc, np.float64))
        obs = torch.from_numpy(np.array(obs, np.float64))
        mask = None if mask is None else torch.from_numpy(np.array(mask, bool))
    else:
        obs = torch.as_tensor(obs, dtype=calc.dtype, device=calc.device)
        if mask is not None:
            mask = torch.as_tensor(mask, device=calc.device).bool()
    ndim = ndim or obs.ndim
    return numpy_in, calc.clamp_min(eps), obs, mask, ndim


def _finish(term: torch.Tensor, mask, ndim: int, numpy_in: bool):
    if mask is not None:
        term = torch.where(mask, term, torch.zeros_like(term))
    total = term.sum(dim=spatial_dims(ndim))
    return total.numpy() if numpy_in else total


def poisson_nll(calc, obs, mask=None, ndim: int | None = None, eps: float = 1e-12):
    """Poisson NLL ``sum_mask c - o + o ln(o/c)`` per batch element.

    Parameters
    ----------
    calc : torch.Tensor or ndarray, real, (..., *spatial)
        Expected counts [photons] (e.g. :meth:`FarField.intensity`).
    obs : real, (*spatial)
        Observed counts [photons].
    mask : bool, (*spatial), optional
        Pixels to sum over (default all).
    ndim : int, optional
        Spatial dimensions (default ``obs.ndim``).

    Returns
    -------
    real, (...)
    """
    numpy_in, c, o, mask, ndim = _prep(calc, obs, mask, ndim, eps)
    olog = torch.where(o > 0, o * torch.log(o.clamp_min(1e-30)), torch.zeros_like(o))
    return _finish(c - o + olog - o * torch.log(c), mask, ndim, numpy_in)


def gaussian_nll(calc, obs, mask=None, ndim: int | None = None, eps: float = 1e-12):
    """Gaussian NLL ``sum_mask (o - c)^2 / (2 (o + 1))`` per batch element.

    Arguments and result as :func:`poisson_nll`.
    """
    numpy_in, c, o, mask, ndim = _prep(calc, obs, mask, ndim, eps)
    return _finish((o - c) ** 2 / (2 * (o + 1)), mask, ndim, numpy_in)


def euclidean_nll(calc, obs, mask=None, ndim: int | None = None, eps: float = 1e-12):
    """Euclidean (amplitude) NLL ``sum_mask 2 (sqrt(o) - sqrt(c))^2`` per batch element."""
    numpy_in, c, o, mask, ndim = _prep(calc, obs, mask, ndim, eps)
    return _finish(2 * (torch.sqrt(o.clamp_min(0)) - torch.sqrt(c)) ** 2, mask, ndim, numpy_in)


NLL = {"poisson": poisson_nll, "gaussian": gaussian_nll, "euclidean": euclidean_nll}


def normalised_llk(calc, obs, mask=None, ndim: int | None = None, dof: Any = None,
                   kind: Kind = "poisson"):
    """``2 * NLL / dof``: about 1 for a correct fit with noise.

    Parameters
    ----------
    dof : int, tensor or None
        Degrees of freedom: pixels summed minus free parameters (e.g. the support
        size); default the number of pixels summed.
    kind : {"poisson", "gaussian", "euclidean"}
    """
    total = NLL[kind](calc, obs, mask, ndim)
    if dof is None:
        shape = np.shape(obs)[-(ndim or np.ndim(obs)):]
        dof = int(np.asarray(mask).sum()) if mask is not None else int(np.prod(shape))
    if isinstance(dof, torch.Tensor):
        dof = dof.clamp_min(1).to(total.dtype)
    elif isinstance(dof, np.ndarray):
        dof = np.maximum(dof, 1)
    else:
        dof = max(dof, 1)
    return 2 * total / dof


def free_llk(calc, obs, free, ndim: int | None = None, kind: Kind = "poisson"):
    """Normalised LLK on the held-out free pixels (no free parameters: dof = their count).

    Ranks reconstructions: overfitting noise lowers the LLK on fitted pixels but not
    on pixels that were never fitted.
    """
    return normalised_llk(calc, obs, free, ndim, dof=None, kind=kind)
