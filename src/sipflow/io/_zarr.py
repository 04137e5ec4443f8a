"""Write and open sipflow result stores (Zarr v3 through xarray).

A store is written under a temporary name beside the target and renamed into
place only after every array and the completion marker are on disk, so a
crash never leaves a store that looks complete, and an existing result is
replaced only when ``overwrite=True`` (and only once the new one is complete).
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..errors import OutputError


def _jsonable(value: Any) -> Any:
    """Convert attrs to plain JSON types (numpy scalars, tuples, paths, dates)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path | datetime | date):
        return str(value)
    return json.loads(json.dumps(value, default=str))


def check_writable(path: str | Path, *, overwrite: bool = False) -> Path:
    """Raise :class:`OutputError` unless a store can be written at `path`.

    Called before any work starts, so a long run never ends in 'cannot write'.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists; choose another path or pass --overwrite "
                          "to replace it (the old result is kept until the new one is complete)")
    parent = path.parent
    if not parent.exists():
        raise OutputError(f"{path}: the output folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is not a folder")
    probe = parent / f".sipflow-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise OutputError(f"{path}: the output folder {parent} is not writable ({exc})") from exc
    return path


def save(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `ds` as a complete sipflow Zarr v3 store at `path`.

    Parameters
    ----------
    ds : xarray.Dataset
        Any sipflow dataset (complex variables are stored as complex64/complex128).
    path : str or Path
        Target directory, conventionally ending in ``.zarr``.
    overwrite : bool
        Replace an existing store at `path`. The old one is removed only after
        the new one is complete.

    Returns
    -------
    Path
        The absolute path of the store.
    """
    path = check_writable(path, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    out = ds.copy()
    out.attrs = _jsonable(dict(ds.attrs))
    out.attrs[schema.FORMAT_ATTR] = schema.FORMAT_VERSION
    out.attrs[schema.COMPLETE_ATTR] = False
    for name, var in out.variables.items():
        var.attrs = _jsonable(dict(var.attrs))
        var.encoding = {}
        if var.dtype == object:
            raise OutputError(f"{path}: variable {name!r} has dtype object; cannot store it")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            out.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=True, compute=True)
            import zarr

            group = zarr.open_group(tmp, mode="r+", zarr_format=3)
            group.attrs[schema.COMPLETE_ATTR] = True
            zarr.consolidate_metadata(tmp)
    except PermissionError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{path}: cannot write the store: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        path.rename(trash)
        tmp.rename(path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def is_complete(path: str | Path) -> bool:
    """True when `path` is a sipflow store whose writer finished."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get(schema.COMPLETE_ATTR) is True


def open_result(path: str | Path, *, load: bool = False) -> xr.Dataset:
    """Open a sipflow result store.

    Parameters
    ----------
    path : str or Path
        A store written by :func:`save`.
    load : bool
        Read every array into memory (default: lazily through dask).

    Raises
    ------
    OutputError
        When `path` is not a store or was not written completely.
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise OutputError(f"{path}: not a Zarr v3 store (no zarr.json)")
    if not is_complete(path):
        raise OutputError(f"{path}: incomplete sipflow store (the run that wrote it did not "
                          "finish, or it was not written by sipflow); rerun to produce it")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds = xr.open_zarr(path, consolidated=True, zarr_format=3)
    if load:
        ds = ds.load()
    for key in (schema.COMPLETE_ATTR, schema.FORMAT_ATTR):
        ds.attrs.pop(key, None)
    return ds
