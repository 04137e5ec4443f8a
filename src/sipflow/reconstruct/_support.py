"""Support estimation: autocorrelation start and shrinkwrap (Marchesini 2003)."""

from __future__ import annotations

import numpy as np
import torch

from ..physics import farfield, gaussian_transfer, inverse_farfield
from ..symmetry import circular_centroid


def blur(amplitude: torch.Tensor, sigma: float, ndim: int) -> torch.Tensor:
    """Gaussian blur of the last `ndim` axes of a real tensor (periodic boundaries)."""
    g = gaussian_transfer(tuple(amplitude.shape[-ndim:]), sigma, amplitude.device,
                          amplitude.dtype)
    return inverse_farfield(farfield(amplitude.to(torch.complex64 if amplitude.dtype ==
                                                  torch.float32 else torch.complex128), ndim)
                            * g, ndim).real


def fill_missing_centre(intensity: torch.Tensor, mask: torch.Tensor, ndim: int
                        ) -> torch.Tensor:
    """Intensity with the unmeasured disc around q = 0 filled, for the autocorrelation.

    A beamstop removes the forward peak, which carries most of the photons: the
    autocorrelation then loses its central maximum and a threshold relative to it
    takes most of the array (an exploding first support). Filling the hidden disc
    with the brightest measured value just outside it puts a peak of the right
    order back. Other masked pixels stay zero.

    Parameters
    ----------
    intensity, mask : torch.Tensor, (*spatial), unshifted (q = 0 at index 0)
    """
    out = torch.where(mask, intensity, torch.zeros_like(intensity))
    if bool(mask.reshape(-1)[0]) or not bool(mask.any()):  # q = 0 measured, or nothing is
        return out
    freqs = [torch.fft.fftfreq(n, device=mask.device, dtype=torch.float64) * n
             for n in mask.shape[-ndim:]]
    r = torch.sqrt(sum(g**2 for g in torch.meshgrid(*freqs, indexing="ij")))
    inner = float(r[mask].min())  # radius of the innermost measured pixel
    ring = mask & (r <= inner + 1.5)
    hidden = ~mask & (r < inner)
    return torch.where(hidden, intensity[ring].max(), out)


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
    i = fill_missing_centre(intensity, mask, ndim).to(cplx)
    ac = inverse_farfield(i, ndim).abs()
    ac = blur(ac, 1.0, ndim)
    peak = ac.amax()
    view = (-1,) + (1,) * ndim
    return ac.unsqueeze(0) > thresholds.reshape(view) * peak


def shrinkwrap(x: torch.Tensor, support: torch.Tensor, sigma: float,
               threshold: float | torch.Tensor, method: str, ndim: int) -> torch.Tensor:
    """New supports from the blurred amplitude of `x`.

    Parameters
    ----------
    x : torch.Tensor, complex, (runs, *spatial)
    support : torch.Tensor, bool, (runs, *spatial)
        Current supports (used by the ``rms`` threshold).
    sigma : float
        Gaussian width [pixels].
    threshold : float or torch.Tensor, real, (runs,)
        Relative threshold, one for all runs or one per run.
    method : {"max", "rms", "average"}
        ``max``: keep pixels above ``threshold * max(blurred)`` (Marchesini);
        ``rms``: above ``threshold * rms(blurred inside the support)`` (PyNX);
        ``average``: above ``threshold * mean(blurred inside the support)``.
    """
    b = blur(x.abs(), sigma, ndim)
    dims = tuple(range(-ndim, 0))
    view = (-1,) + (1,) * ndim
    if method == "max":
        ref = b.amax(dim=dims)
    elif method == "rms":
        n = support.sum(dim=dims).clamp_min(1)
        ref = torch.sqrt((torch.where(support, b, torch.zeros_like(b)) ** 2).sum(dim=dims) / n)
    elif method == "average":
        n = support.sum(dim=dims).clamp_min(1)
        ref = torch.where(support, b, torch.zeros_like(b)).sum(dim=dims) / n
    else:
        raise ValueError(f"unknown shrinkwrap threshold method {method!r}")
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.to(ref.dtype).reshape(view)
    return b > threshold * ref.reshape(view)


