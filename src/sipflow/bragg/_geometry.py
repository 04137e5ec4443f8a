"""Diffractometer geometry, the real-space transfer matrix, and orthogonalisation.

Laboratory frame: ``z`` downstream along the incident beam, ``y`` vertical up, ``x``
outboard (right-handed). Arrays in the laboratory frame use the axis order
``(z, y, x)``. A detector-frame array of a rocking scan has axes ``(frame, det_y,
det_x)``: the rocking step, the detector row (downwards on the detector) and column.

Near the Bragg peak, the scattering vector of array index ``s`` is, to first order,
``q(s) = q0 + Q s`` where the columns of ``Q`` are the q steps of one index along each
array axis. The object reconstructed on that array lives on the real-space lattice
``r(s) = R s`` with ``R = 2π Q⁻ᵀ diag(1/N)`` (``N`` the array shape): the real-space
transfer matrix, exact for the linearised sampling. Orthogonalisation interpolates the
object from that oblique lattice onto a regular laboratory grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..beamlines import axis_vector, rotation


@dataclass(frozen=True)
class Geometry:
    """A Bragg-CDI rocking scan's geometry: the detector arm, the pixels and the rock.

    The arm is either a beamline preset's detector circles (`arm`, the matrix of
    :meth:`sipflow.beamlines.Diffractometer.detector_matrix`, with the preset's
    `pixel_directions` and the rocking circle's lab axis) or, without a preset, two
    arms: `delta_deg` about ``y+`` then `gamma_deg` about ``x-`` (APS 34-ID-C's).

    Attributes
    ----------
    wavelength_nm : float
    distance_nm : float
        Sample to detector [nm].
    pixel_nm : (float, float)
        Detector pixel size (row, column) [nm], after any binning of the detector.
    delta_deg : float
        In-plane detector angle: the arm turns about the vertical ``y`` axis towards
        ``+x`` (outboard).
    gamma_deg : float
        Out-of-plane detector angle, turning the arm up out of the horizontal plane.
    rocking_step_deg : float
        Sample rotation per frame (after any binning of frames).
    rocking_axis : str or (float, float, float)
        Lab axis the sample turns about (``y`` for a theta rock at APS 34-ID-C,
        ``x`` for a phi rock with the sample vertical; ``-x`` or ``x-`` reverses it), or
        its (x, y, z) vector (a preset's rocking circle turned by the outer circles).
    offset_px : (float, float)
        (row, col) of the array's centre (the Bragg peak) on the detector, relative to
        the pixel on the arm's axis [pixels of `pixel_nm`]: where :meth:`q_bragg` is
        taken. The q steps are those on the arm's axis (they differ by a fraction of a
        per cent over a detector).
    arm : 3x3 nested tuple of float, optional
        Rotation of the detector arm (x, y, z); default: from `delta_deg`, `gamma_deg`.
    pixel_directions : (str, str)
        Directions of increasing row and column with the arm at 0 (``("y-", "x+")``).

    Notes
    -----
    The exit direction is ``n = (sin δ cos γ, sin γ, cos δ cos γ)`` (x, y, z), so
    ``cos 2θ = cos δ cos γ``. Detector columns run along ``+x`` and rows along ``-y``
    when both angles are 0, and turn with the arm. A sample rotation by ``dθ`` about
    axis ``a`` moves the measured point of the crystal's reciprocal space by
    ``-dθ a × q``.
    """

    wavelength_nm: float
    distance_nm: float
    pixel_nm: tuple[float, float]
    delta_deg: float
    gamma_deg: float
    rocking_step_deg: float
    rocking_axis: str | tuple[float, float, float] = "y"
    offset_px: tuple[float, float] = (0.0, 0.0)
    arm: tuple[tuple[float, float, float], ...] | None = None
    pixel_directions: tuple[str, str] = ("y-", "x+")

    def as_dict(self) -> dict[str, object]:
        """JSON-compatible fields (for result attrs)."""
        from dataclasses import asdict

        d = asdict(self)
        d["pixel_nm"], d["offset_px"] = list(self.pixel_nm), list(self.offset_px)
        if not isinstance(self.rocking_axis, str):
            d["rocking_axis"] = [float(v) for v in self.rocking_axis]
        if self.arm is not None:
            d["arm"] = [[float(v) for v in row] for row in self.arm]
        d["pixel_directions"] = list(self.pixel_directions)
        return d

    def _arm(self) -> np.ndarray:
        if self.arm is not None:
            return np.asarray(self.arm, np.float64)
        return rotation("y+", self.delta_deg) @ rotation("x-", self.gamma_deg)

    def _axis(self) -> np.ndarray:
        if isinstance(self.rocking_axis, str):
            return axis_vector(self.rocking_axis)
        a = np.asarray(self.rocking_axis, np.float64)
        return a / np.linalg.norm(a)

    def q_bragg(self) -> np.ndarray:
        """Scattering vector at the array's centre (see `offset_px`), (z, y, x) [1/nm]."""
        k = 2 * np.pi / self.wavelength_nm
        rows, cols = (axis_vector(a) for a in self.pixel_directions)
        on_detector = (self.offset_px[0] * self.pixel_nm[0] * rows
                       + self.offset_px[1] * self.pixel_nm[1] * cols
                       + np.array([0.0, 0.0, self.distance_nm]))
        n = self._arm() @ (on_detector / np.linalg.norm(on_detector))
        return (k * (n - np.array([0.0, 0.0, 1.0])))[::-1]

    def q_steps(self) -> np.ndarray:
        """``Q``: q step per index of (frame, det_y, det_x), columns, in (z, y, x) [1/nm]."""
        k = 2 * np.pi / self.wavelength_nm
        arm = self._arm()
        rows, cols = (axis_vector(a) for a in self.pixel_directions)
        row = arm @ rows * k * self.pixel_nm[0] / self.distance_nm
        col = arm @ cols * k * self.pixel_nm[1] / self.distance_nm
        q = replace(self, offset_px=(0.0, 0.0)).q_bragg()[::-1]  # on the arm's axis
        rock = -np.radians(self.rocking_step_deg) * np.cross(self._axis(), q)
        return np.stack([rock, row, col], axis=1)[::-1]  # rows (z, y, x)

    def q_vectors(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Scattering vector of every index of a (frame, det_y, det_x) array [1/Å].

        ``q = q_bragg + Q (index - centre)`` with the centre at ``n // 2`` of every
        axis (the recorded Bragg peak after prep.standard's window) and ``Q`` the q
        steps per index (:meth:`q_steps`; linear over the array, to a fraction of a
        per cent).

        Returns
        -------
        ndarray, (3, *shape), float64
            Components (z, y, x) in the laboratory frame [1/Å] (1/nm divided by 10).
        """
        if len(shape) != 3:
            raise ValueError(f"q vectors need a 3-D (frame, det_y, det_x) shape, got {shape}")
        idx = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
        steps = self.q_steps()
        q = self.q_bragg()[:, None, None, None] + np.einsum("ij,j...->i...", steps,
                                                            np.stack(idx).astype(np.float64))
        return q / 10.0


def transfer_matrix(q_steps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Real-space transfer matrix ``R = 2π Q⁻ᵀ diag(1/N)`` [nm].

    Parameters
    ----------
    q_steps : (ndim, ndim) float
        Columns: the q step of one index along each array axis [1/nm].
    shape : tuple of int
        The array shape N.

    Returns
    -------
    (ndim, ndim) float
        Columns: the real-space step of one index along each array axis [nm], in the
        frame of `q_steps`' rows.
    """
    q = np.asarray(q_steps, np.float64)
    if q.shape != (len(shape), len(shape)):
        raise ValueError(f"q_steps must be {len(shape)}×{len(shape)}, got {q.shape}")
    norms = np.linalg.norm(q, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(q)) < 1e-9 * np.prod(norms):
        raise ValueError("the q steps are (nearly) coplanar: the geometry does not sample "
                         "3-D reciprocal space (is the rocking step zero?)")
    return 2 * np.pi * np.linalg.inv(q).T / np.asarray(shape, np.float64)[None, :]


def _interpolate(a: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    if np.iscomplexobj(a):
        return (map_coordinates(a.real, coords, order=order, cval=0.0)
                + 1j * map_coordinates(a.imag, coords, order=order, cval=0.0))
    return map_coordinates(a, coords, order=order, cval=0.0)


def lab_grid(r: np.ndarray, shape: tuple[int, ...], voxel_nm: float | None = None,
             within: np.ndarray | None = None, margin: int = 4
             ) -> tuple[tuple[int, ...], float]:
    """Shape and voxel size of a regular lab grid, centred like the oblique array.

    Parameters
    ----------
    r : (ndim, ndim) float
        Transfer matrix [nm].
    shape : tuple of int
        The oblique array's shape.
    voxel_nm : float, optional
        Default: the smallest real-space step ``min_i |R e_i|``.
    within : bool ndarray of `shape`, optional
        Hold only these elements (e.g. the support) with `margin` voxels around them;
        default: the whole oblique array.
    margin : int

    Returns
    -------
    tuple of int, float
    """
    if voxel_nm is None:
        voxel_nm = float(np.linalg.norm(r, axis=0).min())
    if within is not None and np.any(within):
        idx = np.stack(np.nonzero(within)) - np.array([n // 2 for n in shape])[:, None]
        half = np.abs(r @ idx).max(axis=1) + margin * voxel_nm
    else:
        corners = np.array(np.meshgrid(*[[-n / 2, n / 2] for n in shape], indexing="ij")
                           ).reshape(len(shape), -1)
        half = np.abs(r @ corners).max(axis=1)
    out = tuple(2 * int(np.ceil(h / voxel_nm)) + 1 for h in half)
    return out, float(voxel_nm)


def orthogonalize(a: np.ndarray, r: np.ndarray, voxel_nm: float | None = None,
                  shape: tuple[int, ...] | None = None, order: int = 1
                  ) -> tuple[np.ndarray, float]:
    """Interpolate `a` from the oblique lattice ``R s`` onto a regular lab grid.

    Parameters
    ----------
    a : ndarray (real, complex or bool)
        On the detector-frame grid, centred: index ``n // 2`` of each axis is the origin.
    r : (ndim, ndim) float
        Transfer matrix from :func:`transfer_matrix` [nm].
    voxel_nm : float, optional
        Lab voxel size (cubic); default: the smallest oblique step.
    shape : tuple of int, optional
        Lab grid shape; default: large enough to hold the whole array.
    order : int
        Spline order (1: linear). Bool arrays are interpolated linearly and kept > 0.5.

    Returns
    -------
    ndarray
        On the lab grid, centred the same way; axes in the order of `r`'s rows.
    float
        The voxel size [nm].
    """
    if shape is None:
        shape, voxel_nm = lab_grid(r, a.shape, voxel_nm)
    elif voxel_nm is None:
        voxel_nm = lab_grid(r, a.shape)[1]
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n // 2) * voxel_nm for n in shape],
                                indexing="ij")).reshape(len(shape), -1)
    s = np.linalg.solve(r, grid) + np.array([n // 2 for n in a.shape])[:, None]
    if a.dtype == bool:
        out = _interpolate(a.astype(np.float64), s, 1) > 0.5
    else:
        out = _interpolate(a, s, order)
    return out.reshape(shape), float(voxel_nm)


def to_detector_frame(b: np.ndarray, r: np.ndarray, voxel_nm: float,
                      shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """The inverse of :func:`orthogonalize`: lab grid → detector-frame array of `shape`."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape],
                                indexing="ij")).reshape(len(shape), -1)
    p = r @ grid / voxel_nm + np.array([n // 2 for n in b.shape])[:, None]
    if b.dtype == bool:
        return (_interpolate(b.astype(np.float64), p, 1) > 0.5).reshape(shape)
    return _interpolate(b, p, order).reshape(shape)
