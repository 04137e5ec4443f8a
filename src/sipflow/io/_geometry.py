"""Geometry and diffractometer angles of an HDF5 scan: wavelength, distance, pixel size,
detector angles and the rocking motor, each with its units honoured.
"""

from __future__ import annotations

from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and friends with HDF5)
import numpy as np

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


_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "nm": 1e-9,
          "angstrom": 1e-10, "a": 1e-10, "å": 1e-10,
          "j": 1.0, "ev": 1.602176634e-19, "kev": 1.602176634e-16}


_HC = 6.62607015e-34 * 299792458.0  # J m


_EV = 1.602176634e-19


def _dataset(f: h5py.File, path: str) -> h5py.Dataset | None:
    try:
        obj = f.get(path)
    except (KeyError, OSError, ValueError):
        return None
    return obj if isinstance(obj, h5py.Dataset) else None


def _read_quantity(f: h5py.File, table: tuple[tuple[str, str], ...]) -> float | None:
    for path, default_unit in table:
        d = _dataset(f, path)
        if d is None:
            continue
        try:
            value = float(np.asarray(d[()]).ravel()[0])
        except (TypeError, ValueError, IndexError):
            continue
        unit = d.attrs.get("units", default_unit)
        unit = (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()
        factor = _UNITS.get(unit)
        if factor is None or not np.isfinite(value) or value <= 0:
            continue
        return value * factor
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


def _geometry(f: h5py.File) -> dict[str, float]:
    geo: dict[str, float] = {}
    wavelength = _read_quantity(f, _WAVELENGTH)
    energy_j = _read_quantity(f, _ENERGY)
    if wavelength is None and energy_j is not None:
        wavelength = _HC / energy_j
    if energy_j is None and wavelength is not None:
        energy_j = _HC / wavelength
    if wavelength is not None and energy_j is not None:
        geo["wavelength_m"] = wavelength
        geo["energy_eV"] = energy_j / _EV
    distance = _read_quantity(f, _DISTANCE)
    if distance is not None:
        geo["distance_m"] = distance
    pixel = _read_quantity(f, _PIXEL)
    if pixel is not None:
        geo["pixel_size_m"] = pixel
    return geo
