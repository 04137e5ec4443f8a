"""Built-in reader plugins (registered through the same hook as third-party readers)."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl

_SUFFIXES = {".h5", ".hdf5", ".nxs", ".cxi", ".hdf"}


class HDF5Reader:
    """Reader for NeXus, CXI and Eiger HDF5 files (recognised by signature).

    h5py is imported only when a file is actually examined.
    """

    name = "hdf5"
    options = frozenset({"dataset", "mask", "dark", "flat", "checksum", "beamline"})

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

    def read(self, path: str | Path, beamline: Any = None, **options: Any):
        """See :func:`sipflow.io.read_hdf5`. With a `beamline` preset, energy and distance
        the standard fields lack are read where the preset says, and the preset's name
        is recorded; an Eiger master's ``.fio`` (PETRA III) adds its motors."""
        from ._fio import find_fio, read_fio
        from ._hdf5 import read_hdf5
        from ._units import apply_preset

        ds = read_hdf5(path, **options)
        positioners = dict(ds.attrs.get("positioners") or {})
        fio = find_fio(Path(path))
        if fio is not None:
            n = ds["intensity"].shape[0] if ds["intensity"].ndim == 3 else 1
            for key, value in read_fio(fio).items():
                if isinstance(value, float) or len(value) == n:
                    positioners.setdefault(key, value)
            ds.attrs["positioners"] = positioners
            ds.attrs["fio_source"] = str(fio)
        if beamline is not None:
            ds.attrs["beamline"] = beamline.name
            sources = dict(ds.attrs.get("geometry_sources") or {})
            apply_preset(ds.attrs, sources, beamline, positioners,
                         f"{fio or path}: positioner")
            ds.attrs["geometry_sources"] = sources
        return ds


class SpecReader:
    """Reader for a SPEC file's scan and its folder of frames (silx + fabio)."""

    name = "spec"
    options = frozenset({"scan", "frames", "dark", "flat", "mask", "checksum", "beamline"})

    def can_read(self, path: str | Path) -> int:
        """10 for a file that starts like a SPEC file (``#F`` / ``#S`` / ``#E``), 2 for a
        ``.spec`` suffix, else 0."""
        p = Path(path)
        try:
            if p.is_file():
                with open(p, "rb") as fh:
                    head = fh.read(3)
                if head[:2] in (b"#F", b"#S", b"#E") and head[2:3] in (b" ", b"\t"):
                    return 10
        except OSError:
            return 0
        return 2 if p.suffix.lower() == ".spec" else 0

    def read(self, path: str | Path, beamline: Any = None, **options: Any):
        """See :func:`sipflow.io.read_spec`; the preset defaults to ``aps-34idc``."""
        from ..beamlines import get_beamline
        from ._spec import read_spec

        return read_spec(path, preset=beamline or get_beamline("aps-34idc"), **options)


class FramesReader:
    """Reader for EDF, CBF, TIFF (and other fabio) frames: a file, a folder or a glob."""

    name = "frames"
    options = frozenset({"mask", "dark", "flat", "checksum"})

    def can_read(self, path: str | Path) -> int:
        """8 for a frame file, a folder holding frame files, or a glob matching some."""
        from ._frames import FRAME_SUFFIXES, is_frame_file

        text = str(path)
        p = Path(text)
        try:
            if glob.has_magic(text) and not p.exists():
                return 8 if any(m.lower().endswith(FRAME_SUFFIXES) for m in glob.iglob(text)) \
                    else 0
            if p.is_dir():
                return 8 if any(is_frame_file(f) for f in p.iterdir()) else 0
            return 8 if is_frame_file(p) else 0
        except OSError:
            return 0

    def read(self, path: str | Path, **options: Any):
        """See :func:`sipflow.io.read_frames`."""
        from ._frames import read_frames

        return read_frames(path, **options)


@hookimpl
def sipflow_readers():
    return [HDF5Reader(), SpecReader(), FramesReader()]
