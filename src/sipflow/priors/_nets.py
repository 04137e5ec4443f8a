"""Generator networks for deep priors: the skip (U-Net style) network of Ulyanov et al."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

Upsample = Literal["nearest", "linear"]


def _layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module]]:
    if ndim == 2:
        return nn.Conv2d, nn.BatchNorm2d
    if ndim == 3:
        return nn.Conv3d, nn.BatchNorm3d
    raise ValueError(f"generators are 2-D or 3-D, got ndim={ndim}")


class _Block(nn.Sequential):
    """Convolution (reflection-padded), batch norm, leaky ReLU."""

    def __init__(self, ndim: int, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        conv, norm = _layers(ndim)
        super().__init__(conv(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              padding_mode="zeros", bias=False),
                         norm(cout), nn.LeakyReLU(0.2, inplace=True))


class _Level(nn.Module):
    """One level of the skip network: skip branch beside a down-deeper-up branch."""

    def __init__(self, ndim: int, cin: int, width: int, skip: int, deeper: nn.Module | None,
                 mode: str) -> None:
        super().__init__()
        _, norm = _layers(ndim)
        self.skip = _Block(ndim, cin, skip, 1) if skip else None
        self.down = nn.Sequential(_Block(ndim, cin, width, 3, stride=2),
                                  _Block(ndim, width, width, 3))
        self.deeper = deeper
        self.mode = mode
        self.norm = norm(skip + width)
        self.up = nn.Sequential(_Block(ndim, skip + width, width, 3),
                                _Block(ndim, width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = nn.functional.interpolate(y, size=x.shape[2:], mode=self.mode,
                                      **({} if self.mode == "nearest" else
                                         {"align_corners": False}))
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.up(self.norm(y))


class SkipNet(nn.Module):
    """Encoder-decoder with skip connections, the generator of the deep image prior.

    Each of `depth` levels halves the grid with a stride-2 convolution, goes deeper,
    upsamples back and concatenates a narrow skip branch (1×1 convolution) of its
    input before two convolutions (Ulyanov et al., "skip" architecture). Batch norm
    and leaky ReLU after every convolution; reflection padding; a 1×1 output layer
    with no activation (heads are the caller's: amplitude, phase, ...).

    Parameters
    ----------
    ndim : int
        2 or 3 spatial dimensions.
    in_channels, out_channels : int
    width : int
        Channels of every level.
    depth : int
        Levels; the input's spatial size need not be a multiple of ``2**depth``.
    skip : int
        Channels of each skip branch (0: plain encoder-decoder).
    upsample : {"nearest", "linear"}
        Upsampling (``linear`` is bilinear in 2-D, trilinear in 3-D).

    Input ``(batch, in_channels, *spatial)``, output ``(batch, out_channels, *spatial)``.
    """

    def __init__(self, ndim: int = 2, in_channels: int = 32, out_channels: int = 2,
                 width: int = 64, depth: int = 5, skip: int = 4,
                 upsample: Upsample = "linear") -> None:
        super().__init__()
        conv, _ = _layers(ndim)
        mode = {"nearest": "nearest", "linear": "bilinear" if ndim == 2 else "trilinear"}[
            upsample]
        deeper: nn.Module | None = None
        for level in reversed(range(depth)):
            deeper = _Level(ndim, in_channels if level == 0 else width, width, skip, deeper,
                            mode)
        self.body = deeper if deeper is not None else _Block(ndim, in_channels, width, 3)
        self.head = conv(width, out_channels, 1)
        self.ndim = ndim
        self.depth = depth

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


class MLP(nn.Sequential):
    """Fully connected network: ``layers`` hidden layers of `width` units, ReLU, linear output.

    The end-to-end regressor of low-dimensional inverse problems (e.g. real Gaussian
    phase retrieval ``y = |A x|^2``). Input ``(batch, in_features)``, output
    ``(batch, out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, width: int = 256,
                 layers: int = 3) -> None:
        dims = [in_features] + [width] * layers
        body: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            body += [nn.Linear(a, b), nn.ReLU()]
        super().__init__(*body, nn.Linear(dims[-1], out_features))


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a network) with torch's CPU generator seeded, then restore it.

    Network initialisation draws from the global generator; this keeps a stage
    reproducible without changing anybody else's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def noise_input(shape: tuple[int, ...], channels: int, seed: int, scale: float = 0.1,
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                kind: Literal["uniform", "normal", "meshgrid"] = "uniform") -> torch.Tensor:
    """The fixed random input ``z`` of a deep prior, ``(1, channels, *shape)``.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape [pixels].
    channels : int
    seed : int
    scale : float
        ``uniform``: U(0, scale); ``normal``: N(0, scale²).
    kind : {"uniform", "normal", "meshgrid"}
        ``meshgrid``: the coordinates of each axis in [0, 1] (2 or 3 channels,
        repeated to `channels`), a smooth input.
    """
    g = torch.Generator().manual_seed(seed)
    size = (1, channels, *shape)
    if kind == "uniform":
        z = torch.rand(size, generator=g, dtype=torch.float64) * scale
    elif kind == "normal":
        z = torch.randn(size, generator=g, dtype=torch.float64) * scale
    elif kind == "meshgrid":
        grids = torch.meshgrid(*[torch.linspace(0, 1, n, dtype=torch.float64) for n in shape],
                               indexing="ij")
        reps = math.ceil(channels / len(shape))
        z = torch.stack(list(grids) * reps)[:channels].unsqueeze(0)
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return z.to(device=device, dtype=dtype)
