"""Far-field (Fraunhofer) propagation as unitary FFTs, in torch and numpy.

Conventions: the transform is unitary (``norm="ortho"``), so
``sum |x|^2 == sum |F x|^2`` and a measured intensity is ``I = |F x|^2`` with no
extra scale. *Centred* arrays have their origin (q = 0, or the object's centre)
at index ``n // 2`` of every axis (:func:`numpy.fft.fftshift` convention); the
iterative engines work on unshifted arrays (origin at index 0) to avoid shifts
inside the loop.
"""

from __future__ import annotations

import numpy as np


def spatial_dims(ndim: int) -> tuple[int, ...]:
    """Axes of the last `ndim` dimensions, as negative indices (batch dims stay in front)."""
    return tuple(range(-ndim, 0))


def farfield(x, ndim: int):
    """Unitary FFT of the last `ndim` axes of a torch tensor (unshifted layout).

    Parameters
    ----------
    x : torch.Tensor, complex, shape (..., *spatial)
    ndim : int
        Number of spatial dimensions (2 or 3).
    """
    import torch

    return torch.fft.fftn(x, dim=spatial_dims(ndim), norm="ortho")


def inverse_farfield(f, ndim: int):
    """Inverse of :func:`farfield`."""
    import torch

    return torch.fft.ifftn(f, dim=spatial_dims(ndim), norm="ortho")


def centred_farfield(x: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """Unitary FFT of a centred numpy array, returning a centred array.

    Parameters
    ----------
    x : ndarray, complex, shape (..., *spatial)
        Object with its centre at ``n // 2``.
    ndim : int, optional
        Number of spatial (trailing) axes; default all.
    """
    axes = spatial_dims(ndim or x.ndim)
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"),
                           axes=axes)


def centred_inverse_farfield(f: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """Inverse of :func:`centred_farfield`."""
    axes = spatial_dims(ndim or f.ndim)
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(f, axes=axes), axes=axes, norm="ortho"),
                           axes=axes)
