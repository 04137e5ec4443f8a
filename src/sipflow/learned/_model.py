"""The end-to-end far-field network: measured pattern in, complex object out.

The network does not see the pattern itself but its Fourier transform, the
autocorrelation of the object (the Patterson map): a real-space image on the
object's own grid, so that a convolutional encoder-decoder (the
:class:`~sipflow.priors.SkipNet` of the deep priors) maps like to like. The
autocorrelation is invariant under the whole far-field group, which is why the
training targets must be symmetry-broken (:mod:`sipflow.symmetry`).

Scales: the input is divided by its value at the origin (the total counts), the
target is the object times ``sqrt(N / total counts)`` (``N`` pixels), whose RMS
over the array is 1 by Parseval; :func:`object_scale` undoes it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..physics import FarField
from ..priors import SkipNet

#: input channels: real and imaginary part of the normalised autocorrelation
IN_CHANNELS = 2


def features(counts: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None
             ) -> torch.Tensor:
    """Network input of one or more centred patterns: ``(..., 2, *spatial)`` float32.

    Parameters
    ----------
    counts : (..., H, W) measured photons, q = 0 at the array centre
    mask : (..., H, W) bool, True = measured; unmeasured pixels count as zero
    """
    i = torch.as_tensor(counts, dtype=torch.float64)
    if mask is not None:
        i = i * torch.as_tensor(mask, dtype=torch.bool)
    ac = FarField(2).backpropagate(i.to(torch.complex128))
    centre = tuple(n // 2 for n in i.shape[-2:])
    origin = ac[(..., *centre)].real.clamp_min(1e-12)
    ac = ac / origin[..., None, None]
    return torch.stack([ac.real, ac.imag], dim=-3).to(torch.float32)


def object_scale(counts: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None = None
                 ) -> float:
    """``sqrt(total counts / N)``: the network's output times this is the object [sqrt(photons)]."""
    i = np.asarray(counts, np.float64)
    if mask is not None:
        i = i * np.asarray(mask, bool)
    return math.sqrt(max(float(i.sum()), 1.0) / i.size)


def to_complex(out: torch.Tensor) -> torch.Tensor:
    """``(..., 2, H, W)`` real/imaginary channels to a complex ``(..., H, W)`` tensor."""
    return torch.complex(out[..., 0, :, :].float(), out[..., 1, :, :].float())


def from_complex(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(..., H, W)`` to ``(..., 2, H, W)`` real/imaginary channels."""
    return torch.stack([x.real, x.imag], dim=-3).to(torch.float32)


class LearnedInverse(nn.Module):
    """Autocorrelation ``(B, 2, H, W)`` -> object ``(B, 2, H, W)`` (real, imaginary), a SkipNet.

    Parameters
    ----------
    width, depth, skip : int
        As :class:`~sipflow.priors.SkipNet` (channels per level, levels, skip channels).
    """

    def __init__(self, width: int = 32, depth: int = 4, skip: int = 4) -> None:
        super().__init__()
        self.net = SkipNet(ndim=2, in_channels=IN_CHANNELS, out_channels=2, width=width,
                           depth=depth, skip=skip)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.net(a)
