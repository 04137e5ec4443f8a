"""What the napari reader shows, as plain data: no napari and no Qt here.

A *layer tuple* is napari's ``(data, kwargs, layer_type)``; the functions below build them
from a sipflow result store or a raw scan so that they can be tested and reused without a
viewer. Names follow ``"<name> <role>"``, where ``<name>`` is the store's (or scan file's)
stem and ``<role>`` one of :data:`ROLES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema

LayerTuple = tuple[Any, dict[str, Any], str]

#: key of a layer's ``metadata`` dict under which sipflow records what the layer shows
META_KEY = "sipflow"
#: roles of the layers, in the order they are added (the last is drawn on top)
ROLES = ("intensity", "mask", "runs amplitude", "runs phase", "amplitude", "phase", "support",
         "displacement", "strain")
#: cyclic colormap of phase layers
PHASE_COLORMAP = "twilight_shifted"
#: diverging colormap of signed fields (strain, displacement), limits symmetric about 0
DIVERGING_COLORMAP = "bwr"

_STORE_SUFFIXES = (".zarr",)
_SCAN_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".cxi", ".nx5")


@dataclass(frozen=True)
class Classified:
    """What a path is, for the reader.

    Attributes
    ----------
    kind : {"result", "scan", None}
        A finished sipflow store, an input scan, or neither.
    reason : str
        Why it is not readable (empty when `kind` is set); shown as a notification when
        the path looked like ours (an unfinished store, a scan sipflow cannot read).
    """

    kind: str | None
    reason: str = ""


def classify(path: str | Path) -> Classified:
    """Decide whether the sipflow reader takes `path`.

    A Zarr v3 group whose root attrs carry :data:`sipflow.schema.COMPLETE_ATTR` is a result;
    an unfinished sipflow store, a plain Zarr store and any other folder are refused (the
    first with a reason). Files with an HDF5 suffix are scans when a sipflow reader
    recognises them (checked cheaply here; :func:`scan_layers` reads them).
    """
    import json

    p = Path(path)
    meta = p / "zarr.json"
    if p.is_dir():
        if not meta.is_file():
            return Classified(None)
        try:
            attrs = json.loads(meta.read_text()).get("attributes", {}) or {}
        except (OSError, ValueError) as exc:
            return Classified(None, f"{p}: unreadable zarr.json ({exc})")
        if attrs.get(schema.COMPLETE_ATTR) is True:
            return Classified("result")
        if schema.FORMAT_ATTR in attrs:
            return Classified(None, f"{p}: unfinished sipflow store (the run that wrote it did "
                                    "not finish); sipflow does not show partial results")
        return Classified(None)
    if p.is_file() and p.suffix.lower() in _SCAN_SUFFIXES:
        try:
            import h5py

            if not h5py.is_hdf5(str(p)):
                return Classified(None, f"{p}: has an HDF5 suffix but no HDF5 signature")
        except OSError as exc:
            return Classified(None, f"{p}: cannot be read ({exc})")
        return Classified("scan")
    return Classified(None)


def real_space_scale(attrs: dict[str, Any], shape: tuple[int, ...]
                     ) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Pixel size and unit of each real-space axis of an object of `shape`.

    In the far field a detector of ``N`` pixels of size ``p`` at distance ``D`` samples an
    object with pixels of ``λ D / (N p)``. That is used for 2-D objects when
    ``wavelength_m``, ``distance_m`` and ``pixel_size_m`` are all in `attrs`; an explicit
    ``voxel_size_m`` (one value or one per axis, e.g. from an orthogonalisation stage) wins.
    3-D objects of a rocking scan are in the detector frame, whose third axis is not a
    length without the rocking geometry: they, and objects without geometry, stay in pixels.

    Returns
    -------
    scale : tuple of float
        Size of one pixel along each axis (nm, or 1 for pixels).
    units : tuple of str
        ``"nm"`` or ``"pixel"`` per axis.
    """
    ndim = len(shape)
    voxel = attrs.get("voxel_size_m")
    if voxel is not None:
        v = [float(voxel)] * ndim if np.isscalar(voxel) else [float(x) for x in voxel]
        if len(v) == ndim and all(math.isfinite(x) and x > 0 for x in v):
            return tuple(x * 1e9 for x in v), ("nm",) * ndim
    try:
        lam, dist = float(attrs["wavelength_m"]), float(attrs["distance_m"])
        pix = attrs["pixel_size_m"]
        pix = [float(pix)] * 2 if np.isscalar(pix) else [float(x) for x in pix][-2:]
    except (KeyError, TypeError, ValueError):
        return (1.0,) * ndim, ("pixel",) * ndim
    if ndim != 2 or not all(math.isfinite(x) and x > 0 for x in (lam, dist, *pix)):
        return (1.0,) * ndim, ("pixel",) * ndim
    return (tuple(lam * dist / (n * p) * 1e9 for n, p in zip(shape, pix, strict=True)),
            ("nm", "nm"))


