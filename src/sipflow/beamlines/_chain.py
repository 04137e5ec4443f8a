"""The rotation chain of a diffractometer: one implementation of the circles' algebra.

Frame: the CXI laboratory frame, ``x`` outboard, ``y`` up, ``z`` downstream along the
beam (right-handed); vectors are (x, y, z). An axis string is xrayutilities' (``"y+"``:
right-handed about +y, ``"x-"``: left-handed about +x); the older ``"y"`` / ``"-x"``
spelling is accepted too. Circles are listed outermost first, so a chain's matrix is
``R = R_1 R_2 ... R_n``: an inner circle turns with every circle outside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..contracts import BeamlinePreset, Circle

_UNIT = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0]),
         "z": np.array([0.0, 0.0, 1.0])}


def axis_vector(axis: str) -> np.ndarray:
    """Signed unit vector (x, y, z) of ``"x+"``, ``"y-"``, ``"-z"``, ``"x"``, ..."""
    a = axis.strip().lower()
    sign = -1.0 if (a.startswith("-") or a.endswith("-")) else 1.0
    name = a.strip("+-")
    if name not in _UNIT:
        raise ValueError(f"an axis is x, y or z with a sense (x+, y-, ...), got {axis!r}")
    return sign * _UNIT[name]


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """Matrix (acting on (x, y, z) vectors) of a rotation by `angle_deg` about `axis`.

    Right-handed about the signed axis: ``rotation("x-", a) == rotation("x+", -a)``.
    """
    u = axis_vector(axis)
    t = np.radians(angle_deg)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def chain(circles: Sequence[Circle], angles: Mapping[str, float]) -> np.ndarray:
    """``R_1 R_2 ... R_n`` of `circles` (outermost first) at ``angles[name] + offset``."""
    r = np.eye(3)
    for c in circles:
        r = r @ rotation(c.axis, float(angles[c.name]) + c.offset_deg)
    return r


@dataclass(frozen=True)
class Diffractometer:
    """A preset at one set of circle positions.

    Parameters
    ----------
    preset : BeamlinePreset
    angles : mapping of str to float
        Position of every circle of `preset` [deg], by circle name.
    """

    preset: BeamlinePreset
    angles: Mapping[str, float]

    def __post_init__(self) -> None:
        missing = [c.name for c in (*self.preset.sample_circles,
                                    *self.preset.detector_circles) if c.name not in self.angles]
        if missing:
            raise ValueError(f"beamline {self.preset.name!r}: no position for the circle(s) "
                             f"{', '.join(missing)}")

    def sample_matrix(self) -> np.ndarray:
        """Rotation of the sample circles (sample frame to lab frame), (3, 3)."""
        return chain(self.preset.sample_circles, self.angles)

    def detector_matrix(self) -> np.ndarray:
        """Rotation of the detector arm (its frame at zero angles to the lab), (3, 3)."""
        return chain(self.preset.detector_circles, self.angles)

    def rocking_axis(self, circle: str) -> np.ndarray:
        """Lab-frame axis (x, y, z) of the sample circle `circle` at these positions.

        The circle's own axis turned by every sample circle outside it.
        """
        outer: list[Circle] = []
        for c in self.preset.sample_circles:
            if c.name == circle:
                return chain(outer, self.angles) @ axis_vector(c.axis)
            outer.append(c)
        raise ValueError(f"beamline {self.preset.name!r} has no sample circle {circle!r} "
                         f"(sample circles: "
                         f"{', '.join(c.name for c in self.preset.sample_circles)})")

    def pixel_directions(self) -> tuple[np.ndarray, np.ndarray]:
        """Lab directions (x, y, z) of increasing row and column, arm turned."""
        d = self.detector_matrix()
        rows, cols = self.preset.pixel_directions
        return d @ axis_vector(rows), d @ axis_vector(cols)

    def exit_directions(self, rows: np.ndarray, cols: np.ndarray, centre: Sequence[float],
                        distance: float, pixel: Sequence[float]) -> np.ndarray:
        """Unit vectors (n, 3) from the sample to pixels (`rows`, `cols`).

        Parameters
        ----------
        rows, cols : array of float, shape (n,)
            Pixel indices on the detector.
        centre : (float, float)
            (row, col) of the pixel on the beam with every detector circle at 0.
        distance : float
            Sample to that pixel, in the unit of `pixel`.
        pixel : (float, float)
            Pixel size (row, col), in the unit of `distance`.
        """
        d = self.detector_matrix()
        r_dir, c_dir = (axis_vector(a) for a in self.preset.pixel_directions)
        rows = np.asarray(rows, np.float64).ravel()
        cols = np.asarray(cols, np.float64).ravel()
        local = (distance * np.array([0.0, 0.0, 1.0])[None, :]
                 + ((rows - centre[0]) * pixel[0])[:, None] * r_dir[None, :]
                 + ((cols - centre[1]) * pixel[1])[:, None] * c_dir[None, :])
        v = local @ d.T
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def q_lab(self, rows: np.ndarray, cols: np.ndarray, centre: Sequence[float],
              distance: float, pixel: Sequence[float], wavelength: float) -> np.ndarray:
        """Scattering vectors ``k (n_out - z)`` of pixels, lab frame, (n, 3) (x, y, z).

        In the inverse of `wavelength`'s unit, times 2π.
        """
        k = 2 * np.pi / wavelength
        n = self.exit_directions(rows, cols, centre, distance, pixel)
        return k * (n - np.array([0.0, 0.0, 1.0])[None, :])

    def q_sample(self, rows: np.ndarray, cols: np.ndarray, centre: Sequence[float],
                 distance: float, pixel: Sequence[float], wavelength: float) -> np.ndarray:
        """:meth:`q_lab` in the sample's frame (the lab frame at zero sample angles)."""
        return self.q_lab(rows, cols, centre, distance, pixel, wavelength) @ \
            self.sample_matrix()
