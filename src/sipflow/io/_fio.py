"""PETRA III ``.fio`` scan files: the motor positions (``%p``) and scan columns (``%d``)
of an Eiger scan, which P10 writes beside (or one folder above) the master file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError


def find_fio(master: Path) -> Path | None:
    """The ``.fio`` of an Eiger master ``<scan>_master.h5``: ``<scan>.fio`` in its folder
    or the folder above (P10 keeps the detector's files in a sub-folder)."""
    stem = master.name.split("_master")[0].rsplit(".", 1)[0]
    for folder in (master.parent, master.parent.parent):
        candidate = folder / f"{stem}.fio"
        if candidate.is_file():
            return candidate
    return None


def read_fio(path: Path) -> dict[str, float | list[float]]:
    """Parameters (one value each) and numeric data columns (one value per point).

    Raises :class:`DataError` naming the file and line for a malformed file.
    """
    out: dict[str, float | list[float]] = {}
    section = None
    names: list[str] = []
    rows: list[list[float]] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        if line.startswith("%"):
            section = line[1:2]
            continue
        if section == "p" and "=" in line:
            key, value = (t.strip() for t in line.split("=", 1))
            try:
                out[key] = float(value)
            except ValueError:
                continue  # text parameters (sample names, comments)
        elif section == "d" and line.startswith("Col "):
            parts = line.split()
            names.append(parts[2] if len(parts) > 2 else f"col{len(names) + 1}")
        elif section == "d":
            try:
                rows.append([float(v) for v in line.split()])
            except ValueError as exc:
                raise DataError(f"{path}, line {number}: a data row that is not numbers: "
                                f"{line[:80]!r}") from exc
    if rows:
        table = np.array([r for r in rows if len(r) == len(names)], np.float64)
        if table.shape[0] != len(rows):
            raise DataError(f"{path}: data rows with other than the {len(names)} columns "
                            f"the %d header names")
        for k, name in enumerate(names):
            out[name] = [float(v) for v in table[:, k]]
    return out
