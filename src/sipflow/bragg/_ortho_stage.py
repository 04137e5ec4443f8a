"""``bragg.orthogonalize``: the detector-frame object onto a laboratory grid in nm."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from .. import schema
from ..contracts import Context, Stage, StageParams, default_registry
from ..errors import DataError
from ..hookspecs import hookimpl
from ._geometry import Geometry, lab_grid, orthogonalize, transfer_matrix

#: dims of the detector-frame (oblique) copies kept beside the lab-frame object
OBLIQUE_DIMS = ("oblique_z", "oblique_y", "oblique_x")


class GeometryBlock(BaseModel):
    """The ``geometry:`` block: what the file lacks or gets wrong (angles in degrees)."""

    model_config = ConfigDict(extra="forbid")

    delta_deg: float | None = Field(None, description="In-plane detector angle (about the "
                                    "vertical, towards outboard); default: the file's.")
    gamma_deg: float | None = Field(None, description="Out-of-plane detector angle; "
                                    "default: the file's.")
    rocking_step_deg: float | None = Field(None, description="Sample rotation per raw frame; "
                                           "default: the file's rocking motor steps.")
    rocking_axis: Literal["x", "y", "z", "-x", "-y", "-z"] | None = Field(
        None, description="Lab axis of the rocking rotation (z downstream, y up, x "
        "completing a right-handed frame): default the file's (the NeXus rotation's "
        "vector), else 'y' (a theta rock at APS 34-ID-C).")
    detector_centre_px: list[float] | None = Field(
        None, min_length=2, max_length=2, description="(row, col) of the raw frame's pixel "
        "on the detector arm's axis (the direct beam with the arm at 0); default: the "
        "file's beam centre, else the middle of the full detector (from a SPEC ROI), else "
        "the middle of the raw frame.")
    beamline: str | None = Field(
        None, description="Beamline preset (sipflow beamlines lists them) whose circles "
        "give the detector arm and the rocking axis from the file's positioners; default: "
        "the reader's (a SPEC scan: aps-34idc), else the two-arm model (delta about y+, "
        "gamma about x-).")
    angles: dict[str, float] | None = Field(
        None, description="Circle positions [deg] by the preset's circle names (e.g. "
        "{chi: 90}); they win over the file's.")
    wavelength_nm: float | None = Field(None, gt=0)
    distance_m: float | None = Field(None, gt=0)
    pixel_size_um: float | None = Field(None, gt=0)


class OrthogonalizeParams(StageParams):
    """Parameters of ``bragg.orthogonalize``."""

    geometry: GeometryBlock = Field(default_factory=GeometryBlock,
                                    description="Overrides of the file's geometry.")
    voxel_size_nm: float | None = Field(None, gt=0, description="Lab voxel size (cubic) "
                                        "[nm]; default: the smallest real-space step.")
    amplitude_threshold: float | None = Field(
        0.5, gt=0, lt=1, description="The crystal's shape (the lab 'support'): voxels of "
        "the phasing support whose amplitude is at least this fraction of the amplitude's "
        "99th percentile there, largest connected part (0.5: the edge at half height, "
        "where a blurred edge really is); None: the phasing support as it is (shrinkwrap "
        "leaves it a voxel or two larger than the crystal).")


def _pick(value: float | None, attrs: dict[str, Any], key: str, scale: float = 1.0
          ) -> float | None:
    if value is not None:
        return float(value)
    if attrs.get(key) is not None:
        return float(attrs[key]) * scale
    return None


def _detector_centre(attrs: dict[str, Any], block: GeometryBlock, window: dict[str, Any]
                     ) -> tuple[list[float] | None, str]:
    """(row, col) of the direct beam at zero arm angles on the raw frames, and its origin."""
    if block.detector_centre_px is not None:
        return list(block.detector_centre_px), "geometry block"
    if attrs.get("beam_centre_px") is not None:
        return [float(v) for v in attrs["beam_centre_px"]], "file"
    roi, full = attrs.get("detector_roi"), attrs.get("detector_full_shape")
    if roi is not None and full is not None:
        return [full[0] / 2 - roi[0], full[1] / 2 - roi[2]], "middle of the full detector"
    shape = window.get("detector_shape")
    if shape:
        return [n / 2 for n in shape[1:]], "middle of the frame"
    return None, "none"


def _preset_arm(ds: xr.Dataset, block: GeometryBlock, source: str, registry: Any,
                window: dict[str, Any]) -> dict[str, Any] | None:
    """Arm matrix, pixel directions and rocking axis/step from a beamline preset."""
    from ..beamlines import Diffractometer, circle_angles

    name = block.beamline or ds.attrs.get("beamline")
    if not name:
        return None
    preset = (registry if registry is not None else default_registry()).beamline(str(name))
    centre = window.get("centre")
    frame = int(centre[0]) if centre is not None and len(centre) == 3 else None
    angles, rocking, step, origin = circle_angles(
        preset, ds.attrs.get("positioners") or {}, frame=frame, overrides=block.angles,
        source=source)
    d = Diffractometer(preset, angles)
    if rocking is None and block.rocking_axis is None:
        raise DataError(f"{source}: none of beamline {preset.name!r}'s rocking circles "
                        f"({', '.join(preset.rocking_circles)}) moves during the scan; give "
                        "geometry: {rocking_axis: y, rocking_step_deg: ...}")
    return {"arm": tuple(tuple(float(v) for v in row) for row in d.detector_matrix()),
            "pixel_directions": preset.pixel_directions,
            "rocking_axis": (tuple(float(v) for v in d.rocking_axis(rocking))
                             if rocking else None),
            "rocking_step_deg": step, "beamline": preset.name, "rocking_circle": rocking,
            "angles": angles, "angles_from": origin,
            "pixel_size_m": preset.pixel_size_m[1] if preset.pixel_size_m else None}


def scan_geometry(ds: xr.Dataset, block: GeometryBlock, source: str, registry: Any = None
                  ) -> tuple[Geometry, dict[str, Any]]:
    """The :class:`Geometry` of a preprocessed rocking scan, from its attrs and `block`.

    Pixel size and rocking step are multiplied by ``prep.standard``'s bin factors, and the
    Bragg vector is taken at the window's centre (the peak). With a beamline preset
    (`block.beamline` or the reader's), its circles at the file's positions give the arm
    and the rocking axis; otherwise the two-arm model of :class:`Geometry`.
    """
    attrs = ds.attrs
    window = attrs.get("prep_window") or {}
    bins = [int(b) for b in window.get("bin", [1, 1, 1])]
    if len(bins) != 3 or any(b < 1 for b in bins):
        raise DataError(f"{source}: prep_window bin {bins} is not three factors ≥ 1")
    chain = _preset_arm(ds, block, source, registry, window)
    pixel = (block.pixel_size_um * 1e-6 if block.pixel_size_um is not None
             else attrs.get("pixel_size_m") or (chain or {}).get("pixel_size_m"))
    values = {"wavelength": _pick(block.wavelength_nm, attrs, "wavelength_m", 1e9),
              "distance": _pick(block.distance_m, attrs, "distance_m"), "pixel size": pixel,
              "rocking_step_deg": _pick(block.rocking_step_deg, attrs, "rocking_step_deg")}
    if chain is None:
        values["delta_deg"] = _pick(block.delta_deg, attrs, "delta_deg")
        values["gamma_deg"] = _pick(block.gamma_deg, attrs, "gamma_deg")
    elif values["rocking_step_deg"] is None:
        values["rocking_step_deg"] = chain["rocking_step_deg"]
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise DataError(f"{source}: bragg.orthogonalize needs {', '.join(missing)}, which the "
                        "file does not record; give them in the stage's geometry block, e.g. "
                        "geometry: {delta_deg: 32.2, gamma_deg: 12.6, rocking_step_deg: 0.005}")
    if values["rocking_step_deg"] == 0:
        raise DataError(f"{source}: the rocking step is 0: a rocking scan must rotate the "
                        "sample between frames")
    axis: Any = block.rocking_axis or (chain or {}).get("rocking_axis") or str(
        attrs.get("rocking_axis") or "y")
    if isinstance(axis, str) and axis not in ("x", "y", "z", "-x", "-y", "-z"):
        raise DataError(f"{source}: the file's rocking axis {axis!r} is not a lab axis; give "
                        "geometry: {rocking_axis: y} (or x, z, -x, ...)")
    centre = window.get("centre")
    mid, mid_from = _detector_centre(attrs, block, window)
    offset = (0.0, 0.0)
    if centre is not None and len(centre) == 3 and mid is not None:
        offset = (float(centre[1]) - mid[0], float(centre[2]) - mid[1])
    extra = {} if chain is None else {"arm": chain["arm"],
                                      "pixel_directions": chain["pixel_directions"]}
    geo = Geometry(wavelength_nm=float(values["wavelength"]),
                   distance_nm=float(values["distance"]) * 1e9,
                   pixel_nm=(float(pixel) * 1e9 * bins[1], float(pixel) * 1e9 * bins[2]),
                   delta_deg=float(values.get("delta_deg") or 0.0),
                   gamma_deg=float(values.get("gamma_deg") or 0.0),
                   rocking_step_deg=float(values["rocking_step_deg"]) * bins[0],
                   rocking_axis=axis, offset_px=(offset[0] / bins[1], offset[1] / bins[2]),
                   **extra)
    file_sources = attrs.get("geometry_sources") or {}
    given = {"wavelength": block.wavelength_nm, "distance": block.distance_m,
             "pixel size": block.pixel_size_um, "rocking_step_deg": block.rocking_step_deg}
    keys = {"wavelength": "wavelength_m", "distance": "distance_m",
            "pixel size": "pixel_size_m", "rocking_step_deg": "rocking_step_deg"}
    values_from = {k: "geometry block" if given[k] is not None else file_sources.get(
        keys[k], "file" if attrs.get(keys[k]) is not None else "beamline preset")
        for k in given}
    info: dict[str, Any] = {
        "values_from": values_from,
        "bins": bins, "offset_px": list(offset), "detector_centre_px": mid,
        "detector_centre_from": mid_from,
        "rocking_axis_from": "geometry block" if block.rocking_axis else (
            f"beamline {chain['beamline']} ({chain['rocking_circle']})" if chain
            else "file" if attrs.get("rocking_axis") else "default")}
    if chain is not None:
        info.update({"beamline": chain["beamline"], "angles_deg": chain["angles"],
                     "angles_from": chain["angles_from"]})
    return geo, info


def crystal_shape(amplitude: np.ndarray, support: np.ndarray, threshold: float
                  ) -> np.ndarray:
    """The crystal: support voxels with amplitude >= `threshold` × its 99th percentile there,
    the largest connected part (face-connected).

    Parameters
    ----------
    amplitude : numpy.ndarray, real, (z, y, x)
    support : numpy.ndarray, bool, (z, y, x)
    threshold : float
        Fraction of the reference amplitude (0.5: an edge at half height).

    Returns
    -------
    numpy.ndarray, bool, (z, y, x)
    """
    from scipy import ndimage

    if not support.any():
        return support
    ref = float(np.percentile(amplitude[support], 99))
    shape = support & (amplitude >= threshold * ref)
    labels, n = ndimage.label(shape)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        shape = labels == 1 + int(np.argmax(sizes))
    return shape


def crystal_size(amplitude: np.ndarray, shape: np.ndarray, spacing: np.ndarray | float,
                 threshold: float = 0.5) -> list[float]:
    """The crystal's size along each axis, face to face where its amplitude crosses
    `threshold` × its 99th percentile, with sub-voxel precision.

    Along every line of voxels parallel to an axis the amplitude's first and last
    crossings are interpolated linearly between the voxels either side; a face is the
    median crossing of the lines that reach within one voxel of the outermost one (the
    outermost alone would be biased outwards by the sampling, which puts each line's
    crossing up to half a voxel either side of the face). Only voxels near the crystal
    count (`shape` grown by two voxels), so noise far away does not. Counting the voxels
    of a binary shape instead quantises each side to a whole voxel.

    Parameters
    ----------
    amplitude : numpy.ndarray, real, (z, y, x)
    shape : numpy.ndarray, bool, (z, y, x)
        The crystal (e.g. :func:`crystal_shape`).
    spacing : float or numpy.ndarray (3,)
        Voxel size per axis [nm].
    threshold : float
        Fraction of the reference amplitude.

    Returns
    -------
    list of float
        Size per axis [nm]; 0 where `shape` is empty.
    """
    from scipy import ndimage

    spacing = np.broadcast_to(np.asarray(spacing, np.float64), (amplitude.ndim,))
    if not shape.any():
        return [0.0] * amplitude.ndim
    near = np.where(ndimage.binary_dilation(shape, iterations=2), amplitude, 0.0)
    level = threshold * float(np.percentile(amplitude[shape], 99))
    sizes = []
    for axis in range(amplitude.ndim):
        n = amplitude.shape[axis]
        a = np.moveaxis(near, axis, -1).reshape(-1, n).astype(np.float64)
        above = a >= level
        lines = above.any(axis=1)
        a, above = a[lines], above[lines]
        rows = np.arange(a.shape[0])
        first = np.argmax(above, axis=1)
        last = n - 1 - np.argmax(above[:, ::-1], axis=1)
        inner = a[rows, first] - level
        step = a[rows, first] - a[rows, np.maximum(first - 1, 0)]
        left = np.where(first > 0, first - inner / np.maximum(step, 1e-30), first)
        inner = a[rows, last] - level
        step = a[rows, last] - a[rows, np.minimum(last + 1, n - 1)]
        right = np.where(last < n - 1, last + inner / np.maximum(step, 1e-30), last)
        high = float(np.median(right[right >= right.max() - 1]))
        low = float(np.median(left[left <= left.min() + 1]))
        sizes.append(float((high - low) * spacing[axis]))
    return sizes


class Orthogonalize(Stage):
    """The detector-frame object of a rocking scan onto a laboratory grid in nm.

    The real-space transfer matrix comes from the recorded geometry (the file's angles,
    ``prep.standard``'s window and bins, and the ``geometry`` block); ``obj`` and
    ``support`` are interpolated onto a cubic grid with axes ``(z, y, x)`` = (downstream,
    up, outboard) and coordinates in nm, large enough to hold the support with a margin
    of 4 voxels; the lab ``support`` is then the crystal's shape, cut at
    ``amplitude_threshold`` of its amplitude (:func:`crystal_shape`). The detector-frame
    arrays are kept as ``obj_oblique`` / ``support_oblique`` (other real-space variables
    move to the ``oblique_*`` dims). ``attrs`` gain ``bragg_g_direction``,
    ``bragg_d_spacing_nm``, ``bragg_amplitude_threshold``,
    the Bragg vector ``bragg_q_inv_angstrom`` (z, y, x) and the q step per index of
    (frame, det_y, det_x) as columns of ``bragg_q_steps_inv_angstrom`` [1/Å] (the
    Bragg vector at the peak), ``voxel_size_m`` (SI),
    ``bragg_transfer_matrix_nm`` and ``bragg_crystal_size_nm`` (z, y, x), the crystal's
    size edge to edge where its amplitude crosses the threshold (:func:`crystal_size`).
    """

    name = "bragg.orthogonalize"
    version = "1.0"
    Params = OrthogonalizeParams
    requires = (schema.OBJ, schema.SUPPORT)
    produces = (schema.OBJ, schema.SUPPORT)

    def run(self, ds: xr.Dataset, params: OrthogonalizeParams, context: Context
            ) -> xr.Dataset:
        source = ds.attrs.get("source", "the input")
        obj = np.asarray(ds[schema.OBJ].values)
        if obj.ndim != 3:
            raise DataError(f"{source}: bragg.orthogonalize needs a 3-D rocking-scan object; "
                            f"obj has shape {obj.shape}")
        support = np.asarray(ds[schema.SUPPORT].values, bool)
        geo, info = scan_geometry(ds, params.geometry, source, context.registry)
        r = transfer_matrix(geo.q_steps(), obj.shape)
        # the lab grid holds the support with a margin, not the whole oblique array
        grid, voxel = lab_grid(r, obj.shape, params.voxel_size_nm, within=support, margin=4)
        lab, _ = orthogonalize(obj, r, voxel, grid)
        lab_support, _ = orthogonalize(support, r, voxel, grid)
        lab_support = np.asarray(lab_support, bool)
        amplitude = np.abs(lab)
        if params.amplitude_threshold is not None:
            lab_support = crystal_shape(amplitude, lab_support, params.amplitude_threshold)
            if not lab_support.any():
                raise DataError(f"{source}: no voxel of the support reaches "
                                f"amplitude_threshold {params.amplitude_threshold}; lower it "
                                "or set it to null to keep the phasing support")
        sizes = crystal_size(amplitude, lab_support, voxel,
                             params.amplitude_threshold or 0.5)
        q = geo.q_bragg()
        out = ds.rename_dims({d: o for d, o in zip(schema.real_dims(3), OBLIQUE_DIMS,
                                                   strict=True) if d in ds.dims})
        out = out.drop_vars([d for d in schema.real_dims(3) if d in out.coords])
        out = out.rename_vars({schema.OBJ: "obj_oblique", schema.SUPPORT: "support_oblique"})
        dims = schema.real_dims(3)
        coords = {d: (d, (np.arange(n) - n // 2) * voxel, {"units": "nm"})
                  for d, n in zip(dims, lab.shape, strict=True)}
        out = out.assign_coords(coords)
        out[schema.OBJ] = (dims, lab.astype(np.complex64))
        out[schema.SUPPORT] = (dims, lab_support)
        out.attrs = dict(ds.attrs)
        out.attrs.update({
            "voxel_size_m": [voxel * 1e-9] * 3,
            "bragg_g_direction": (q / np.linalg.norm(q)).tolist(),
            "bragg_d_spacing_nm": float(2 * np.pi / np.linalg.norm(q)),
            "bragg_q_inv_angstrom": (q / 10).tolist(),
            "bragg_q_steps_inv_angstrom": (geo.q_steps() / 10).tolist(),
            "bragg_transfer_matrix_nm": r.tolist(),
            "bragg_geometry": {**geo.as_dict(), **info},
            "bragg_amplitude_threshold": params.amplitude_threshold,
            "bragg_crystal_size_nm": sizes,
        })
        context.logger.info("bragg.orthogonalize: %s -> %s voxels of %.2f nm; d = %.4f nm; "
                            "crystal %.0f × %.0f × %.0f nm (z, y, x, edges at half "
                            "amplitude)", obj.shape, lab.shape, voxel,
                            2 * np.pi / np.linalg.norm(q), *sizes)
        return out


@hookimpl
def sipflow_stages():
    return [Orthogonalize]


__all__ = ["GeometryBlock", "Orthogonalize", "OrthogonalizeParams", "crystal_shape",
           "crystal_size", "scan_geometry"]