def morph(support: torch.Tensor, steps: tuple[int, ...], ndim: int) -> torch.Tensor:
    """Dilate (positive step) or erode (negative step) supports by whole pixels.

    Parameters
    ----------
    support : torch.Tensor, bool, (runs, *spatial)
    steps : tuple of int
        Applied in order; ``(-1, 1)`` is an opening that removes one-pixel spurs.
    """
    import torch.nn.functional as F

    pool = F.max_pool2d if ndim == 2 else F.max_pool3d
    out = support.to(torch.float32).unsqueeze(1)
    for step in steps:
        for _ in range(abs(step)):
            if step > 0:
                out = pool(out, 3, stride=1, padding=1)
            else:
                out = -pool(-out, 3, stride=1, padding=1)
    return out.squeeze(1) > 0.5


def detwin(support: torch.Tensor, ndim: int, axis: int = 0) -> torch.Tensor:
    """Keep the half of each support on one side of its centroid along `axis`.

    Breaking the support's centro-symmetry for a few cycles pushes a run out of the
    mixture of the object and its twin (PyNX's Bragg-CDI recipe).
    """
    n = support.shape[-ndim + axis]
    centre = circular_centroid(support, ndim)[:, axis]  # (runs,)
    coord = torch.arange(n, device=support.device, dtype=torch.float64)
    delta = (coord.unsqueeze(0) - centre.unsqueeze(1) + n / 2) % n - n / 2  # (runs, n)
    view = [support.shape[0]] + [1] * ndim
    view[1 + axis] = n
    return support & (delta <= 0).reshape(view)


def shaped_support(shape: tuple[int, ...], kind: str, size: float, device) -> torch.Tensor:
    """A centred circle/sphere or box support, unshifted layout.

    Parameters
    ----------
    kind : {"circle", "box"}
    size : float
        Radius (circle) or half-width (box) as a fraction of each axis.
    """
    coords = torch.meshgrid(*[(torch.arange(n, device=device) - n // 2) / n for n in shape],
                            indexing="ij")
    if kind == "circle":
        inside = sum(c**2 for c in coords) <= size**2
    elif kind == "box":
        inside = torch.ones(shape, dtype=torch.bool, device=device)
        for c in coords:
            inside &= c.abs() <= size
    else:
        raise ValueError(f"unknown support shape {kind!r}")
    return torch.fft.ifftshift(inside, dim=tuple(range(len(shape))))


def closed_support(support: np.ndarray, radius: int) -> np.ndarray:
    """A support closed by `radius` one-pixel steps, with its enclosed holes filled.

    A beamstop hides the low spatial frequencies that fill the inside of an object;
    its reconstruction is then dim there and shrinkwrap carves a hole, or a notch
    open to the outside, that no later iteration fills. The closing bridges notches
    narrower than ``2 * radius`` and the fill removes holes of any size, so a run
    started in this support can fill them (the free LLK decides whether it did).

    Parameters
    ----------
    support : numpy.ndarray, bool, (*spatial)
    radius : int
        Closing radius [pixels]; 0: only fill the holes.

    Returns
    -------
    numpy.ndarray, bool, (*spatial)
        A superset of `support`.
    """
    from scipy import ndimage

    support = np.asarray(support, bool)
    out = support
    if radius > 0:
        cross = ndimage.generate_binary_structure(support.ndim, 1)
        pad = 2 * radius  # room to dilate at the edges of the array
        big = np.pad(support, pad)
        closed = ndimage.binary_erosion(ndimage.binary_dilation(big, cross, radius),
                                        cross, radius)
        out = support | closed[tuple(slice(pad, -pad) for _ in range(support.ndim))]
    return ndimage.binary_fill_holes(out)
