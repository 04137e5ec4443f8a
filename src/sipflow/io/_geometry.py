"""Geometry and diffractometer angles of an HDF5 scan: wavelength, distance, pixel size,
detector angles and the rocking motor, each with its units honoured.
"""

from __future__ import annotations

from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and friends with HDF5)
import numpy as np

from ..errors import DataError
from ._units import EV, HC, PIXEL, to_si

# (paths, default unit) for geometry, converted to SI
_WAVELENGTH = (("/entry_1/instrument_1/source_1/wavelength", "m"),
               ("/entry/instrument/beam/incident_wavelength", "angstrom"),
               ("/entry/instrument/monochromator/wavelength", "angstrom"))


_ENERGY = (("/entry_1/instrument_1/source_1/energy", "J"),
           ("/entry_1/instrument_1/source_1/energy_keV", "keV"),
           ("/entry/instrument/source/energy", "keV"),
           ("/entry/instrument/beam/incident_energy", "eV"))


_DISTANCE = (("/entry_1/instrument_1/detector_1/distance", "m"),
             ("/entry/instrument/detector/distance", "m"),
             ("/entry/instrument/detector/detector_distance", "m"))


_PIXEL = (("/entry_1/instrument_1/detector_1/x_pixel_size", "m"),
          ("/entry/instrument/detector/x_pixel_size", "m"))



def _dataset(f: h5py.File, path: str) -> h5py.Dataset | None:
    try:
        obj = f.get(path)
    except (KeyError, OSError, ValueError):
        return None
    return obj if isinstance(obj, h5py.Dataset) else None


def _unit(d: h5py.Dataset, default: str) -> str:
    unit = d.attrs.get("units", default)
    return (unit.decode() if isinstance(unit, bytes) else str(unit)).strip()


def _read_quantity(f: h5py.File, table: tuple[tuple[str, str], ...], kind: str
                   ) -> tuple[float, str] | None:
    """The first of `table`'s (path, default unit) the file has, in SI, and its source."""
    for path, default_unit in table:
        d = _dataset(f, path)
        if d is None:
            continue
        try:
            value = float(np.asarray(d[()]).ravel()[0])
        except (TypeError, ValueError, IndexError):
            continue
        if not np.isfinite(value) or value <= 0:
            continue
        unit = _unit(d, default_unit)
        return (to_si(value, unit, kind, f"{f.filename}:{path}"),
                f"{f.filename}:{path} ({unit})")
    return None


# diffractometer angles [deg] (NeXus-like and the APS 34-ID-C repackaging)
_ANGLES = {"delta_deg": ("/entry_1/instrument_1/positioners/delta",
                         "/entry/instrument/detector/delta",
                         "/entry/sample/transformations/delta"),
           "gamma_deg": ("/entry_1/instrument_1/positioners/gamma",
                         "/entry/instrument/detector/gamma",
                         "/entry/sample/transformations/gamma")}


# the rocking motor's positions per frame: (path, motor name)
_ROCKING = (("/entry_1/measurement/Theta", "theta"), ("/entry/sample/transformations/theta",
                                                      "theta"),
            ("/entry_1/measurement/Phi", "phi"), ("/entry/sample/transformations/phi", "phi"))


def _text(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).strip()


#: units of NeXus rotations, to degrees
_ANGLE_UNITS = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "rad": 180 / np.pi,
                "radian": 180 / np.pi, "radians": 180 / np.pi, "": 1.0}


_AXES = {(1, 0, 0): "x", (-1, 0, 0): "-x", (0, 1, 0): "y", (0, -1, 0): "-y",
         (0, 0, 1): "z", (0, 0, -1): "-z"}


def _nx_rotations(f: h5py.File) -> dict[str, tuple[np.ndarray, str | None]]:
    """Rotations of every ``NXtransformations`` group: name -> (values [deg], lab axis).

    The axis is the ``vector`` attribute when it is a (signed) coordinate axis of the
    NeXus frame (z downstream, y up, x completing a right-handed frame), else None.
    """
    found: dict[str, tuple[np.ndarray, str | None]] = {}

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group) or _text(obj.attrs.get("NX_class", "")) != \
                "NXtransformations":
            return
        for key, d in obj.items():
            if not isinstance(d, h5py.Dataset) or _text(
                    d.attrs.get("transformation_type", "")).lower() != "rotation":
                continue
            factor = _ANGLE_UNITS.get(_text(d.attrs.get("units", "")).lower())
            try:
                values = np.asarray(d[()], np.float64).ravel()
            except (TypeError, ValueError):
                continue
            if factor is None or not values.size or not np.isfinite(values).all():
                continue
            vector = np.asarray(d.attrs.get("vector", ()), np.float64).ravel()
            axis = None
            if vector.shape == (3,) and np.linalg.norm(vector) > 0:
                axis = _AXES.get(tuple(int(v) for v in np.round(vector /
                                                                np.linalg.norm(vector), 6)))
            found.setdefault(key.lower(), (values * factor, axis))

    f.visititems(visit)
    return found


