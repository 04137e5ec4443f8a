"""VTK ImageData (``.vti``) export of a result on a regular grid in nm (ParaView, VisIt,
PyVista, 3D Slicer read it)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

from .. import schema
from ..errors import DataError, OutputError
from ._fs import rename_noreplace

#: the lab axes in a VTK image's (X, Y, Z) order: x outboard, y up, z downstream
VTK_AXES = ("x", "y", "z")


def _lab_grid(ds: xr.Dataset, source: str) -> tuple[tuple[str, ...], list[float], list[float]]:
    """Dims (z, y, x), origin and spacing [nm] in VTK's (X, Y, Z) order, checked."""
    if schema.OBJ not in ds:
        raise DataError(f"{source}: has no reconstructed object 'obj' to export")
    dims = tuple(ds[schema.OBJ].dims)
    if sorted(dims) != sorted(VTK_AXES):
        raise DataError(f"{source}: obj has dims {dims}; a VTK image needs the 3-D object on "
                        "a laboratory grid with dims (z, y, x) in nm: run bragg.orthogonalize "
                        "first (the bcdi template does)")
    origin, spacing = [], []
    for d in VTK_AXES:
        c = np.asarray(ds[d].values, np.float64) if d in ds.coords else None
        if c is None or ds[d].attrs.get("units") != "nm" or c.size < 2:
            raise DataError(f"{source}: obj's axis {d!r} has no coordinates in nm; a VTK "
                            "image needs its voxel size: run bragg.orthogonalize first")
        step = np.diff(c)
        if not np.allclose(step, step.mean(), rtol=1e-6, atol=0) or step.mean() <= 0:
            raise DataError(f"{source}: obj's axis {d!r} is not evenly spaced (steps "
                            f"{step.min():.4g}..{step.max():.4g} nm); a VTK image needs a "
                            "regular grid")
        origin.append(float(c[0]))
        spacing.append(float(step.mean()))
    return dims, origin, spacing


def point_fields(ds: xr.Dataset, variables: list[str] | None = None
                 ) -> dict[str, np.ndarray]:
    """The arrays a VTK image of `ds` holds, each (z, y, x) on the grid of ``obj``.

    ``amplitude`` and ``phase`` (``ds["phase"]`` when a strain stage wrote it, its ramp
    removed; else the angle of ``obj``), then every other real or boolean variable on the
    same dims (``support``, ``surface``, ``displacement`` [nm], ``strain``); booleans as
    uint8, complex ones as ``<name>_amplitude`` and ``<name>_phase``.

    Parameters
    ----------
    ds : xarray.Dataset
        A result whose ``obj`` has dims (z, y, x).
    variables : list of str, optional
        Only these variables of `ds` (``obj`` gives amplitude and phase).
    """
    dims = tuple(ds[schema.OBJ].dims)
    names = [n for n in ds.data_vars if tuple(ds[n].dims) == dims]
    if variables is not None:
        unknown = [v for v in variables if v not in names]
        if unknown:
            raise DataError(f"{ds.attrs.get('source', 'the result')}: no variable "
                            f"{', '.join(map(repr, unknown))} on the grid of obj {dims}; "
                            f"there are {', '.join(names)}")
        names = [n for n in names if n in variables]
    fields: dict[str, np.ndarray] = {}
    for name in names:
        a = np.asarray(ds[name].values)
        if name == schema.OBJ:
            fields["amplitude"] = np.abs(a).astype(np.float32)
            if schema.PHASE not in names:  # else the stored phase, its ramp removed
                fields["phase"] = np.angle(a).astype(np.float32)
        elif np.iscomplexobj(a):
            fields[f"{name}_amplitude"] = np.abs(a).astype(np.float32)
            fields[f"{name}_phase"] = np.angle(a).astype(np.float32)
        elif a.dtype == bool:
            fields[name] = a.astype(np.uint8)
        elif np.issubdtype(a.dtype, np.number):
            fields[name] = a.astype(np.float32 if a.dtype.itemsize <= 4 else np.float64)
    return fields


def export_vti(ds: xr.Dataset, path: str | Path, *, variables: list[str] | None = None,
               overwrite: bool = False) -> Path:
    """Write the result's 3-D object and fields as a VTK ImageData file (``.vti``).

    Coordinates are in nm; the image's X, Y, Z are the lab axes x (outboard), y (up) and
    z (downstream) of ``bragg.orthogonalize``, so a viewer shows the crystal in the lab
    frame at its true size. The file is written under a hidden temporary name and renamed
    into place, so a file at `path` is always complete.

    Parameters
    ----------
    ds : xarray.Dataset
        A result with ``obj`` on dims (z, y, x) whose coordinates are in nm.
    path : str or Path
        The file to write; ``.vti`` is appended when missing.
    variables : list of str, optional
        Which variables to write (default: all on the grid of ``obj``, see
        :func:`point_fields`).
    overwrite : bool
        Replace an existing file at `path` (only a file, never a folder).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DataError
        When ``obj`` is not on a regular 3-D grid in nm.
    OutputError
        When `path` exists (and `overwrite` is false) or cannot be written.
    """
    from pyevtk.hl import imageToVTK

    source = ds.attrs.get("source", "the result")
    path = Path(path).absolute()
    if path.suffix != ".vti":
        path = path.with_name(path.name + ".vti")
    dims, origin, spacing = _lab_grid(ds, source)
    if path.is_symlink() or path.exists():
        if not overwrite or not path.is_file():
            raise OutputError(f"{path}: exists; choose another path"
                              + (" or pass --overwrite to replace it" if path.is_file()
                                 else ""))
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist")
    resolved = path.parent.resolve()
    if resolved.parts[1:2] in (("dev",), ("proc",), ("sys",)):
        raise OutputError(f"{path}: {resolved} is not a folder for files (a device or kernel "
                          "file system); write the .vti somewhere else")
    inside = next((p for p in (resolved, *resolved.parents) if (p / "zarr.json").is_file()),
                  None)
    if inside is not None:
        raise OutputError(f"{path}: is inside the Zarr store {inside}; writing there would "
                          "change the store (its checksums would no longer match). Write the "
                          ".vti beside it")
    fields = point_fields(ds, variables)
    if not fields:
        raise DataError(f"{source}: nothing to export on the grid of obj {dims}")
    # VTK wants (X, Y, Z) = (x, y, z) with X fastest: the transposed (z, y, x) arrays,
    # Fortran-contiguous
    order = [dims.index(d) for d in VTK_AXES]
    data = {k: np.asfortranarray(np.transpose(v, order)) for k, v in fields.items()}
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    written = Path(tmp.as_posix() + ".vti")
    try:
        imageToVTK(tmp.as_posix(), origin=tuple(origin), spacing=tuple(spacing),
                   pointData=data)
        if overwrite and path.is_file():
            os.replace(written, path)
        else:
            rename_noreplace(written, path)
    except FileExistsError:
        written.unlink(missing_ok=True)
        raise OutputError(f"{path}: appeared while the export was written; left untouched "
                          "(choose another path)") from None
    except OSError as exc:
        written.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the VTK image: {exc}") from exc
    except BaseException:
        written.unlink(missing_ok=True)
        raise
    return path
