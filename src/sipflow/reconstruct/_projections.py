"""Projections and the ER / HIO / RAAR updates, batched over runs (pure torch).

Shapes: ``x``, ``d`` are complex ``(runs, *spatial)``; ``support`` is bool
``(runs, *spatial)``; ``amplitude`` (the measured sqrt(I)) is real and ``mask``
bool, both ``(*spatial)`` and broadcast over runs. All arrays are unshifted
(origin at index 0).
"""

from __future__ import annotations

import torch

from ..physics import farfield, inverse_farfield


def cwhere(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``torch.where`` for complex tensors, through a real view of the same element size.

    On CPU, ``torch.where`` on complex64 is several times slower than on float64; a
    complex64 element is reinterpreted as one float64 (bits unchanged).
    """
    if a.dtype == torch.complex64:
        other = b.view(torch.float64) if isinstance(b, torch.Tensor) else float(b)
        return torch.where(cond, a.view(torch.float64), other).view(torch.complex64)
    ar = torch.view_as_real(a)
    br = torch.view_as_real(b) if isinstance(b, torch.Tensor) else float(b)
    return torch.view_as_complex(torch.where(cond.unsqueeze(-1), ar, br).contiguous())


def cscale(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``z * r`` for complex `z` and real `r` (broadcast), as a real multiply."""
    return torch.view_as_complex(torch.view_as_real(z) * r.unsqueeze(-1))


def modulus_projection(x: torch.Tensor, amplitude: torch.Tensor, mask: torch.Tensor, ndim: int,
                       eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace Fourier magnitudes by the measured ones on valid pixels.

    .. math:: P_M x = F^{-1}\\left[ F x \\cdot \\frac{\\sqrt{I}}{\\max(|F x|, \\epsilon)}
              \\right]_{\\text{mask}}

    Unmeasured pixels (``mask`` False) keep their current value.

    Returns
    -------
    d : torch.Tensor
        The projected object, same shape as `x`.
    calc : torch.Tensor
        ``|F x|`` before projection (real, same shape), for figures of merit.
    """
    f = farfield(x, ndim)
    mag = f.abs()
    scale = torch.where(mask, amplitude / mag.clamp_min(eps), 1.0)
    return inverse_farfield(cscale(f, scale), ndim), mag


def update(name: str, x: torch.Tensor, d: torch.Tensor, support: torch.Tensor, beta: float,
           positivity: bool) -> torch.Tensor:
    """One ER / HIO / RAAR update from the current `x` and its projection `d`.

    ============  ==========  ==========================
    algorithm     inside S    outside S
    ============  ==========  ==========================
    ER            d           0
    HIO           d           x - beta d
    RAAR          d           (1 - 2 beta) d + beta x
    ============  ==========  ==========================

    With `positivity` the object is taken as real and non-negative: in-support pixels
    with Re(d) < 0 are treated as outside, and the others keep only Re(d).
    """
    inside = support
    if positivity:
        inside = support & (d.real >= 0)
        d = torch.complex(d.real, torch.zeros_like(d.real)).where(inside, d)
    if name == "ER":
        return cwhere(inside, d, 0.0)
    if name == "HIO":
        return cwhere(inside, d, torch.add(x, d, alpha=-beta))
    if name == "RAAR":
        outside = torch.view_as_complex(torch.add(torch.view_as_real(d) * (1 - 2 * beta),
                                                  torch.view_as_real(x), alpha=beta))
        return cwhere(inside, d, outside)
    raise ValueError(f"unknown update {name!r}")


def poisson_deviance(calc_amplitude: torch.Tensor, intensity: torch.Tensor,
                     obs_log_obs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel Poisson deviance term ``c - o + o ln(o / c)``, ``c = |F x|^2``.

    Parameters
    ----------
    calc_amplitude : torch.Tensor, real, (runs, *spatial)
        ``|F x|``.
    intensity : torch.Tensor, real, (*spatial)
        Observed counts ``o``.
    obs_log_obs : torch.Tensor, real, (*spatial)
        ``o ln o`` (0 where o = 0), computed once per reconstruction.

    One logarithm per pixel: ``o ln(o/c) = o ln o - 2 o ln|F x|``.
    """
    mag = calc_amplitude.clamp_min(eps)
    return mag * mag - intensity + obs_log_obs - 2 * intensity * torch.log(mag)


def normalised_sum(term: torch.Tensor, mask: torch.Tensor, ndim: int,
                   dof: torch.Tensor | float) -> torch.Tensor:
    """``2 / dof * sum(term over mask)`` per run: a normalised LLK (ideal fit about 1).

    Twice the Poisson deviance is distributed like chi-square with one degree of
    freedom per pixel, hence the factor 2; `dof` is the number of pixels summed
    minus the number of free parameters (the support size) where that applies.
    """
    total = (term * mask).sum(dim=tuple(range(-ndim, 0)))
    if isinstance(dof, torch.Tensor):
        dof = dof.clamp_min(1)
    return 2 * total / dof


def _poisson_nll(f: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor, ndim: int,
                 eps: float) -> torch.Tensor:
    calc = (f.real**2 + f.imag**2).clamp_min(eps)
    term = torch.where(mask, calc - intensity * torch.log(calc), torch.zeros_like(calc))
    return term.sum(dim=tuple(range(-ndim, 0)))


def ml_step(x: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor,
            support: torch.Tensor, ndim: int, eps: float = 1e-12
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Poisson maximum-likelihood gradient step inside the support.

    Minimises :math:`L(x) = \\sum_{mask} |Fx|^2 - I \\ln |Fx|^2` along the steepest
    descent direction restricted to the support,
    :math:`g = S \\cdot F^{-1}[(1 - I/|Fx|^2) F x]`, with the step from a quadratic
    fit of :math:`L` (one extra FFT). Steps are per run.

    Returns
    -------
    x : torch.Tensor
        Updated object.
    calc : torch.Tensor
        ``|F x|`` before the step, for figures of merit.
    """
    f = farfield(x, ndim)
    mag2 = (f.real**2 + f.imag**2).clamp_min(eps)
    resid = torch.where(mask, (1 - intensity / mag2) * f, torch.zeros_like(f))
    g = torch.where(support, inverse_farfield(resid, ndim), torch.zeros_like(x))
    direction = -g
    fd = farfield(direction, ndim)
    dims = tuple(range(-ndim, 0))
    view = (-1,) + (1,) * ndim
    l0 = _poisson_nll(f, intensity, mask, ndim, eps)
    slope = -2 * (g.real**2 + g.imag**2).sum(dim=dims)  # dL/dgamma at 0
    trial = 1.0
    l1 = _poisson_nll(f + trial * fd, intensity, mask, ndim, eps)
    curvature = 2 * (l1 - l0 - slope * trial) / trial**2
    step = torch.where(curvature > 0, -slope / curvature.clamp_min(1e-30),
                       torch.full_like(slope, trial))
    step = step.clamp(0, 4 * trial)
    return x + step.reshape(view).to(x.dtype) * direction, mag2.sqrt()