def _angles(f: h5py.File, frames: int | None) -> dict[str, float | str]:
    """Detector arm angles, the rocking step [deg] and axis where the file records them.

    NeXus ``NXtransformations`` first (rotations named ``delta`` and ``gamma`` for the
    detector arm, any rotation with one value per frame for the rocking motor, whose
    ``vector`` gives the rocking axis), then the fixed paths of CXI files and of the
    APS 34-ID-C repackaging.
    """
    out: dict[str, float | str] = {}
    rotations = _nx_rotations(f)
    for key in ("delta", "gamma"):
        if key in rotations:
            out[f"{key}_deg"] = float(rotations[key][0][0])
    for name, (values, axis) in rotations.items():
        if values.size >= 2 and (not frames or values.size == frames):
            step = float(np.mean(np.diff(values)))
            if np.isfinite(step) and step != 0:
                out["rocking_step_deg"] = step
                out["rocking_motor"] = name
                if axis is not None:
                    out["rocking_axis"] = axis
                break
    for key, paths in _ANGLES.items():
        if key in out:
            continue
        for path in paths:
            d = _dataset(f, path)
            if d is not None and d.size >= 1:
                try:
                    value = float(np.asarray(d[()]).ravel()[0])
                except (TypeError, ValueError):
                    continue
                if np.isfinite(value):
                    out[key] = value
                    break
    for path, motor in _ROCKING:
        if "rocking_step_deg" in out:
            break
        d = _dataset(f, path)
        if d is None or d.ndim != 1 or d.shape[0] < 2 or (frames and d.shape[0] != frames):
            continue
        values = np.asarray(d[()], np.float64)
        step = float(np.mean(np.diff(values)))
        if np.isfinite(step) and step != 0:
            out["rocking_step_deg"] = step
            out["rocking_motor"] = motor
            break
    return out


def _detector_groups(f: h5py.File) -> list[h5py.Group]:
    """Every NXdetector group (and the fixed CXI/Eiger detector paths), file order."""
    found: list[h5py.Group] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _text(obj.attrs.get("NX_class", "")) == \
                "NXdetector" and len(found) < 8:
            found.append(obj)

    f.visititems(visit)
    for path in ("/entry/instrument/detector", "/entry_1/instrument_1/detector_1"):
        g = f.get(path)
        if isinstance(g, h5py.Group) and all(g.name != h.name for h in found):
            found.append(g)
    return found


def _beam_centre(f: h5py.File, pixel_m: tuple[float | None, float | None]
                 ) -> tuple[list[float], str] | None:
    """(row, col) of the beam on the detector [pixels] from ``beam_center_y|x``.

    NXdetector lets the values be pixels or lengths as their ``units`` say (Eiger
    masters write ``pixel``; a value with no unit is taken as pixels, the Eiger and CXI
    habit); a length is divided by the pixel size. Eiger's ``detectorSpecific`` copy is
    the fallback.
    """
    for g in _detector_groups(f):
        for base in ("", "detectorSpecific/"):
            dx, dy = _dataset(g, base + "beam_center_x"), _dataset(g, base + "beam_center_y")
            if dx is None or dy is None:
                continue
            out = []
            for d, pixel, axis in ((dy, pixel_m[0], "y"), (dx, pixel_m[1], "x")):
                value = float(np.asarray(d[()]).ravel()[0])
                unit = _unit(d, "pixel")
                where = f"{f.filename}:{d.name}"
                if not np.isfinite(value):
                    raise DataError(f"{where}: the beam centre is {value}; expected a number")
                if unit.lower() in PIXEL or unit == "":
                    out.append(value)
                    continue
                metres = to_si(value, unit, "length", where)
                if not pixel:
                    raise DataError(f"{where}: the beam centre is a length ({unit}) but the "
                                    f"file records no {axis}_pixel_size to turn it into "
                                    "pixels")
                out.append(metres / pixel)
            return out, (f"{f.filename}:{dy.name}, {dx.name} "
                         f"({_unit(dy, 'pixel') or 'pixel'})")
    return None


