"""``sipflow.load``: pick the reader plugin for a file and read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import InputError


def load(path: str | Path, *, reader: str | None = None, **options: Any) -> xr.Dataset:
    """Read detector data from `path` with the best-suited reader plugin.

    Parameters
    ----------
    path : str or Path
        Input file (HDF5: NeXus, CXI or Eiger master).
    reader : str, optional
        Name of the reader to use (``sipflow plugins`` lists them).
    **options
        Passed to the reader (for HDF5: ``dataset``, ``mask``, ``dark``, ``flat``).

    Returns
    -------
    xarray.Dataset
        With at least ``intensity``; see :mod:`sipflow.schema`.
    """
    from ..plugins import get_registry, unknown_choice

    path = Path(path)
    readers = get_registry().readers
    if reader is not None:
        chosen = [r for r in readers if r.name == reader]
        if not chosen:
            raise InputError(unknown_choice("reader", reader, [r.name for r in readers]))
        return chosen[0].read(path, **options)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    scored = sorted(((r.can_read(path), i, r) for i, r in enumerate(readers)),
                    key=lambda t: (-t[0], t[1]))
    if not scored or scored[0][0] <= 0:
        raise InputError(f"{path}: not an HDF5 file (no HDF5 signature), and no other reader "
                         f"recognises it (readers: {', '.join(r.name for r in readers)}). "
                         "sipflow reads NeXus, CXI and Eiger HDF5 files.")
    return scored[0][2].read(path, **options)
