"""Total variation, the one definition the deep priors' penalty and refinement's constraint use."""

from __future__ import annotations

import torch


def total_variation(x: torch.Tensor, eps: float = 0.0, where: torch.Tensor | None = None,
                    ndim: int | None = None) -> torch.Tensor:
    """Isotropic total variation Σ √(Σ_d |∂_d x|² + ε²) of a real or complex array.

    Forward differences along the last `ndim` axes, on the grid cropped by one pixel along
    each of them (no periodic wrap); leading axes (runs) are summed too.

    Parameters
    ----------
    x : torch.Tensor, real or complex, (..., *spatial)
    eps : float
        Smoothing ε (same units as `x`): differentiable at flat pixels when > 0.
    where : torch.Tensor, bool, (*spatial), optional
        Keep only the terms at these pixels (with ε > 0, terms of pixels that cannot
        change would only add a constant).
    ndim : int, optional
        Spatial dimensions (default: all of `x`'s).

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    ndim = x.ndim if ndim is None else ndim
    crop = (Ellipsis, *(slice(0, s - 1) for s in x.shape[-ndim:]))
    sq = sum((torch.diff(x, dim=d).abs() ** 2)[crop] for d in range(-ndim, 0))
    terms = torch.sqrt(sq + eps ** 2)
    if where is not None:
        terms = terms[..., where[crop[1:]]]
    return terms.sum()
