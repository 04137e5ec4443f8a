"""Units of the geometry values files record, and their conversion to SI."""

from __future__ import annotations

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
