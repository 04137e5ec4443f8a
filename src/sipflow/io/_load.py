"""``sipflow.load``: pick the reader plugin for a file and read it."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

import xarray as xr

from ..contracts import default_registry
from ..errors import InputError, PluginError, ResourceError, SipflowError, unknown_choice

log = logging.getLogger("sipflow")


def load(path: str | Path, *, reader: str | None = None, registry: Any = None,
         **options: Any) -> xr.Dataset:
    """Read detector data from `path` with the best-suited reader plugin.

    Parameters
    ----------
    path : str or Path
        Input: an HDF5 file (NeXus, CXI, Eiger master), a SPEC file (with ``scan=``), a
        frame file (EDF, CBF, TIFF, ...), a folder of frame files or a glob of them.
    reader : str, optional
        Name of the reader to use (``sipflow plugins`` lists them).
    registry : sipflow.plugins.Registry, optional
        The plugins to use (default: the process-wide registry).
    **options
        Passed to the reader (HDF5: ``dataset``, ``mask``, ``dark``, ``flat``; SPEC:
        ``scan``, ``frames``, ``dark``, ``flat``, ``mask``). ``beamline`` names a preset
        (``sipflow beamlines``): readers that take it get the preset, and the dataset
        records its name for ``bragg.orthogonalize``.

    Returns
    -------
    xarray.Dataset
        With at least ``intensity``; see :mod:`sipflow.schema`.
    """
    path = Path(path)
    registry = registry or default_registry()
    readers = registry.readers
    if options.get("beamline") is not None:
        options["beamline"] = registry.beamline(str(options["beamline"]))
    if reader is not None:
        chosen = [r for r in readers if r.name == reader]
        if not chosen:
            raise InputError(unknown_choice("reader", reader, [r.name for r in readers]))
        return _checked(_read(registry, chosen[0], path, options), path)
    is_glob = glob.has_magic(str(path)) and not path.exists()
    if is_glob:
        if not glob.glob(str(path)):
            raise InputError(f"{path}: no file matches this pattern")
    elif path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python raises this for a loop of symbolic links
            raise InputError(f"{path}: is a loop of symbolic links ({path.name} -> "
                             f"{os.readlink(path)} -> ...); link it to the scan file") from None
        except OSError:
            pass
        raise InputError(f"{path}: is a link to {os.readlink(path)}, which does not exist")
    elif not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_file() and not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (this user cannot read the file)")
    scored = []
    for i, r in enumerate(readers):
        try:
            confidence = int(r.can_read(path))
        except Exception as exc:  # a broken plugin must not break every load
            log.warning("reader %r of plugin %r failed on %s and is skipped: %s: %s", r.name,
                        registry.reader_plugin(r), path, type(exc).__name__, exc)
            continue
        scored.append((confidence, i, r))
    scored.sort(key=lambda t: (-t[0], t[1]))
    if not scored or scored[0][0] <= 0:
        raise InputError(f"{path}: no reader recognises it (readers: "
                         f"{', '.join(r.name for r in readers)}). sipflow reads NeXus, CXI "
                         "and Eiger HDF5 files, SPEC files with their frame folders, and "
                         "EDF, CBF and TIFF frames (a file, a folder or a glob).")
    return _checked(_read(registry, scored[0][2], path, options), path)


def _read(registry: Any, reader: Any, path: Path, options: dict[str, Any]) -> xr.Dataset:
    """Call ``reader.read``; anything but a sipflow error is the plugin's fault, named."""
    accepted = getattr(reader, "options", None)
    preset = options.get("beamline")
    if preset is not None and accepted is not None and "beamline" not in accepted:
        options = {k: v for k, v in options.items() if k != "beamline"}
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(f"{path}: reader {reader.name!r} does not take the option(s) "
                             f"{', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}")
    try:
        ds = reader.read(path, **options)
        if preset is not None and isinstance(ds, xr.Dataset):
            ds.attrs["beamline"] = preset.name
        return ds
    except SipflowError:
        raise
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied reading {exc.filename or path}") from exc
    except MemoryError as exc:
        raise ResourceError(f"{path}: reading it ran out of memory") from exc
    except Exception as exc:
        owner = registry.reader_plugin(reader)
        if owner.startswith("sipflow."):
            raise
        raise PluginError(f"{path}: reader {reader.name!r} of plugin {owner!r} failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def _checked(ds: Any, path: Path) -> xr.Dataset:
    """The reader's result, if it is a dataset with intensity of a size that fits memory."""
    from .. import schema
    from .._resources import check_fits_in_memory

    if not isinstance(ds, xr.Dataset) or schema.INTENSITY not in ds:
        raise PluginError(f"{path}: the reader returned {type(ds).__name__} without an "
                          f"'{schema.INTENSITY}' variable; expected an xarray.Dataset")
    var = ds[schema.INTENSITY]
    check_fits_in_memory(f"{path}:{ds.attrs.get('source_dataset', schema.INTENSITY)}",
                         tuple(var.shape), var.dtype.itemsize)
    return ds
