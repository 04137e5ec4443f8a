"""The built-in beamline presets, registered through ``sipflow_beamlines`` like a
plugin's, and how a scan's recorded positions become circle angles.

Axes are in the CXI laboratory frame (``z`` along the beam, ``y`` up, ``x`` outboard),
as the beamlines' own packages write them (cohere-beamlines' ``diffractometers.py``,
bcdi's ``create_geometry``); where those sources disagree the choice is noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..contracts import BeamlinePreset, Circle, Quantity
from ..contracts._beamline import ENERGY_UNITS, LENGTH_UNITS
from ..errors import DataError
from ..hookspecs import hookimpl

APS_34IDC = BeamlinePreset(
    name="aps-34idc",
    description="APS 34-ID-C: theta/chi/phi sample, delta/gamma detector arm (SPEC + "
                "TIFF frames, or HDF5 with the same positioners)",
    sample_circles=(Circle(name="theta", axis="y+", key="Theta"),
                    Circle(name="chi", axis="z-", key="Chi"),
                    Circle(name="phi", axis="y+", key="Phi")),
    detector_circles=(Circle(name="delta", axis="y+", key="Delta"),
                      Circle(name="gamma", axis="x-", key="Gamma")),
    pixel_directions=("y-", "x+"),
    rocking_circles=("theta", "phi"),
    energy=Quantity(key="Energy", unit="keV"),
    distance=Quantity(key="camdist", unit="mm"),
    pixel_size_m=(55e-6, 55e-6),
    roi_key="UIMR5",
    layouts=("spec", "hdf5"),
)

ESRF_ID01 = BeamlinePreset(
    name="id01",
    description="ESRF ID01 (BLISS HDF5): mu/eta/phi sample, nu/delta detector arm",
    sample_circles=(Circle(name="mu", axis="y-"), Circle(name="eta", axis="x-"),
                    Circle(name="phi", axis="y-")),
    detector_circles=(Circle(name="nu", axis="y-"), Circle(name="delta", axis="x-")),
    pixel_directions=("y-", "x+"),
    rocking_circles=("eta", "phi"),
    energy=Quantity(key="mononrj", unit="keV"),
    layouts=("bliss",),
)

PETRA_P10 = BeamlinePreset(
    name="p10",
    description="PETRA III P10 EH1 (Eiger master + .fio): mu/om/chi/phi sample, gam/del "
                "detector arm",
    sample_circles=(Circle(name="mu", axis="y+"), Circle(name="om", axis="x-"),
                    Circle(name="chi", axis="z+"), Circle(name="phi", axis="y-")),
    detector_circles=(Circle(name="gam", axis="y+"), Circle(name="del", axis="x-")),
    pixel_directions=("y-", "x-"),
    rocking_circles=("om", "phi"),
    energy=Quantity(key="fmbenergy", unit="eV"),
    pixel_size_m=(75e-6, 75e-6),
    layouts=("fio", "hdf5"),
)

MAXIV_NANOMAX = BeamlinePreset(
    name="nanomax",
    description="MAX IV NanoMAX (entry/snapshots): gontheta/gonphi sample, gamma/delta "
                "detector arm (columns along x-, as cdiutils; bcdi says x+)",
    sample_circles=(Circle(name="gontheta", axis="x-"), Circle(name="gonphi", axis="y-")),
    detector_circles=(Circle(name="gamma", axis="y-"), Circle(name="delta", axis="x-")),
    pixel_directions=("y-", "x-"),
    rocking_circles=("gontheta", "gonphi"),
    energy=Quantity(key="energy", unit="eV"),
    layouts=("hdf5",),
)

BUILTIN = (APS_34IDC, ESRF_ID01, PETRA_P10, MAXIV_NANOMAX)


@hookimpl
def sipflow_beamlines() -> tuple[BeamlinePreset, ...]:
    return BUILTIN


def _lookup(positioners: Mapping[str, Any], key: str) -> Any:
    if key in positioners:
        return positioners[key]
    lowered = {k.lower(): v for k, v in positioners.items()}
    return lowered.get(key.lower())


def circle_angles(preset: BeamlinePreset, positioners: Mapping[str, Any], *,
                  frame: int | None = None, overrides: Mapping[str, float] | None = None,
                  source: str = "input") -> tuple[dict[str, float], str | None, float | None,
                                                  dict[str, str]]:
    """The circles' angles of a scan from its recorded positions.

    Parameters
    ----------
    preset : BeamlinePreset
    positioners : mapping of str to float or list of float
        What the reader recorded (``attrs["positioners"]``): a value per motor, or one
        per frame for motors that moved.
    frame : int, optional
        The frame whose positions are wanted (the Bragg peak's); default the middle one.
    overrides : mapping of str to float, optional
        Circle angles given by the user [deg]; they win over the file.
    source : str
        The input's name, for messages.

    Returns
    -------
    angles : dict of str to float
        Every circle's position [deg] (without the circle's offset).
    rocking : str or None
        The rocking circle: the first of ``preset.rocking_circles`` that moves.
    step : float or None
        Its mean step per frame [deg].
    origin : dict of str to str
        Where each angle came from (``file <key>`` or ``user``).
    """
    overrides = dict(overrides or {})
    angles: dict[str, float] = {}
    origin: dict[str, str] = {}
    moving: dict[str, float] = {}
    missing: list[str] = []
    for c in (*preset.sample_circles, *preset.detector_circles):
        value = _lookup(positioners, c.file_key)
        if value is not None:
            values = np.asarray(value, np.float64).ravel()
            if values.size > 1 and np.isfinite(values).all():
                step = float(np.mean(np.diff(values)))
                if step != 0:
                    moving[c.name] = step
                i = values.size // 2 if frame is None else min(max(frame, 0), values.size - 1)
                angles[c.name], origin[c.name] = float(values[i]), f"file {c.file_key}"
            elif values.size and np.isfinite(values[0]):
                angles[c.name], origin[c.name] = float(values[0]), f"file {c.file_key}"
        if c.name in overrides:
            angles[c.name], origin[c.name] = float(overrides.pop(c.name)), "user"
        if c.name not in angles:
            missing.append(f"{c.name} (file key {c.file_key!r})")
    if overrides:
        raise DataError(f"{source}: beamline {preset.name!r} has no circle(s) "
                        f"{', '.join(sorted(overrides))}; its circles: " + ", ".join(
                            c.name for c in (*preset.sample_circles, *preset.detector_circles)))
    if missing:
        found = ", ".join(sorted(positioners)) or "none"
        raise DataError(f"{source}: beamline {preset.name!r} needs the position of "
                        f"{', '.join(missing)}, which the file does not record (positioners "
                        f"found: {found}); give it as geometry: {{angles: {{name: degrees}}}}")
    rocking = next((r for r in preset.rocking_circles if r in moving), None)
    return angles, rocking, (moving[rocking] if rocking else None), origin


def preset_quantities(preset: BeamlinePreset, positioners: Mapping[str, Any], where: str
                      ) -> dict[str, tuple[float, str]]:
    """Energy [J] and distance [m] where the preset says the files record them.

    Returns ``{"energy_J": (value, source), "distance_m": (value, source)}`` for those
    found among `positioners` (one value, or the first of a list).
    """
    out: dict[str, tuple[float, str]] = {}
    for attr, name, table in (("energy", "energy_J", ENERGY_UNITS),
                              ("distance", "distance_m", LENGTH_UNITS)):
        q = getattr(preset, attr)
        if q is None:
            continue
        value = _lookup(positioners, q.key)
        if value is None:
            continue
        first = float(np.asarray(value, np.float64).ravel()[0])
        if not np.isfinite(first) or first <= 0:
            raise DataError(f"{where}: {q.key} = {first}; beamline {preset.name!r} reads the "
                            f"{attr} there and expected a positive value in {q.unit}")
        out[name] = (first * table[q.unit],
                     f"{where} {q.key} ({q.unit}, beamline {preset.name})")
    return out
