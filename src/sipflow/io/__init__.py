"""Input and output: HDF5 detector data in, Zarr result stores out, VTK images for 3-D
viewers."""

from .._lazy import lazy_exports

_EXPORTS = {
    "HDF5Reader": "._builtin", "read_hdf5": "._hdf5", "sha256_file": "._hdf5",
    "load": "._load",
    "check_writable": "._zarr", "is_complete": "._zarr", "open_result": "._zarr",
    "save": "._zarr", "store_state": "._zarr", "verify_store": "._zarr",
    "OutputLock": "._fs", "Reader": "..contracts", "export_vti": "._vti",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
