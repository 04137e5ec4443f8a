"""Detector frames in files of their own (EDF, CBF, TIFF and the rest of fabio's list).

A scan as many beamlines write it: one file per frame in a folder, or a multi-frame
file, read through fabio. The frames stay on disk: ``intensity`` is a dask array read
one frame per chunk, and every frame is checked for the first frame's shape when read.
Geometry is taken from the first frame's header where the format has one (Pilatus CBF
mini-header; the ESRF EDF keys ``SampleDistance``, ``WaveLength``, ``Center_1/2``,
``PSize_1/2``), with its source in ``attrs["geometry_sources"]``.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from .._resources import check_fits_in_memory
from ..errors import DataError, InputError
from ._units import HC, to_si

#: suffixes of frame files a folder or a glob is listed for (compressed ones too)
FRAME_SUFFIXES = (".tif", ".tiff", ".edf", ".cbf", ".img", ".mccd", ".mar3450", ".sfrm",
                  ".edf.gz", ".edf.bz2", ".cbf.gz", ".cbf.bz2", ".tif.gz")

#: frame-file names in a scan folder that are not frames
_NOT_FRAMES = re.compile(r"^(dark|white|flat|mask|bad)", re.IGNORECASE)

_NUMBER = re.compile(r"(\d+)")


def natural_key(p: Path) -> tuple:
    """Sort key that orders ``f_9`` before ``f_10``."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in _NUMBER.split(p.name))


def frame_number(p: Path) -> int | None:
    """The last run of digits of a frame file's name (``S0054_00012.tif`` -> 12)."""
    stem = p.name.split(".")[0]
    found = _NUMBER.findall(stem)
    return int(found[-1]) if found else None


def is_frame_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(FRAME_SUFFIXES)


def frame_files(path: str | Path) -> list[Path]:
    """The frame files `path` names: the file itself, a folder's frame files (dark,
    white/flat and mask files left out) or a glob's matches, in natural order."""
    text = str(path)
    if glob.has_magic(text) and not Path(text).exists():
        files = sorted((Path(p) for p in glob.glob(text) if Path(p).is_file()), key=natural_key)
        if not files:
            raise InputError(f"{text}: no file matches this pattern")
        return files
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if is_frame_file(f)
                        and not _NOT_FRAMES.match(f.name)), key=natural_key)
        if not files:
            raise InputError(f"{p}: the folder holds no frame files (looked for "
                             f"{', '.join(FRAME_SUFFIXES[:6])}, ...)")
        return files
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    return [p]


def open_image(path: Path, what: str = "frame") -> Any:
    """The fabio image of `path`; an unreadable file is an :class:`InputError` naming it."""
    import fabio

    try:
        return fabio.open(str(path))
    except Exception as exc:  # fabio raises IOError, ValueError, KeyError, ... on bad files
        raise _unreadable(path, what, exc) from exc


def _unreadable(path: Path, what: str, exc: Exception) -> InputError:
    return InputError(f"{path}: cannot be read as a detector {what} by fabio "
                      f"({type(exc).__name__}: {exc}); expected EDF, CBF, TIFF or another "
                      "format fabio knows")