#: results shown from memory (sample data, runs not yet saved), by source; newest last
_MEMORY: dict[str, xr.Dataset] = {}
_MEMORY_MAX = 8


def remember(source: str, ds: xr.Dataset) -> None:
    """Keep `ds` so that widgets can find the result of layers whose source is not a store."""
    _MEMORY.pop(source, None)
    _MEMORY[source] = ds
    while len(_MEMORY) > _MEMORY_MAX:
        _MEMORY.pop(next(iter(_MEMORY)))


def dataset_for(source: str) -> xr.Dataset:
    """The result dataset behind layers with metadata source `source` (memory or store).

    Raises
    ------
    OutputError
        When `source` is neither remembered nor a finished store.
    """
    if source in _MEMORY:
        return _MEMORY[source]
    from ..io import open_result

    return open_result(source)


def _meta(source: str, kind: str, role: str, variable: str) -> dict[str, Any]:
    return {META_KEY: {"source": source, "kind": kind, "role": role, "variable": variable}}


def _reference_phase(obj: np.ndarray, support: np.ndarray | None) -> complex:
    """exp(-iφ₀) that sets the amplitude-weighted mean phase inside the support to zero."""
    s = obj[support] if support is not None and support.any() else obj.ravel()
    total = complex(np.sum(s))
    return 1.0 if total == 0 else abs(total) / total


def _log_intensity(intensity: Any) -> Any:
    """log10(1 + counts), lazily for dask arrays (negative counts clipped to 0)."""
    import dask.array as da

    if isinstance(intensity, da.Array):
        return da.log10(1 + da.clip(intensity.astype(np.float32), 0, None))
    return np.log10(1 + np.clip(np.asarray(intensity, np.float32), 0, None))


def _detector_layers(ds: xr.Dataset, name: str, source: str, kind: str, visible: bool
                     ) -> list[LayerTuple]:
    layers: list[LayerTuple] = []
    if schema.INTENSITY not in ds:
        return layers
    da_ = ds[schema.INTENSITY]
    dims = tuple(str(d) for d in da_.dims)
    layers.append((_log_intensity(da_.data), {
        "name": f"{name} intensity", "colormap": "magma", "visible": visible,
        "axis_labels": dims, "metadata": _meta(source, kind, "intensity", schema.INTENSITY)
        | {"scale": "log10(1 + counts)"}}, "image"))
    if schema.MASK in ds:
        mask = np.asarray(ds[schema.MASK].values, bool)
        if not mask.all():
            invalid = (~mask).astype(np.uint8)
            if invalid.ndim < da_.ndim:
                invalid = np.broadcast_to(invalid, da_.shape)
            layers.append((invalid, {
                "name": f"{name} mask", "opacity": 0.5, "visible": visible,
                "axis_labels": dims,
                "metadata": _meta(source, kind, "mask", schema.MASK)
                | {"meaning": "1 = masked (unmeasured) pixel"}}, "labels"))
    return layers


