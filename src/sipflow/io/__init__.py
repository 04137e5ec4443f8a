"""Input and output: HDF5 detector data in, Zarr result stores out."""

from ._hdf5 import HDF5Reader, read_hdf5, sha256_file
from ._load import load
from ._zarr import check_writable, is_complete, open_result, save

__all__ = ["HDF5Reader", "check_writable", "is_complete", "load", "open_result", "read_hdf5",
           "save", "sha256_file"]