class _FabioFrames:
    """Array-like over frame files; reads (and checks) one frame per index, keeps no file
    open (pickles for dask workers)."""

    def __init__(self, entries: list[tuple[str, int]], shape: tuple[int, int],
                 dtype: np.dtype) -> None:
        self.entries, self.frame_shape, self.dtype = entries, shape, np.dtype(dtype)
        self.shape = (len(entries), *shape)
        self.ndim = 3

    def _frame(self, i: int) -> np.ndarray:
        name, index = self.entries[i]
        with open_image(Path(name)) as img:
            data = img.data if index == 0 else img.getframe(index).data
        if data.shape != self.frame_shape:
            raise DataError(f"{name}: frame {index} has shape {data.shape}; the first frame "
                            f"of the scan has {self.frame_shape}: every frame must match")
        return np.asarray(data, self.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        frames = np.arange(self.shape[0])[key[0]]
        out = np.stack([self._frame(int(i)) for i in np.atleast_1d(frames)])
        out = out[(slice(None), *key[1:])]
        return out[0] if np.ndim(frames) == 0 else out


def _frame_count(path: Path) -> int:
    import fabio

    try:
        return int(getattr(fabio.openheader(str(path)), "nframes", 1) or 1)
    except Exception as exc:  # as open_image: a file fabio cannot parse is named
        raise _unreadable(path, "frame", exc) from exc


def stack(files: list[Path], source: str) -> tuple[Any, dict[str, Any]]:
    """Lazy (frame, det_y, det_x) dask array of `files` and the first frame's header.

    A multi-frame file contributes all its frames, in order.
    """
    import dask.array as da

    entries: list[tuple[str, int]] = []
    header: dict[str, Any] = {}
    shape = dtype = None
    for f in files:
        if shape is None:  # the first frame decoded: shape, dtype and header
            with open_image(f) as img:
                shape, dtype = tuple(img.data.shape), img.data.dtype
                header = dict(img.header)
                n = int(getattr(img, "nframes", 1) or 1)
        else:  # the others: only their headers, for the frame count (multi-frame files)
            n = _frame_count(f)
        entries.extend((str(f), k) for k in range(n))
    assert shape is not None and dtype is not None
    if len(shape) != 2 or min(shape) < 8:
        raise DataError(f"{files[0]}: a frame of shape {shape}; expected 2-D frames of at "
                        "least 8x8 pixels")
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DataError(f"{files[0]}: frames of dtype {dtype}; expected real counts")
    check_fits_in_memory(source, (len(entries), *shape), np.dtype(dtype).itemsize)
    arr = da.from_array(_FabioFrames(entries, shape, dtype), chunks=(1, *shape),
                        asarray=True, lock=False, name=f"fabio-{source}-{len(entries)}")
    return arr, header


def read_image(path: str | Path, shape: tuple[int, ...], what: str,
               roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One auxiliary image (dark, flat, mask) of the frames' `shape`, cropped to `roi`
    (row0, rows, col0, cols) when it covers the whole detector."""
    p = Path(path)
    with open_image(p, what) as img:
        a = np.asarray(img.data)
    if roi is not None and a.shape != tuple(shape) and a.shape[0] >= roi[0] + roi[1] and \
            a.shape[1] >= roi[2] + roi[3]:
        a = a[roi[0]:roi[0] + roi[1], roi[2]:roi[2] + roi[3]]
    if a.shape != tuple(shape):
        raise DataError(f"{p} ({what}) has shape {a.shape}; expected the frames' shape "
                        f"{tuple(shape)}" + (f" or the full detector holding the region "
                                             f"{list(roi)}" if roi is not None else ""))
    return a


_CBF_FIELDS = {  # Pilatus mini-header: key -> (regex, attr)
    "Pixel_size": r"#\s*Pixel_size\s+([\d.eE+-]+)\s*(\w+)",
    "Detector_distance": r"#\s*Detector_distance\s+([\d.eE+-]+)\s*(\w+)",
    "Wavelength": r"#\s*Wavelength\s+([\d.eE+-]+)\s*(\w+)",
    "Beam_xy": r"#\s*Beam_xy\s*\(\s*([\d.eE+-]+)\s*,\s*([\d.eE+-]+)\s*\)\s*(\w+)",
}


def header_geometry(header: dict[str, Any], where: str) -> tuple[dict[str, Any],
                                                                  dict[str, str]]:
    """Wavelength, distance, pixel size and beam centre from a frame header (SI units).

    Returns the values and, per value, where it came from.
    """
    geo: dict[str, Any] = {}
    src: dict[str, str] = {}
    text = str(header.get("_array_data.header_contents", ""))
    if text:
        for key, attr in (("Pixel_size", "pixel_size_m"), ("Detector_distance", "distance_m"),
                          ("Wavelength", "wavelength_m")):
            m = re.search(_CBF_FIELDS[key], text)
            if m:
                geo[attr] = to_si(float(m.group(1)), m.group(2), "length", where)
                src[attr] = f"{where} CBF header {key} ({m.group(2)})"
        m = re.search(_CBF_FIELDS["Beam_xy"], text)
        if m:
            if m.group(3).lower() not in ("pixel", "pixels"):
                raise DataError(f"{where}: CBF header Beam_xy is in {m.group(3)!r}; "
                                "expected pixels")
            geo["beam_centre_px"] = [float(m.group(2)), float(m.group(1))]
            src["beam_centre_px"] = f"{where} CBF header Beam_xy (pixels)"
    for key, attr in (("SampleDistance", "distance_m"), ("WaveLength", "wavelength_m"),
                      ("PSize_1", "pixel_size_m")):  # ESRF EDF keys, in metres
        if key in header and attr not in geo:
            try:
                geo[attr] = float(header[key])
            except ValueError:
                continue
            src[attr] = f"{where} EDF header {key} (m)"
    if "Center_1" in header and "Center_2" in header and "beam_centre_px" not in geo:
        try:
            geo["beam_centre_px"] = [float(header["Center_2"]), float(header["Center_1"])]
            src["beam_centre_px"] = f"{where} EDF header Center_2, Center_1 (pixels)"
        except ValueError:
            pass
    if "wavelength_m" in geo:
        geo["energy_eV"] = HC / geo["wavelength_m"] / 1.602176634e-19
    return geo, src


def read_frames(path: str | Path, *, mask: str | None = None, dark: str | None = None,
                flat: str | None = None, checksum: bool = True) -> xr.Dataset:
    """Read a frame file, a folder of frame files or a glob of them.

    Parameters
    ----------
    path : str or Path
        An EDF/CBF/TIFF (or other fabio) file, possibly multi-frame; a folder (its frame
        files in natural order, files named dark*, white*, flat*, mask* left out); or a
        glob (``"scan_*.cbf"``).
    mask : str, optional
        Image file of the pixel mask (non-zero = bad pixel).
    dark, flat : str, optional
        Image files of the dark frame and the flat (white) field.
    checksum : bool
        SHA-256 of the frame files for provenance.

    Returns
    -------
    xarray.Dataset
        ``intensity`` (lazy, ``(frame, det_y, det_x)``, or ``(det_y, det_x)`` for one
        frame, stored dtype), ``mask`` (bool, True = valid, ``(det_y, det_x)``),
        optional ``dark``/``flat`` (float32); geometry of the first frame's header in SI
        units in attrs, its sources in ``attrs["geometry_sources"]``.
    """
    import hashlib

    files = frame_files(path)
    source = str(path)
    frames, header = stack(files, source)
    if frames.shape[0] == 1:
        frames = frames[0]
    shape = tuple(frames.shape[-2:])
    dims = schema.detector_dims(frames.ndim)
    data_vars: dict[str, Any] = {schema.INTENSITY: (dims, frames)}
    valid = np.ones(shape, bool)
    if mask is not None:
        valid = read_image(mask, shape, "mask") == 0
    data_vars[schema.MASK] = (dims[-2:], valid)
    attrs: dict[str, Any] = {"source": str(Path(files[0]).resolve().parent if len(files) > 1
                                           else Path(files[0]).resolve()),
                             "source_dataset": source, "source_layout": "frames",
                             "source_files": len(files)}
    for key, name in ((schema.DARK, dark), (schema.FLAT, flat)):
        if name is not None:
            data_vars[key] = (dims[-2:], read_image(name, shape, key).astype(np.float32))
            attrs[f"{key}_source"] = str(name)
    geo, src = header_geometry(header, str(files[0]))
    attrs.update(geo)
    attrs["geometry_sources"] = src
    if checksum:
        h = hashlib.sha256()
        for f in files:
            h.update(Path(f).read_bytes())
        attrs["source_sha256"] = h.hexdigest()
    return xr.Dataset(data_vars, attrs=attrs)