def result_layers(result: xr.Dataset | str | Path, name: str | None = None,
                  source: str | None = None) -> list[LayerTuple]:
    """Layer tuples of a sipflow result: a store path or a result dataset.

    Parameters
    ----------
    result : Dataset, str or Path
        A finished store (opened lazily) or a dataset returned by
        :func:`sipflow.run_pipeline`.
    name : str, optional
        Prefix of the layer names; default: the store's stem, else the scan's.
    source : str, optional
        What the layers' metadata records as their origin (default: the store path).

    Returns
    -------
    list of (data, kwargs, layer_type)
        In :data:`ROLES` order, for the variables that are present: ``intensity``
        (log10(1 + counts), hidden when there is an object), ``mask`` (labels, 1 = masked),
        ``runs amplitude`` / ``runs phase`` (``run`` is the first, slider, dimension; hidden),
        ``amplitude``, ``phase`` (radians, cyclic colormap, NaN outside the support, global
        phase offset removed), ``support`` (labels), ``displacement`` (hidden) and ``strain``
        of a Bragg result (diverging colormap, limits ±99th percentile of |value|).
        Real-space layers carry the scale of
        :func:`real_space_scale`; its units are in ``metadata["units"]``.
    """
    if isinstance(result, xr.Dataset):
        ds = result
        stem = Path(str(ds.attrs.get("source", "result"))).stem
        src = source or f"{stem} (in memory)"
        remember(src, ds)
    else:
        from ..io import open_result

        ds = open_result(result)
        src = source or str(Path(result))
        stem = Path(result).stem
    name = name or stem
    has_obj = schema.OBJ in ds
    layers = _detector_layers(ds, name, src, "result", visible=not has_obj)
    if not has_obj:
        return layers
    obj = np.asarray(ds[schema.OBJ].values)
    dims = tuple(str(d) for d in ds[schema.OBJ].dims)
    support = (np.asarray(ds[schema.SUPPORT].values, bool) if schema.SUPPORT in ds else None)
    scale, units = real_space_scale(ds.attrs, obj.shape)
    # Units go to the metadata, not to napari: detector layers of the same result are in
    # pixels, and napari ignores (and warns about) units that differ between layers.
    common = {"scale": scale, "axis_labels": dims}
    unit = {"units": units}
    volume = {"rendering": "attenuated_mip"} if obj.ndim == 3 else {}
    if schema.OBJ_RUNS in ds:
        runs = ds[schema.OBJ_RUNS].data  # lazy for dask
        rcommon = {"scale": (1.0, *scale), "axis_labels": (schema.RUN, *dims)}
        amp_runs = abs(runs)
        layers.append((amp_runs, {"name": f"{name} runs amplitude", "colormap": "gray",
                                  "visible": False, **rcommon, **volume,
                                  "metadata": _meta(src, "result", "runs amplitude",
                                                    schema.OBJ_RUNS) | unit}, "image"))
        phase_runs = _masked_phase_runs(ds)
        layers.append((phase_runs, {"name": f"{name} runs phase", "colormap": PHASE_COLORMAP,
                                    "contrast_limits": (-math.pi, math.pi), "visible": False,
                                    **rcommon,
                                    "metadata": _meta(src, "result", "runs phase",
                                                      schema.OBJ_RUNS) | unit}, "image"))
    amp = np.abs(obj).astype(np.float32)
    layers.append((amp, {"name": f"{name} amplitude", "colormap": "gray", **common, **volume,
                         "metadata": _meta(src, "result", "amplitude", schema.OBJ) | unit},
                   "image"))
    layers.append((masked_phase(obj, support), {
        "name": f"{name} phase", "colormap": PHASE_COLORMAP,
        "contrast_limits": (-math.pi, math.pi), **common,
        "metadata": _meta(src, "result", "phase", schema.OBJ) | unit
        | {"value_unit": "rad"}}, "image"))
    if support is not None:
        layers.append((support.astype(np.uint8), {
            "name": f"{name} support", "opacity": 0.3, "visible": False, **common,
            "metadata": _meta(src, "result", "support", schema.SUPPORT) | unit}, "labels"))
    for var, role, value_unit, visible in ((schema.DISPLACEMENT, "displacement", "nm", False),
                                           (schema.STRAIN, "strain", "1", True)):
        if var in ds and ds[var].shape == obj.shape:
            field = np.asarray(ds[var].values, np.float32)
            finite = np.abs(field[np.isfinite(field)])
            limit = float(np.percentile(finite, 99)) if finite.size else 0.0
            limit = limit if limit > 0 else 1e-6
            layers.append((field, {
                "name": f"{name} {role}", "colormap": DIVERGING_COLORMAP,
                "contrast_limits": (-limit, limit), "visible": visible, **common,
                "metadata": _meta(src, "result", role, var) | unit
                | {"value_unit": value_unit}}, "image"))
    return layers


def masked_phase(obj: np.ndarray, support: np.ndarray | None) -> np.ndarray:
    """Phase of `obj` [rad] in (-π, π], zero mean inside `support`, NaN outside it.

    Parameters
    ----------
    obj : complex ndarray, real-space shape
    support : bool ndarray of the same shape, optional
        Without it the phase is shown everywhere.
    """
    ref = _reference_phase(obj, support)
    phase = np.angle(obj * ref).astype(np.float32)
    if support is not None:
        phase = np.where(support, phase, np.float32(np.nan))
    return phase


def _masked_phase_runs(ds: xr.Dataset) -> Any:
    """Phase of every run (run, *real dims), each with its own reference, NaN outside."""
    import dask.array as da

    runs = ds[schema.OBJ_RUNS].data
    sup = ds[schema.SUPPORT_RUNS].data if schema.SUPPORT_RUNS in ds else None
    if not isinstance(runs, da.Array):
        runs = da.from_array(np.asarray(runs), chunks=(1, *runs.shape[1:]))
    runs = runs.rechunk((1, *runs.shape[1:]))
    if sup is None:
        sup = da.ones(runs.shape, bool, chunks=runs.chunks)
    elif not isinstance(sup, da.Array):
        sup = da.from_array(np.asarray(sup), chunks=runs.chunks)
    else:
        sup = sup.rechunk(runs.chunks)

    def block(x: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.stack([masked_phase(xi, si) for xi, si in zip(x, s, strict=True)])

    return da.map_blocks(block, runs, sup, dtype=np.float32)


def scan_layers(ds: xr.Dataset, name: str, source: str) -> list[LayerTuple]:
    """Layer tuples of a raw scan read by :func:`sipflow.load`: intensity (log) and mask."""
    return _detector_layers(ds, name, source, "scan", visible=True)


def layer_info(layer_metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The sipflow record of a layer's metadata, or None for layers sipflow did not add."""
    info = (layer_metadata or {}).get(META_KEY)
    return info if isinstance(info, dict) else None
