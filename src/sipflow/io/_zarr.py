"""Write and open sipflow result stores (Zarr v3 through xarray).

A store is written under a temporary name beside the target and renamed into
place only after every array and the completion marker are on disk, so a
crash never leaves a store that looks complete, and an existing result is
replaced only when ``overwrite=True`` (and only once the new one is complete).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..errors import OutputError
from ._fs import OutputLock, is_within, lock_path, remove_stale_leftovers, rename_noreplace


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


def store_state(path: str | Path) -> str | None:
    """``"complete"``, ``"partial"`` (a sipflow store whose writer did not finish) or None.

    None means `path` is not a sipflow store: missing, not Zarr v3, or Zarr written by
    something else. Only sipflow stores are ever replaced by ``overwrite``.
    """
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(attrs, dict) or schema.FORMAT_ATTR not in attrs:
        return None
    return "complete" if attrs.get(schema.COMPLETE_ATTR) is True else "partial"


def check_writable(path: str | Path, *, overwrite: bool = False,
                   inputs: tuple[str | Path, ...] = ()) -> Path:
    """Raise :class:`OutputError` unless a store can be written at `path`.

    Called before any work starts, so a long run never ends in 'cannot write'.

    Parameters
    ----------
    path : str or Path
        The store to create.
    overwrite : bool
        Allow replacing an existing *sipflow* store (finished or not); anything
        else at `path` is always refused.
    inputs : tuple of paths
        Files the run reads; an output equal to, inside or containing one is refused.
    """
    path = Path(path).absolute()
    for inp in inputs:
        inp = Path(inp)
        if not inp.exists():
            continue
        if is_within(path, inp) or is_within(inp, path):
            how = ("is the input" if path.resolve() == inp.resolve()
                   else "would be inside, or would contain, the input")
            raise OutputError(f"{path}: the output {how} {inp}; sipflow never writes over "
                              "its input. Choose an output path outside it")
    if path.is_symlink() or path.exists():
        if not overwrite:
            raise OutputError(f"{path}: output exists; choose another path or pass --overwrite "
                              "to replace it (the old result is kept until the new one is "
                              "complete)")
        if path.is_symlink() or not path.is_dir() or store_state(path) is None:
            raise OutputError(f"{path}: exists and is not a sipflow result store, so --overwrite "
                              "will not replace it (sipflow only replaces stores it wrote); "
                              "remove it yourself or choose another path")
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
    if lock_path(path).exists():  # another writer, or a stale lock that this clears
        with OutputLock(path):
            pass
    return path


def _array_checksums(root: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of every array's stored chunk files (sorted by key), per array."""
    out = {}
    for name in names:
        h = hashlib.sha256()
        adir = root / name
        files = sorted(p for p in adir.rglob("*") if p.is_file() and p.name != "zarr.json")
        for f in files:
            h.update(str(f.relative_to(adir)).encode())
            h.update(b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(block)
        out[name] = h.hexdigest()
    return out


def _check_checksum_keys(path: Path, expected: object) -> None:
    """Refuse checksum metadata that is not ``{array name: hex digest}`` naming arrays of
    the store (a tampered key such as ``../../x`` or ``/`` would hash trees outside it)."""
    if not isinstance(expected, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in expected.items()):
        raise OutputError(f"{path}: its zarr.json has {schema.CHECKSUM_ATTR} of type "
                          f"{type(expected).__name__}, expected a mapping of array names to "
                          "SHA-256 digests; the store was modified and cannot be verified. "
                          "Rerun to produce the result again")
    bad = [k for k in expected
           if not k or k in (".", "..") or "/" in k or "\\" in k
           or not (path / k / "zarr.json").is_file()]
    if bad:
        raise OutputError(f"{path}: its zarr.json lists checksums for {', '.join(map(repr, bad))}, "
                          "which are not arrays of this store; the store was modified and "
                          "cannot be verified. Rerun to produce the result again")


def verify_store(path: str | Path) -> None:
    """Recompute the per-array checksums written at completion; raise on any mismatch.

    Raises
    ------
    OutputError
        Naming the store and every array whose stored bytes changed since it was written.
    """
    path = Path(path)
    attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    expected = attrs.get(schema.CHECKSUM_ATTR)
    if not expected:
        return  # written before stores carried checksums (format 1)
    _check_checksum_keys(path, expected)
    actual = _array_checksums(path, sorted(expected))
    bad = [name for name in sorted(expected) if actual.get(name) != expected[name]]
    if bad:
        raise OutputError(f"{path}: the stored bytes of {', '.join(bad)} do not match the "
                          "checksums written when the store was completed (corrupted or "
                          "modified on disk); its values cannot be trusted. Rerun to produce "
                          "the result again")


def _space_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = "no space left on the device (or a size limit reached)"
    else:
        what = exc.strerror or str(exc)
    return OutputError(f"{path}: cannot write the store: {what} while writing "
                       f"{exc.filename or path.parent}; nothing was written and any older "
                       "result there is unchanged")


def _remove_tree(path: Path, timeout: float = 10.0, quiet: float = 0.25) -> None:
    """Remove a partial store, also what writes still in flight add to it meanwhile.

    Zarr writes chunks concurrently, so after one write fails others may still create
    files for a moment: the folder is removed until it has stayed absent for `quiet`
    seconds (at most `timeout` seconds in all).
    """
    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while time.monotonic() < deadline:
        if path.exists() or path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
        elif time.monotonic() - gone_since >= quiet:
            return
        time.sleep(0.02)


def save(ds: xr.Dataset, path: str | Path, *, overwrite: bool = False,
         inputs: tuple[str | Path, ...] = ()) -> Path:
    """Write `ds` as a complete sipflow Zarr v3 store at `path`.

    The store is written under a hidden temporary name, given per-array checksums
    and a completion mark, and then renamed into place; the rename refuses to
    replace anything that appeared meanwhile. While it is written the output is
    locked, so a second writer fails instead of replacing the first one's result.

    Parameters
    ----------
    ds : xarray.Dataset
        Any sipflow dataset (complex variables are stored as complex64/complex128).
    path : str or Path
        Target directory, conventionally ending in ``.zarr``.
    overwrite : bool
        Replace an existing sipflow store at `path` (never anything else). The old
        one is removed only after the new one is complete.
    inputs : tuple of paths
        Files this result was computed from; writing over or inside them is refused.

    Returns
    -------
    Path
        The absolute path of the store.
    """
    path = check_writable(path, overwrite=overwrite, inputs=inputs)  # clear messages first
    with OutputLock(path):
        path = check_writable(path, overwrite=overwrite, inputs=inputs)
        remove_stale_leftovers(path)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = path.with_name(f".{path.name}.partial-{tag}")
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
                group.attrs[schema.CHECKSUM_ATTR] = _array_checksums(
                    tmp, sorted(str(n) for n in out.variables))
                group.attrs[schema.COMPLETE_ATTR] = True
                zarr.consolidate_metadata(tmp)
        except OSError as exc:
            _remove_tree(tmp)
            raise _space_error(path, exc) from exc
        except BaseException:
            _remove_tree(tmp)
            raise
        trash = None
        if overwrite and (path.is_symlink() or path.exists()):
            if store_state(path) is None:  # checked again: it may have changed meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                raise OutputError(f"{path}: is no longer a sipflow store; not replacing it")
            trash = path.with_name(f".{path.name}.old-{tag}")
            path.rename(trash)
        try:
            rename_noreplace(tmp, path)
        except FileExistsError:
            shutil.rmtree(tmp, ignore_errors=True)
            if trash is not None:
                raise OutputError(f"{path}: appeared while this result was being written; the "
                                  f"previous result is kept at {trash}") from None
            raise OutputError(f"{path}: another result appeared there while this one was being "
                              "written; it was left untouched and this result was not saved "
                              "(pass another -o)") from None
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    return path


def is_complete(path: str | Path) -> bool:
    """True when `path` is a sipflow store whose writer finished."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False
    return attrs.get(schema.COMPLETE_ATTR) is True


def open_result(path: str | Path, *, load: bool = False, verify: bool = False) -> xr.Dataset:
    """Open a sipflow result store.

    Parameters
    ----------
    path : str or Path
        A store written by :func:`save`.
    load : bool
        Read every array into memory (default: lazily through dask).
    verify : bool
        Check every array against the checksums written at completion first.

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
    if verify:
        verify_store(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds = xr.open_zarr(path, consolidated=True, zarr_format=3)
    if load:
        ds = ds.load()
    for key in (schema.COMPLETE_ATTR, schema.FORMAT_ATTR, schema.CHECKSUM_ATTR):
        ds.attrs.pop(key, None)
    _check_metadata(path, ds.attrs)
    return ds


#: attrs every reader of a result relies on, and the JSON type each must have
_METADATA_TYPES = {"provenance": dict, "metrics": dict, "prep_window": dict,
                   "phase": dict, "refine_certificate": dict, "bragg_geometry": dict}


def _check_metadata(path: Path, attrs: dict) -> None:
    """Refuse a store whose sipflow metadata has the wrong structure (edited by hand or
    by another program), naming the key, instead of failing deep in a summary."""
    wrong = [f"{key} is a {type(attrs[key]).__name__}, expected a mapping"
             for key, kind in _METADATA_TYPES.items()
             if key in attrs and attrs[key] is not None and not isinstance(attrs[key], kind)]
    prov = attrs.get("provenance")
    if isinstance(prov, dict) and not (isinstance(prov.get("stages", []), list) and all(
            isinstance(st, dict) for st in prov.get("stages", []))):
        wrong.append("provenance.stages is not a list of mappings")
    if wrong:
        raise OutputError(f"{path}: its zarr.json is not sipflow's: {'; '.join(wrong)}. The "
                          "store was modified after it was written; rerun to produce the "
                          "result again")
