"""Read HDF5 detector data (NeXus NXdata, CXI, Eiger master + data files) lazily.

The reader finds the frames without being told, in this order:

1. an explicit ``dataset=`` path;
2. Eiger-style master files: ``/entry/data/data_000001, data_000002, ...``
   (usually external links to bitshuffle/LZ4-compressed data files),
   concatenated along the frame axis;
3. NeXus ``NXdata`` groups with a ``signal`` attribute;
4. CXI ``/entry_N/data_N/data`` and ``/entry_N/instrument_N/detector_N/data``;
5. ``/entry/data/data``.

Several different candidates are an error that lists them (use ``dataset=``).
Frames stay on disk: the intensity is a dask array read one frame per chunk.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and friends with HDF5)
import numpy as np
import xarray as xr

from .. import schema
from .._resources import check_fits_in_memory
from ..errors import DataError, InputError
from ._geometry import _angles, _dataset, _geometry, _positioners

_EIGER_DATA = re.compile(r"^data_\d{6}$")


MASK_PATHS = (
    "/entry/instrument/detector/pixel_mask",
    "/entry/instrument/detector/detectorSpecific/pixel_mask",
    "/entry_1/instrument_1/detector_1/mask",
    "/entry_1/instrument_1/detector_1/pixel_mask",
    "/entry/data/mask",
)


DARK_PATHS = (
    "/entry_1/instrument_1/detector_1/darkfield",
    "/entry_1/instrument_1/detector_1/dark",
    "/entry/instrument/detector/dark",
    "/entry/instrument/detector/darkfield",
)


FLAT_PATHS = (
    "/entry_1/instrument_1/detector_1/whitefield",
    "/entry_1/instrument_1/detector_1/flatfield",
    "/entry/instrument/detector/flatfield",
)


TRUTH_GROUP = "/entry_1/sample_1/sipflow_truth"

#: candidates listed in an "ambiguous frames" message (the search stops after one more)
MAX_CANDIDATES = 10


@dataclass(frozen=True)
class _Candidate:
    layout: str
    paths: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str


class _H5Frames:
    """Array-like over one HDF5 dataset that opens the file only while reading a chunk.

    Keeps no file handle open, so it pickles and works from dask workers.
    """

    def __init__(self, file: str, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.file, self.path, self.shape, self.dtype = file, path, shape, np.dtype(dtype)
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            with h5py.File(self.file, "r") as f:
                return f[self.path][key]
        except (OSError, KeyError) as exc:
            raise InputError(
                f"{self.file}: cannot read {self.path} {key!r}: {exc}. "
                "The file may be truncated or an external data file missing."
            ) from exc


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an HDF5 file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (this user cannot read the file)")
    try:
        is_h5 = h5py.is_hdf5(str(path))
    except OSError:
        is_h5 = False
    if not is_h5:
        raise InputError(f"{path}: not an HDF5 file (no HDF5 signature); "
                         "sipflow reads NeXus, CXI and Eiger HDF5 files")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: HDF5 signature found but the file cannot be opened "
                         f"(truncated or corrupt?): {exc}") from exc


def _inventory(f: h5py.File, limit: int = 25) -> str:
    """'path shape dtype' of every dataset, for error messages."""
    rows: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and len(rows) < limit:
            rows.append(f"/{name} {obj.shape} {obj.dtype}")

    try:
        f.visititems(visit)
    except (KeyError, OSError):
        pass
    broken = _dangling_links(f)
    if broken:
        rows.append("broken external links: " + "; ".join(broken))
    return "; ".join(rows) if rows else "no datasets at all"


def _dangling_links(f: h5py.File, limit: int = 10) -> list[str]:
    """External links whose target cannot be opened, as '/path -> file:/target'."""
    out: list[str] = []

    def walk(group: h5py.Group, prefix: str) -> None:
        for name in group:
            if len(out) >= limit:
                return
            link = group.get(name, getlink=True)
            path = f"{prefix}/{name}"
            if isinstance(link, h5py.ExternalLink):
                try:
                    group[name]
                except (KeyError, OSError):
                    out.append(f"{path} -> {link.filename}:{link.path} (missing)")
                continue
            if isinstance(link, h5py.HardLink):
                try:
                    obj = group[name]
                except (KeyError, OSError):
                    continue
                if isinstance(obj, h5py.Group):
                    walk(obj, path)

    try:
        walk(f, "")
    except (KeyError, OSError, RuntimeError):
        pass
    return out


def _find_candidates(f: h5py.File, fname: Path) -> list[_Candidate]:
    found: list[_Candidate] = []
    seen: set[tuple[int, int]] = set()

    def add(layout: str, paths: tuple[str, ...], shape: tuple[int, ...], dtype: Any) -> None:
        ids = {(f[p].id.fileno, h5py.h5o.get_info(f[p].id).addr) for p in paths}
        if ids & seen or len(found) > MAX_CANDIDATES:
            return
        seen.update(ids)
        found.append(_Candidate(layout, paths, tuple(shape), str(dtype)))

    # Eiger master: /entry/data/data_000001 ... (external links)
    group = f.get("/entry/data")
    if isinstance(group, h5py.Group):
        names = sorted(k for k in group.keys() if _EIGER_DATA.match(k))
        if names:
            shapes, dtype = [], None
            for n in names:
                try:
                    d = group[n]
                except KeyError as exc:
                    link = group.get(n, getlink=True)
                    target = getattr(link, "filename", "?")
                    raise InputError(f"{fname}: /entry/data/{n} links to {target!r}, which "
                                     f"cannot be opened ({exc}). Keep the Eiger data files "
                                     "next to the master file.") from exc
                shapes.append(d.shape)
                dtype = d.dtype
            if len({s[1:] for s in shapes}) != 1 or any(len(s) != 3 for s in shapes):
                raise DataError(f"{fname}: Eiger data files have inconsistent shapes {shapes}")
            total = (sum(s[0] for s in shapes), *shapes[0][1:])
            add("eiger", tuple(f"/entry/data/{n}" for n in names), total, dtype)

    # NeXus NXdata with a signal attribute
    def visit(name: str, obj: Any) -> bool | None:
        if not isinstance(obj, h5py.Group):
            return
        nxclass = obj.attrs.get("NX_class", b"")
        nxclass = nxclass.decode() if isinstance(nxclass, bytes) else str(nxclass)
        if len(found) > MAX_CANDIDATES:
            return True  # enough to say it is ambiguous: stop walking the file
        signal = obj.attrs.get("signal")
        if nxclass == "NXdata" and signal is not None:
            signal = signal.decode() if isinstance(signal, bytes) else str(signal)
            d = _dataset(f, f"/{name}/{signal}")
            if d is not None:
                add("nexus", (d.name,), d.shape, d.dtype)

    f.visititems(visit)

    # NeXus NXdetector/data (BLISS: /1.1/instrument/<det>/data) and NanoMAX's
    # /entry/measurement/<det>/frames
    def detector_data(name: str, obj: Any) -> bool | None:
        if len(found) > MAX_CANDIDATES:
            return True
        if not isinstance(obj, h5py.Group):
            return None
        nxclass = obj.attrs.get("NX_class", b"")
        nxclass = nxclass.decode() if isinstance(nxclass, bytes) else str(nxclass)
        for sub, wanted in (("data", nxclass == "NXdetector"),
                            ("frames", name.rsplit("/", 2)[-2:-1] == ["measurement"])):
            d = _dataset(f, f"/{name}/{sub}") if wanted else None
            if d is not None and d.ndim in (2, 3):
                add("nexus", (d.name,), d.shape, d.dtype)

    f.visititems(detector_data)

    # CXI
    for key in sorted(f.keys()):
        if not key.startswith("entry_"):
            continue
        for sub in ("data_1/data", "instrument_1/detector_1/data"):
            d = _dataset(f, f"/{key}/{sub}")
            if d is not None:
                add("cxi", (f"/{key}/{sub}",), d.shape, d.dtype)
    d = _dataset(f, "/entry/data/data")
    if d is not None:
        add("nexus", ("/entry/data/data",), d.shape, d.dtype)
    return found


def _aux(f: h5py.File, fname: Path, explicit: str | None, defaults: tuple[str, ...],
         what: str) -> tuple[str, np.ndarray] | None:
    if explicit is not None:
        d = _dataset(f, explicit)
        if d is None:
            raise InputError(f"{fname}: {what} dataset {explicit!r} not found. "
                             f"Datasets in the file: {_inventory(f)}")
        return explicit, d[()]
    for path in defaults:
        d = _dataset(f, path)
        if d is not None:
            return path, d[()]
    return None


def _frames(f: h5py.File, fname: Path, dataset: str | None) -> _Candidate:
    """The detector frames of `f` (the `dataset` named, else the one found), checked: real
    numbers, 2-D or 3-D, at least 8x8 pixels, within memory."""
    if dataset is not None:
        d = _dataset(f, dataset)
        if d is None:
            raise InputError(f"{fname}: dataset {dataset!r} not found. "
                             f"Datasets in the file: {_inventory(f)}")
        cand = _Candidate("explicit", (d.name,), d.shape, str(d.dtype))
    else:
        found = _find_candidates(f, fname)
        if not found:
            raise InputError(
                f"{fname}: no detector frames found (looked for Eiger /entry/data/data_NNNNNN, "
                "NeXus NXdata@signal, CXI /entry_1/data_1/data and "
                f"/entry_1/instrument_1/detector_1/data). Found: {_inventory(f)}. "
                "Name the frames with --dataset /path/in/file."
            )
        if len(found) > 1:
            listing = "; ".join(f"{'+'.join(c.paths)} {c.shape} {c.dtype}"
                                for c in found[:MAX_CANDIDATES])
            more = (f" and more (only the first {MAX_CANDIDATES} are listed)"
                    if len(found) > MAX_CANDIDATES else "")
            raise InputError(f"{fname}: several datasets look like detector frames: "
                             f"{listing}{more}. Choose one with --dataset /path/in/file.")
        cand = found[0]
    if not np.issubdtype(np.dtype(cand.dtype), np.number) or np.issubdtype(
            np.dtype(cand.dtype), np.complexfloating):
        raise DataError(f"{fname}:{cand.paths[0]} has dtype {cand.dtype}; "
                        "expected real photon counts (integer or float)")
    ndim = len(cand.shape)
    if ndim not in (2, 3):
        raise DataError(
            f"{fname}:{cand.paths[0]} has shape {cand.shape} ({ndim}-D); expected a 2-D "
            "pattern (rows, cols) or a 3-D scan (frames, rows, cols)")
    if min(cand.shape[-2:]) < 8 or cand.shape[0] == 0:
        raise DataError(f"{fname}:{cand.paths[0]} has shape {cand.shape}; "
                        "expected at least 8x8 pixels per frame")
    check_fits_in_memory(f"{fname}:{'+'.join(cand.paths)}", cand.shape,
                         np.dtype(cand.dtype).itemsize)
    return cand


def _auxiliary(f: h5py.File, fname: Path, options: dict[str, str | bool | None],
               shape: tuple[int, ...], dims: tuple[str, ...], data_vars: dict[str, Any],
               attrs: dict[str, Any]) -> None:
    """Add the mask (True = valid), dark and flat field of `f` to `data_vars`: each at the
    path given in `options`, else found at its usual paths; ``False`` skips it."""
    for key, defaults, what in ((schema.MASK, MASK_PATHS, "mask"),
                                (schema.DARK, DARK_PATHS, "dark"),
                                (schema.FLAT, FLAT_PATHS, "flat-field")):
        explicit = options[key]
        if explicit is False:
            continue
        got = _aux(f, fname, explicit if isinstance(explicit, str) else None, defaults, what)
        if got is None:
            continue
        apath, arr = got
        arr = np.asarray(arr)
        if arr.shape != tuple(shape[-2:]) and arr.shape != tuple(shape):
            raise DataError(f"{fname}:{apath} ({what}) has shape {arr.shape}; expected "
                            f"the detector shape {tuple(shape[-2:])}"
                            + (f" or the frames' shape {tuple(shape)}"
                               if len(shape) == 3 else ""))
        attrs[f"{key}_source"] = apath
        if key == schema.MASK:
            data_vars[key] = (dims[-arr.ndim:], arr == 0)
        else:
            data_vars[key] = (dims[-arr.ndim:], arr.astype(np.float32))


def read_hdf5(path: str | Path, *, dataset: str | None = None, mask: str | bool | None = None,
              dark: str | bool | None = None, flat: str | bool | None = None,
              checksum: bool = True) -> xr.Dataset:
    """Read detector frames and what describes them from an HDF5 file.

    Parameters
    ----------
    path : str or Path
        NeXus / CXI file or Eiger master file.
    dataset : str, optional
        HDF5 path of the frames; overrides the automatic search.
    mask, dark, flat : str or bool, optional
        HDF5 path of the pixel mask (non-zero = bad pixel, NeXus/CXI convention),
        dark frame and flat field; ``False`` skips it; default: found automatically.
    checksum : bool
        Compute the file's SHA-256 for provenance.

    Returns
    -------
    xarray.Dataset
        ``intensity`` (lazy dask array, ``(frame, det_y, det_x)`` or ``(det_y, det_x)``,
        stored dtype, photon counts), ``mask`` (bool, True = valid, ``(det_y, det_x)``
        or full shape), optional ``dark``/``flat`` (float32, ``(det_y, det_x)``),
        ``obj_true``/``support_true`` for simulated files; geometry in SI units in attrs.
    """
    import dask.array as da

    fname = Path(path).resolve()
    with _open(fname) as f:
        cand = _frames(f, fname, dataset)

        parts = []
        for p in cand.paths:
            d = f[p]
            chunks = (1, *d.shape[1:]) if d.ndim == 3 else d.shape
            parts.append(da.from_array(_H5Frames(str(fname), p, d.shape, d.dtype),
                                       chunks=chunks, asarray=True, lock=False,
                                       name=f"h5-{fname}-{p}-{d.id.__hash__()}"))
        frames = parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)
        if frames.ndim == 3 and frames.shape[0] == 1:
            frames = frames[0]
        dims = schema.detector_dims(frames.ndim)
        data_vars: dict[str, Any] = {schema.INTENSITY: (dims, frames)}
        attrs: dict[str, Any] = {
            "source": str(fname),
            "source_dataset": "+".join(cand.paths),
            "source_layout": cand.layout,
        }

        _auxiliary(f, fname, {schema.MASK: mask, schema.DARK: dark, schema.FLAT: flat},
                   frames.shape, dims, data_vars, attrs)

        truth = f.get(TRUTH_GROUP)
        if isinstance(truth, h5py.Group) and "obj" in truth:
            obj = truth["obj"][()]
            rdims = schema.real_dims(obj.ndim)
            data_vars[schema.OBJ_TRUE] = (rdims, obj.astype(np.complex64))
            if "support" in truth:
                data_vars[schema.SUPPORT_TRUE] = (rdims, truth["support"][()].astype(bool))
        attrs.update(_geometry(f))
        n = frames.shape[0] if frames.ndim == 3 else None
        attrs.update(_angles(f, n))
        positioners = _positioners(f, n)
        if positioners:
            attrs["positioners"] = positioners

    if checksum:
        attrs["source_sha256"] = sha256_file(fname)
    return xr.Dataset(data_vars, attrs=attrs)
