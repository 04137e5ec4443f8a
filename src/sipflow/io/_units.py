"""Units of the geometry values files record, and their conversion to SI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..contracts._beamline import ENERGY_UNITS, LENGTH_UNITS
from ..errors import DataError

#: lengths to m, energies to J (keys lower-case): the presets' units and the spellings
#: files use besides
LENGTH = {k.lower(): v for k, v in LENGTH_UNITS.items()} | {
    "metre": 1.0, "meter": 1.0, "a": 1e-10, "å": 1e-10}
ENERGY = {k.lower(): v for k, v in ENERGY_UNITS.items()}
#: pixel units of a beam centre
PIXEL = {"pixel", "pixels", "px"}

HC = 6.62607015e-34 * 299792458.0  # J m
EV = ENERGY["ev"]  # J


def to_si(value: float, unit: str, kind: str, where: str) -> float:
    """`value` in `unit` converted to m (``kind="length"``) or J (``"energy"``).

    An unknown unit is a :class:`DataError` naming `where`, the unit and the known ones.
    """
    table = LENGTH if kind == "length" else ENERGY
    u = unit.strip().lower()
    if u not in table:
        raise DataError(f"{where}: unit {unit!r} is not a known {kind} unit; expected one "
                        f"of {', '.join(sorted(table))}")
    return value * table[u]


def apply_preset(attrs: dict[str, Any], sources: dict[str, str], preset: Any,
                 positioners: Mapping[str, Any], where: str) -> None:
    """Fill energy, wavelength, distance and pixel size that the file's standard fields
    left out from where beamline `preset` says they are (sources recorded)."""
    from ..beamlines import preset_quantities

    found = preset_quantities(preset, positioners, where)
    if "energy_J" in found and "wavelength_m" not in attrs:
        energy, src = found["energy_J"]
        attrs["energy_eV"], attrs["wavelength_m"] = energy / EV, HC / energy
        sources["energy_eV"] = sources["wavelength_m"] = src
    if "distance_m" in found and "distance_m" not in attrs:
        attrs["distance_m"], sources["distance_m"] = found["distance_m"]
    if preset.pixel_size_m is not None and "pixel_size_m" not in attrs:
        attrs["pixel_size_m"] = preset.pixel_size_m[1]
        sources["pixel_size_m"] = f"beamline preset {preset.name}"
