"""Partial coherence as a point-spread kernel on the intensity, and its Richardson–Lucy update.

A partially coherent beam measures ``I = K ⊛ |F x|^2``: the coherent pattern blurred
by an incoherent kernel ``K`` (non-negative, summing to 1; the Fourier transform of the
mutual coherence function). PyNX and cohere estimate ``K`` during phasing by
Richardson–Lucy deconvolution steps on the current coherent pattern; the same
functions serve the classical engine, the forward model (:func:`kernel_coherence` as
``FarField(coherence=...)``), deep priors and refinement.

Conventions: kernels have their origin at index 0 of every axis (``unshifted``), so
that convolving by FFT leaves an array in place in either layout; convolutions are
periodic. Everything is batched over leading axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def _dims(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


def gaussian_kernel(shape: tuple[int, ...], sigma: float, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A normalised Gaussian kernel of width `sigma` [pixels], origin at index 0.

    Parameters
    ----------
    shape : tuple of int
        Detector shape (2-D or 3-D).
    sigma : float
        Standard deviation along every axis [pixels]; 0 gives the identity (a delta).

    Returns
    -------
    (*shape) real tensor summing to 1.
    """
    total = torch.zeros(shape, dtype=dtype, device=device)
    for axis, n in enumerate(shape):
        r = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)  # signed distance
        view = [1] * len(shape)
        view[axis] = n
        total = total + (r**2).reshape(view)
    if sigma <= 0:
        k = (total == 0).to(dtype)
    else:
        k = torch.exp(-total / (2 * sigma**2))
    return k / k.sum()


def blur(intensity: torch.Tensor, kernel_f: torch.Tensor, ndim: int) -> torch.Tensor:
    """``K ⊛ intensity`` given ``kernel_f = fftn(K)`` (periodic, real, non-negative output)."""
    dims = _dims(ndim)
    out = torch.fft.ifftn(torch.fft.fftn(intensity, dim=dims) * kernel_f, dim=dims).real
    return out.clamp_min(0)


def kernel_coherence(kernel: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward model's partial-coherence callable for a kernel (origin at index 0).

    ``FarField(ndim, coherence=kernel_coherence(k))`` predicts ``K ⊛ |F x|^2``.
    """
    ndim = kernel.ndim
    kf = torch.fft.fftn(kernel, dim=_dims(ndim))

    def apply(intensity: torch.Tensor) -> torch.Tensor:
        return blur(intensity, kf.to(device=intensity.device,
                                     dtype=torch.complex128 if intensity.dtype == torch.float64
                                     else torch.complex64), ndim)

    return apply


def richardson_lucy_kernel(kernel: torch.Tensor, coherent: torch.Tensor, measured: torch.Tensor,
                           valid: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Update the kernel so that ``K ⊛ coherent`` fits `measured` (Richardson–Lucy on K).

    .. math:: K \\leftarrow K \\cdot \\frac{\\left(\\frac{I_{obs}}{K \\circledast I_c}
              \\right) \\star I_c}{\\sum I_c}

    with ``⋆`` the correlation; unmeasured pixels contribute a ratio of 1. The
    multiplicative update keeps ``K >= 0``; it is renormalised to sum 1 (the total
    flux belongs to the object, not to the kernel).

    Parameters
    ----------
    kernel : (..., *spatial) real, origin at index 0, sums to 1
    coherent : (..., *spatial) real, ``|F x|^2`` of the current object [photons]
    measured : (*spatial) real [photons]
    valid : (*spatial) bool, pixels to fit
    iterations : int

    Returns
    -------
    The updated kernel, same shape.
    """
    ndim = measured.ndim
    dims = _dims(ndim)
    cf = torch.fft.fftn(coherent, dim=dims)
    total = coherent.sum(dim=dims, keepdim=True).clamp_min(torch.finfo(coherent.dtype).tiny)
    tiny = 1e-12 * float(measured.max().clamp_min(1.0))
    k = kernel
    for _ in range(iterations):
        conv = torch.fft.ifftn(cf * torch.fft.fftn(k, dim=dims), dim=dims).real
        ratio = torch.where(valid, measured / conv.clamp_min(tiny), 1.0)
        corr = torch.fft.ifftn(torch.fft.fftn(ratio, dim=dims) * cf.conj(), dim=dims).real
        k = (k * corr / total).clamp_min(0)
        k = k / k.sum(dim=dims, keepdim=True).clamp_min(torch.finfo(k.dtype).tiny)
    return k


def kernel_width(kernel: torch.Tensor) -> list[float]:
    """RMS width of a kernel (origin at index 0) along each axis [pixels]."""
    ndim = kernel.ndim
    out = []
    for axis, n in enumerate(kernel.shape):
        r = torch.fft.fftfreq(n, d=1.0 / n, dtype=kernel.dtype, device=kernel.device)
        other = tuple(d for d in range(ndim) if d != axis)
        profile = kernel.sum(dim=other) if other else kernel
        out.append(math.sqrt(max(float((profile * r**2).sum() / profile.sum()), 0.0)))
    return out
