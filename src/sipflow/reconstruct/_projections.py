"""Projections and the ER / HIO / RAAR updates, batched over runs (pure torch).

Shapes: ``x``, ``d`` are complex ``(runs, *spatial)``; ``support`` is bool
``(runs, *spatial)``; ``amplitude`` (the measured sqrt(I)) is real and ``mask``
bool, both ``(*spatial)`` and broadcast over runs. All arrays are unshifted
(origin at index 0).
"""

from __future__ import annotations

import torch

from ..physics import farfield, inverse_farfield


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
    scale = torch.where(mask, amplitude / mag.clamp_min(eps), torch.ones_like(mag))
    return inverse_farfield(f * scale, ndim), mag


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

    With `positivity`, in-support pixels with Re(d) < 0 are treated as outside.
    """
    inside = support & (d.real >= 0) if positivity else support
    if name == "ER":
        return torch.where(inside, d, torch.zeros_like(d))
    if name == "HIO":
        return torch.where(inside, d, x - beta * d)
    if name == "RAAR":
        return torch.where(inside, d, (1 - 2 * beta) * d + beta * x)
    raise ValueError(f"unknown update {name!r}")


def poisson_llk(calc_amplitude: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor,
                ndim: int, dof: torch.Tensor | float, eps: float = 1e-12) -> torch.Tensor:
    """Normalised Poisson log-likelihood per run (an ideal fit gives about 1).

    .. math:: \\mathrm{LLK} = \\frac{2}{\\nu} \\sum_{\\text{mask}} c - o + o \\ln(o / c),
              \\quad c = |F x|^2

    where ν (`dof`) is the number of valid pixels minus the support size.
    Twice the Poisson deviance is distributed like chi-square with one degree
    of freedom per pixel, hence the factor 2.
    """
    calc = (calc_amplitude * calc_amplitude).clamp_min(eps)
    obs = intensity
    term = calc - obs + torch.where(obs > 0, obs * torch.log(obs.clamp_min(eps) / calc),
                                    torch.zeros_like(obs))
    term = torch.where(mask, term, torch.zeros_like(term))
    if isinstance(dof, torch.Tensor):
        dof = dof.clamp_min(1)
    return 2 * term.sum(dim=tuple(range(-ndim, 0))) / dof
