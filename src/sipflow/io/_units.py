"""Units of the geometry values files record, and their conversion to SI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DataError

#: lengths to m, energies to J (keys lower-case)
LENGTH = {"m": 1.0, "metre": 1.0, "meter": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6,
          "micron": 1e-6, "nm": 1e-9, "angstrom": 1e-10, "a": 1e-10, "å": 1e-10}
ENERGY = {"j": 1.0, "ev": 1.602176634e-19, "kev": 1.602176634e-16}
#: pixel units of a beam centre
PIXEL = {"pixel", "pixels", "px"}

HC = 6.62607015e-34 * 299792458.0  # J m
EV = 1.602176634e-19  # J


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