def _pixel_sizes(f: h5py.File) -> tuple[float | None, float | None]:
    out: list[float | None] = []
    for axis in ("y", "x"):
        got = None
        for g in _detector_groups(f):
            d = _dataset(g, f"{axis}_pixel_size")
            if d is not None:
                try:
                    value = float(np.asarray(d[()]).ravel()[0])
                except (TypeError, ValueError, IndexError):
                    continue
                got = to_si(value, _unit(d, "m"), "length", f"{f.filename}:{d.name}")
                break
        out.append(got)
    return out[0], out[1]


def _geometry(f: h5py.File) -> dict[str, Any]:
    """Wavelength, energy, distance, pixel size and beam centre in SI units, each source
    in ``geometry_sources``."""
    geo: dict[str, Any] = {}
    src: dict[str, str] = {}
    wavelength = _read_quantity(f, _WAVELENGTH, "length")
    energy = _read_quantity(f, _ENERGY, "energy")
    if wavelength is not None:
        geo["wavelength_m"], src["wavelength_m"] = wavelength
        geo["energy_eV"] = HC / wavelength[0] / EV
        src["energy_eV"] = src["wavelength_m"]
    elif energy is not None:
        geo["energy_eV"], src["energy_eV"] = energy[0] / EV, energy[1]
        geo["wavelength_m"], src["wavelength_m"] = HC / energy[0], energy[1]
    groups = _detector_groups(f)
    # fixed paths first, then any NXdetector's (BLISS: /1.1/instrument/<detector>/...)
    distance = _read_quantity(f, _DISTANCE + tuple(
        (f"{g.name}/{k}", "m") for g in groups for k in ("distance", "detector_distance")),
        "length")
    if distance is not None:
        geo["distance_m"], src["distance_m"] = distance
    pixel = _read_quantity(f, _PIXEL + tuple((f"{g.name}/x_pixel_size", "m") for g in groups),
                           "length")
    if pixel is not None:
        geo["pixel_size_m"], src["pixel_size_m"] = pixel
    centre = _beam_centre(f, _pixel_sizes(f))
    if centre is not None:
        geo["beam_centre_px"], src["beam_centre_px"] = centre
    geo["geometry_sources"] = src
    return geo


#: groups whose datasets are motor positions: BLISS/our repackaging, NanoMAX snapshots
_POSITIONER_GROUPS = ("positioners", "post_scan", "pre_scan")


def _positioners(f: h5py.File, frames: int | None) -> dict[str, float | list[float]]:
    """Every motor position the file records, by its name in the file: one value, or one
    per frame for a motor that moved (a beamline preset maps names to circles).

    Sources, first found wins: NXtransformations rotations [deg], groups named
    ``positioners`` (BLISS, CXI), NanoMAX ``snapshots/pre_scan|post_scan``, and 1-D
    ``measurement`` columns with one value per frame that change monotonically (scanned
    motors; counters are left out).
    """
    out: dict[str, float | list[float]] = {}

    def add(name: str, values: np.ndarray) -> None:
        if name in out or not values.size or not np.isfinite(values).all():
            return
        if values.size == 1:
            out[name] = float(values[0])
        elif frames and values.size == frames:
            out[name] = [float(v) for v in values]

    for name, (values, _axis) in _nx_rotations(f).items():
        add(name, values)

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group):
            return
        leaf = name.rsplit("/", 1)[-1].lower()
        if leaf not in (*_POSITIONER_GROUPS, "measurement"):
            return
        for key, d in obj.items():
            if not isinstance(d, h5py.Dataset) or not np.issubdtype(d.dtype, np.number) \
                    or d.ndim > 1 or (leaf == "measurement" and d.ndim != 1):
                continue
            if d.size > max(frames or 1, 1):
                continue
            values = np.asarray(d[()], np.float64).ravel()
            steps = np.diff(values)
            if leaf == "measurement" and not (np.all(steps > 0) or np.all(steps < 0)):
                continue  # a counter, not a scanned motor
            add(key, values)

    f.visititems(visit)
    return out
