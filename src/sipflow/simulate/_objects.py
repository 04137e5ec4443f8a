"""Test objects: complex 2-D and 3-D arrays with a smooth phase field."""

from __future__ import annotations

import numpy as np

SHAPES = {2: ("blob", "ellipse", "hexagon", "cells", "lithograph"),
          3: ("crystal", "ellipsoid", "blob")}


def _lithograph(r: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A lithographed test pattern: sharp-edged bars, a ring with a hole, blocks, fine lines.

    Coordinates `r` are scaled so that the object fills |r| <= 1 on both axes; the
    layout (bar widths, positions, which features) is drawn from `rng`.
    """
    y, x = r
    inside = np.zeros(y.shape, bool)
    # a frame of bars of decreasing width on the left (fine detail, several widths)
    x0 = -0.95
    for width in rng.permutation([0.16, 0.11, 0.08, 0.06, 0.04]):
        inside |= (x >= x0) & (x < x0 + width) & (np.abs(y + 0.05) <= 0.75)
        x0 += 2 * width
    # a ring with a hole (non-convex: the support must not fill it)
    cy, cx = rng.uniform(-0.45, -0.25), rng.uniform(0.3, 0.5)
    rr = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    inside |= (rr <= rng.uniform(0.38, 0.45)) & (rr >= rng.uniform(0.18, 0.24))
    # an L-shaped block and a small square (asymmetric: the twin is distinguishable)
    by, bx = rng.uniform(0.35, 0.55), rng.uniform(0.05, 0.25)
    inside |= (y >= by) & (y <= by + 0.4) & (x >= bx) & (x <= bx + 0.15)
    inside |= (y >= by + 0.25) & (y <= by + 0.4) & (x >= bx) & (x <= bx + 0.6)
    sy, sx = rng.uniform(-0.9, -0.75), rng.uniform(-0.1, 0.1)
    inside |= (np.abs(y - sy) <= 0.07) & (np.abs(x - sx) <= 0.07)
    return inside & (np.abs(y) <= 1) & (np.abs(x) <= 1)


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [np.arange(n) - n // 2 for n in shape]


def _smooth_field(shape: tuple[int, ...], width: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise, normalised to [-1, 1]."""
    noise = rng.standard_normal(shape)
    f = np.fft.fftn(noise)
    k2 = sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 for n in shape], indexing="ij"))
    field = np.fft.ifftn(f * np.exp(-2 * np.pi**2 * width**2 * k2)).real
    return field / max(np.abs(field).max(), 1e-12)


def make_object(shape: tuple[int, ...], kind: str = "blob", *, extent: float = 0.4,
                phase_amplitude: float = 1.0, rng: np.random.Generator | None = None
                ) -> np.ndarray:
    """A complex object centred in an array of `shape`.

    Parameters
    ----------
    shape : tuple of int
        Array shape, 2-D or 3-D [pixels].
    kind : str
        2-D: ``blob``, ``ellipse``, ``hexagon``, ``cells``, ``lithograph`` (a real,
        non-negative test pattern with sharp edges, fine bars and a ring with a hole,
        as measured in forward CDI; uniform amplitude, no phase); 3-D: ``crystal`` (faceted),
        ``ellipsoid``, ``blob``.
    extent : float
        Object size as a fraction of the array per axis (<= 0.5 keeps the data
        oversampled at least twice).
    phase_amplitude : float
        Peak of the smooth phase field [rad] (strain-like in 3-D).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, complex128, `shape`; amplitude in [0, 1].
    """
    rng = rng or np.random.default_rng(0)
    ndim = len(shape)
    if kind not in SHAPES.get(ndim, ()):
        raise ValueError(f"unknown {ndim}-D shape {kind!r}; choose from {SHAPES.get(ndim)}")
    coords = np.meshgrid(*_grid(shape), indexing="ij")
    radius = [extent * n / 2 for n in shape]
    r = [c / rad for c, rad in zip(coords, radius, strict=True)]
    if kind in ("ellipse", "ellipsoid"):
        inside = sum(v**2 for v in r) <= 1.0
    elif kind == "hexagon":
        y, x = r
        inside = np.ones(shape, bool)
        for angle in np.arange(6) * np.pi / 3 + 0.2:
            inside &= x * np.cos(angle) + y * np.sin(angle) <= 0.9
    elif kind == "crystal":
        z, y, x = r
        octa = np.abs(x) + np.abs(y) + np.abs(z) <= 1.35
        cube = (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85) & (np.abs(z) <= 0.85)
        inside = octa & cube
    elif kind == "cells":
        inside = np.zeros(shape, bool)
        for _ in range(5):
            centre = rng.uniform(-0.55, 0.55, size=2)
            rad = rng.uniform(0.25, 0.4)
            inside |= (r[0] - centre[0]) ** 2 + (r[1] - centre[1]) ** 2 <= rad**2
    elif kind == "lithograph":
        inside = _lithograph(r, rng)
        return inside.astype(np.complex128)
    else:  # blob
        field = _smooth_field(shape, width=min(shape) * extent / 6, rng=rng)
        envelope = sum(v**2 for v in r)
        inside = (envelope + 0.6 * field) <= 0.8
        inside &= envelope <= 1.0
    amplitude = inside * (0.8 + 0.2 * _smooth_field(shape, min(shape) / 16, rng))
    phase = phase_amplitude * _smooth_field(shape, min(shape) * extent / 4, rng)
    return (amplitude * np.exp(1j * phase * inside)).astype(np.complex128)
