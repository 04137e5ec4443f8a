"""Built-in reader plugin (registered through the same hook as third-party readers)."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def sipflow_readers():
    from ._hdf5 import HDF5Reader

    return [HDF5Reader()]
