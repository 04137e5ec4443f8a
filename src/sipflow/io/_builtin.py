"""Built-in reader plugin (registered through the same hook as third-party readers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl

_SUFFIXES = {".h5", ".hdf5", ".nxs", ".cxi", ".hdf"}


class HDF5Reader:
    """Reader for NeXus, CXI and Eiger HDF5 files (recognised by signature).

    h5py is imported only when a file is actually examined.
    """

    name = "hdf5"
    options = frozenset({"dataset", "mask", "dark", "flat", "checksum"})

    def can_read(self, path: str | Path) -> int:
        """10 for a file with the HDF5 signature, 1 for an HDF5-like suffix, else 0."""
        p = Path(path)
        try:
            if p.is_file():
                import h5py

                if h5py.is_hdf5(str(p)):
                    return 10
        except OSError:
            return 0
        return 1 if p.suffix.lower() in _SUFFIXES else 0

    def read(self, path: str | Path, **options: Any):
        """See :func:`sipflow.io.read_hdf5`."""
        from ._hdf5 import read_hdf5

        return read_hdf5(path, **options)


@hookimpl
def sipflow_readers():
    return [HDF5Reader()]
