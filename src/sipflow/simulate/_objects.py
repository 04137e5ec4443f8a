"""Test objects: complex 2-D and 3-D arrays with a smooth phase field."""

from __future__ import annotations

import numpy as np

SHAPES = {2: ("blob", "ellipse", "hexagon", "cells", "lithograph", "logo"),
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


#: 5 x 7 block glyphs of the logo's letters, each one connected piece ('#': filled)
_GLYPHS = {
    "S": ("#####", "#    ", "#    ", "#####", "    #", "    #", "#####"),
    "I": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "#####"),
    "P": ("#####", "#   #", "#   #", "#####", "#    ", "#    ", "#    "),
    "F": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "),
    "L": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "O": ("#####", "#   #", "#   #", "#   #", "#   #", "#   #", "#####"),
    "W": ("#   #", "#   #", "#   #", "# # #", "# # #", "# # #", "#####"),
    "E": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "C": ("#####", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "H": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "U": ("#   #", "#   #", "#   #", "#   #", "#   #", "#   #", "#####"),
}


def _logo(r: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A lithographed logo of 29 disconnected parts, as measured in forward CDI.

    A ring of 20 small discs around an empty disc (upper part), then a bar, a row of
    seven block letters and a second bar. Coordinates `r` are scaled so that the
    logo fills |r| <= 1 on both axes; the letters and small shifts of every part are
    drawn from `rng`. Every part is at least about 0.04 (in `r`) from its neighbours.
    """
    y, x = r
    inside = np.zeros(y.shape, bool)
    # the ring of discs around an empty disc hole
    cy, cx = -0.53 + rng.uniform(-0.02, 0.02), rng.uniform(-0.15, 0.15)
    ring = rng.uniform(0.40, 0.42)
    turn = rng.uniform(0, 2 * np.pi)
    for k in range(20):
        angle = turn + 2 * np.pi * k / 20
        by, bx = cy + ring * np.sin(angle), cx + 1.15 * ring * np.cos(angle)
        inside |= (y - by) ** 2 + (x - bx) ** 2 <= rng.uniform(0.045, 0.052) ** 2
    # two bars around a row of seven block letters
    inside |= (np.abs(y - 0.06) <= 0.07) & (np.abs(x) <= 0.94)
    inside |= (np.abs(y - 0.93) <= 0.07) & (np.abs(x) <= 0.94)
    letters = rng.choice(sorted(_GLYPHS), size=7)
    cell_x, cell_y = 0.05, 0.09  # one glyph pixel; closed cells, so strokes stay joined
    for i, letter in enumerate(letters):
        x0 = -0.94 + i * 0.28
        for row, line in enumerate(_GLYPHS[letter]):
            for col, char in enumerate(line):
                if char == "#":
                    y0 = 0.2 + row * cell_y
                    inside |= ((y >= y0) & (y <= y0 + cell_y)
                               & (x >= x0 + col * cell_x) & (x <= x0 + (col + 1) * cell_x))
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
        as measured in forward CDI; uniform amplitude, no phase), ``logo`` (a lithographed
        logo of 29 disconnected parts: a ring of 20 discs, seven block letters between two
        bars; real, uniform amplitude); 3-D: ``crystal`` (faceted),
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
    elif kind in ("lithograph", "logo"):
        inside = (_lithograph if kind == "lithograph" else _logo)(r, rng)
        return inside.astype(np.complex128)
    else:  # blob
        field = _smooth_field(shape, width=min(shape) * extent / 6, rng=rng)
        envelope = sum(v**2 for v in r)
        inside = (envelope + 0.6 * field) <= 0.8
        inside &= envelope <= 1.0
    amplitude = inside * (0.8 + 0.2 * _smooth_field(shape, min(shape) / 16, rng))
    phase = phase_amplitude * _smooth_field(shape, min(shape) * extent / 4, rng)
    return (amplitude * np.exp(1j * phase * inside)).astype(np.complex128)
