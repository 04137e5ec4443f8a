"""The beamline preset: what a ``sipflow_beamlines`` hook returns.

A preset describes one diffractometer as the field writes it (xrayutilities' axis
strings): the sample circles and the detector circles, each listed from the outermost
circle inwards with its rotation axis and sense in the laboratory frame (``z``
downstream along the beam, ``y`` up, ``x`` outboard, right-handed: the CXI frame), the
directions of the detector's rows and columns with every detector circle at 0, the
file keys of the circles and of energy and distance with their units, and the rule
that names the rocking circle. It is data only: :mod:`sipflow.beamlines` computes
with it (rotation chain, q of a pixel), readers read its keys, and
``bragg.orthogonalize`` uses its circles.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: a rotation axis (or a pixel direction) in the laboratory frame, xrayutilities style
Axis = Literal["x+", "x-", "y+", "y-", "z+", "z-"]

#: units a preset may name, with their factor to SI (m for lengths, J for energies)
LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6,
                "nm": 1e-9, "angstrom": 1e-10}
ENERGY_UNITS = {"eV": 1.602176634e-19, "keV": 1.602176634e-16, "J": 1.0}


class Circle(BaseModel):
    """One diffractometer circle.

    Attributes
    ----------
    name : str
        The circle's canonical name (``theta``, ``eta``, ``delta``, ...).
    axis : {"x+", "x-", "y+", "y-", "z+", "z-"}
        Rotation axis and sense in the laboratory frame at all outer circles' zero
        (``"y+"``: right-handed about +y; ``"x-"``: left-handed about +x).
    key : str, optional
        The name under which the files record the circle's position (a SPEC motor name,
        a positioner of a NeXus/BLISS file, a ``.fio`` parameter); default: `name`.
    offset_deg : float
        Added to the recorded position (a circle whose zero is not the diagram's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    axis: Axis
    key: str | None = None
    offset_deg: float = 0.0

    @property
    def file_key(self) -> str:
        """Where the files record this circle (`key`, else `name`)."""
        return self.key or self.name


class Quantity(BaseModel):
    """Where a file records a scalar and in which unit.

    Attributes
    ----------
    key : str
        A motor/positioner/counter name (SPEC, BLISS, ``.fio``) or an HDF5 path.
    unit : str
        The unit when the file does not say (``keV``, ``mm``, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1)
    unit: str


class BeamlinePreset(BaseModel):
    """A validated beamline preset (see the module docstring).

    Attributes
    ----------
    name : str
        What users write (``beamline: id01``; ``sipflow beamlines`` lists them).
    description : str
        One line: facility, beamline, hutch or setup variant.
    sample_circles, detector_circles : list of Circle
        Outermost first. The detector circles turn the arm that carries the detector;
        with all of them at 0 the detector's centre lies on the beam (``z+``).
    pixel_directions : (Axis, Axis)
        Directions of increasing row and increasing column index on the detector with
        every detector circle at 0 (``("y-", "x+")``: rows run down, columns outboard).
    rocking_circles : list of str
        Sample circles a rocking scan may turn, in order of preference; the rocking
        circle of a scan is the first of these whose recorded position changes from
        frame to frame.
    energy, distance : Quantity, optional
        Where the files record the photon energy and the sample-detector distance.
    pixel_size_m : (float, float), optional
        The detector's pixel size (row, column) [m] when the files do not record it.
    roi_key : str, optional
        A SPEC header line giving the detector region the frames hold
        (``minX sizeX minY sizeY``, as areaDetector writes it).
    layouts : list of str
        File layouts the preset applies to (``spec``, ``hdf5``, ``bliss``, ``fio``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    sample_circles: tuple[Circle, ...] = Field(min_length=1)
    detector_circles: tuple[Circle, ...] = Field(min_length=1)
    pixel_directions: tuple[Axis, Axis]
    rocking_circles: tuple[str, ...] = Field(min_length=1)
    energy: Quantity | None = None
    distance: Quantity | None = None
    pixel_size_m: tuple[float, float] | None = None
    roi_key: str | None = None
    layouts: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> BeamlinePreset:
        names = [c.name for c in (*self.sample_circles, *self.detector_circles)]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"circle names must be unique; {', '.join(doubled)} repeated")
        rows, cols = self.pixel_directions
        if rows[0] == cols[0] or "z" in (rows[0], cols[0]):
            raise ValueError(f"pixel_directions {self.pixel_directions}: rows and columns "
                             "must run along two different axes across the beam (x, y)")
        sample = [c.name for c in self.sample_circles]
        unknown = [r for r in self.rocking_circles if r not in sample]
        if unknown:
            raise ValueError(f"rocking_circles {unknown} are not sample circles "
                             f"({', '.join(sample)})")
        if self.energy is not None and self.energy.unit not in ENERGY_UNITS:
            raise ValueError(f"energy unit {self.energy.unit!r} is not one of "
                             f"{', '.join(ENERGY_UNITS)}")
        if self.distance is not None and self.distance.unit not in LENGTH_UNITS:
            raise ValueError(f"distance unit {self.distance.unit!r} is not one of "
                             f"{', '.join(LENGTH_UNITS)}")
        if self.pixel_size_m is not None and min(self.pixel_size_m) <= 0:
            raise ValueError("pixel_size_m must be positive")
        return self

    def circle(self, name: str) -> Circle:
        """The circle called `name` (sample or detector)."""
        for c in (*self.sample_circles, *self.detector_circles):
            if c.name == name:
                return c
        raise KeyError(name)
