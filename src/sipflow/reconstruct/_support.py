"""Support estimation: autocorrelation start and shrinkwrap (Marchesini 2003)."""

from __future__ import annotations

import math

import torch

from ..physics import farfield, inverse_farfield


def gaussian_transfer(shape: tuple[int, ...], sigma: float, device, dtype) -> torch.Tensor:
    """Fourier transfer function of a unit-sum Gaussian of width `sigma` [pixels].

    Returns a real tensor of `shape` (unshifted frequency layout).
    """
    total = torch.zeros(shape, device=device, dtype=dtype)
    for axis, n in enumerate(shape):
        k = torch.fft.fftfreq(n, device=device, dtype=dtype)
        view = [1] * len(shape)
        view[axis] = n
        total = total + (k**2).reshape(view)
    return torch.exp(-2 * math.pi**2 * sigma**2 * total)


def blur(amplitude: torch.Tensor, sigma: float, ndim: int) -> torch.Tensor:
    """Gaussian blur of the last `ndim` axes of a real tensor (periodic boundaries)."""
    g = gaussian_transfer(tuple(amplitude.shape[-ndim:]), sigma, amplitude.device,
                          amplitude.dtype)
    return inverse_farfield(farfield(amplitude.to(torch.complex64 if amplitude.dtype ==
                                                  torch.float32 else torch.complex128), ndim)
                            * g, ndim).real


def autocorrelation_support(intensity: torch.Tensor, mask: torch.Tensor, thresholds: torch.Tensor,
                            ndim: int) -> torch.Tensor:
    """Initial supports from the thresholded autocorrelation ``|F^-1 I|``.

    Parameters
    ----------
    intensity : torch.Tensor, real, (*spatial), unshifted
    mask : torch.Tensor, bool, (*spatial)
    thresholds : torch.Tensor, real, (runs,)
        Fraction of the autocorrelation maximum, one per run.

    Returns
    -------
    torch.Tensor, bool, (runs, *spatial)
    """
    cplx = torch.complex64 if intensity.dtype == torch.float32 else torch.complex128
    i = torch.where(mask, intensity, torch.zeros_like(intensity)).to(cplx)
    ac = inverse_farfield(i, ndim).abs()
    ac = blur(ac, 1.0, ndim)
    peak = ac.amax()
    view = (-1,) + (1,) * ndim
    return ac.unsqueeze(0) > thresholds.reshape(view) * peak


def shrinkwrap(x: torch.Tensor, support: torch.Tensor, sigma: float, threshold: float,
               method: str, ndim: int) -> torch.Tensor:
    """New supports from the blurred amplitude of `x`.

    Parameters
    ----------
    x : torch.Tensor, complex, (runs, *spatial)
    support : torch.Tensor, bool, (runs, *spatial)
        Current supports (used by the ``rms`` threshold).
    sigma : float
        Gaussian width [pixels].
    threshold : float
        Relative threshold.
    method : {"max", "rms"}
        ``max``: keep pixels above ``threshold * max(blurred)`` (Marchesini);
        ``rms``: above ``threshold * rms(blurred inside the support)`` (PyNX).
    """
    b = blur(x.abs(), sigma, ndim)
    dims = tuple(range(-ndim, 0))
    view = (-1,) + (1,) * ndim
    if method == "max":
        ref = b.amax(dim=dims)
    elif method == "rms":
        n = support.sum(dim=dims).clamp_min(1)
        ref = torch.sqrt((torch.where(support, b, torch.zeros_like(b)) ** 2).sum(dim=dims) / n)
    else:
        raise ValueError(f"unknown shrinkwrap threshold method {method!r}")
    return b > threshold * ref.reshape(view)
