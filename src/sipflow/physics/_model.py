"""The far-field measurement model: ``I = blur(|F x|^2) + background`` on a masked detector.

One object that every stage uses to go from an object to what the detector sees:
the classical engine (through its fused fast forms, tested equal), the simulator,
the metrics, and any autograd-based stage (deep priors, refinement). Works on
torch tensors on any device (differentiable) and on numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ._farfield import spatial_dims

Layout = Literal["centred", "unshifted"]
#: a partial-coherence model: maps |F x|^2 (real, (..., *spatial)) to the blurred intensity
Coherence = Callable[[torch.Tensor], torch.Tensor]


def _is_numpy(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def _to_torch(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if _is_numpy(x) else x


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


def gaussian_coherence(sigma: float, ndim: int) -> Coherence:
    """Partial coherence as a Gaussian blur of the intensity, width `sigma` [detector pixels].

    The mutual coherence function is taken as Gaussian (the usual first model of a
    partially coherent beam); blurring ``|F x|^2`` by its Fourier transform is the
    measured intensity. Periodic boundaries; layout-independent.
    """
    def blur(intensity: torch.Tensor) -> torch.Tensor:
        dims = spatial_dims(ndim)
        transfer = gaussian_transfer(tuple(intensity.shape[-ndim:]), sigma, intensity.device,
                                     intensity.dtype)
        return torch.fft.ifftn(torch.fft.fftn(intensity, dim=dims) * transfer, dim=dims).real

    return blur


@dataclass(frozen=True)
class FarField:
    """Fraunhofer diffraction of a complex object onto a pixel detector.

    Conventions: the transform is unitary (``norm="ortho"``), so
    ``sum |x|^2 == sum |F x|^2`` and the expected counts are ``|F x|^2`` [photons]
    with no extra scale. In the ``centred`` layout the origin (q = 0, and the
    object's centre) is at index ``n // 2`` of every axis (``numpy.fft.fftshift``);
    in ``unshifted`` it is at index 0 (what iterative loops use, no shifts).

    Parameters
    ----------
    ndim : int
        Spatial dimensions (2 or 3); leading dimensions are batch (e.g. runs).
    layout : {"centred", "unshifted"}
        Layout of objects and of detector arrays.
    mask : array, bool, (*spatial), optional
        Measured pixels (True = valid); default all.
    free : array, bool, (*spatial), optional
        Valid pixels held out of fitting and scored by the free LLK.
    background : array or float, optional
        Incoherent background added to the intensity [photons per pixel].
    coherence : callable, optional
        Partial-coherence model (e.g. :func:`gaussian_coherence`), applied to
        ``|F x|^2`` before the background. An extension point: any differentiable
        map of intensities.
    """

    ndim: int = 2
    layout: Layout = "centred"
    mask: Any = None
    free: Any = None
    background: Any = None
    coherence: Coherence | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        return spatial_dims(self.ndim)

    # -- propagation -------------------------------------------------------------------
    def propagate(self, x):
        """``F x``: object (complex, (..., *spatial)) to detector field, same layout.

        Torch in, torch out (differentiable, any device); numpy in, numpy out.
        """
        return self._transform(x, inverse=False)

    def backpropagate(self, f):
        """``F^-1 f`` (= ``F^H f``, the adjoint: the transform is unitary)."""
        return self._transform(f, inverse=True)

    def _transform(self, x, inverse: bool):
        """The unitary FFT (or its inverse) of the spatial axes, in this model's layout."""
        centred = self.layout == "centred"
        if _is_numpy(x):
            axes = self.dims
            fft = np.fft.ifftn if inverse else np.fft.fftn
            x = np.fft.ifftshift(x, axes=axes) if centred else x
            out = fft(x, axes=axes, norm="ortho")
            return np.fft.fftshift(out, axes=axes) if centred else out
        fft = torch.fft.ifftn if inverse else torch.fft.fftn
        x = torch.fft.ifftshift(x, dim=self.dims) if centred else x
        out = fft(x, dim=self.dims, norm="ortho")
        return torch.fft.fftshift(out, dim=self.dims) if centred else out

    # -- measurement -------------------------------------------------------------------
    def intensity(self, x):
        """Expected counts ``coherence(|F x|^2) + background`` [photons], real, (..., *spatial)."""
        numpy_in = _is_numpy(x)
        f = self.propagate(_to_torch(x))
        out = f.real**2 + f.imag**2
        if self.coherence is not None:
            out = self.coherence(out)
        if self.background is not None:
            out = out + torch.as_tensor(self.background, dtype=out.dtype, device=out.device)
        return out.numpy() if numpy_in else out

    def valid(self, like) -> Any:
        """Pixels that are fitted: measured and not held out (bool, (*spatial))."""
        shape = tuple(like.shape[-self.ndim:])
        if _is_numpy(like):
            m = np.ones(shape, bool) if self.mask is None else np.asarray(self.mask, bool)
            return m & ~np.asarray(self.free, bool) if self.free is not None else m
        device = like.device
        m = (torch.ones(shape, dtype=torch.bool, device=device) if self.mask is None
             else torch.as_tensor(self.mask, device=device).bool())
        if self.free is not None:
            m = m & ~torch.as_tensor(self.free, device=device).bool()
        return m

    def simulate(self, x: np.ndarray, photons: float | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, float]:
        """Poisson counts of the object `x` scaled to `photons` in total.

        Parameters
        ----------
        x : ndarray, complex, (*spatial)
        photons : float or None
            Total expected photons; None: noiseless, unscaled ``intensity(x)``.
        rng : numpy.random.Generator

        Returns
        -------
        counts : ndarray, float64, (*spatial)
            Zero on unmeasured pixels.
        scale : float
            Factor applied to the expected intensity (``x`` scales by its square root).
        """
        expected = np.asarray(self.intensity(np.asarray(x, np.complex128)), np.float64)
        scale = 1.0
        if photons is not None:
            scale = photons / expected.sum()
            expected = expected * scale
            counts = rng.poisson(expected).astype(np.float64)
        else:
            counts = expected.copy()
        if self.mask is not None:
            counts[~np.broadcast_to(np.asarray(self.mask, bool), counts.shape)] = 0
        return counts, float(scale)
