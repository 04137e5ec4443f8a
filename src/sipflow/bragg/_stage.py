"""``bragg.strain``: displacement and strain along the Bragg vector."""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field, field_validator

from .. import schema
from ..contracts import Context, Stage, StageParams
from ..errors import DataError
from ..hookspecs import hookimpl
from ._strain import strain_from_object


class StrainParams(StageParams):
    """Parameters of ``bragg.strain``."""

    d_spacing_nm: float | None = Field(
        None, gt=0, description="Lattice spacing of the reflection [nm] (|G| = 2π/d); "
        "default: attrs['bragg_d_spacing_nm'] (e.g. Au 111: 0.2355).")
    g_direction: list[float] | None = Field(
        None, description="Direction of G in the array's axis order (z, y, x) or (y, x); "
        "default: attrs['bragg_g_direction'] as written by an orthogonalisation.")
    voxel_size_nm: list[float] | float | None = Field(
        None, description="Voxel size per axis [nm]; default: the spacing of the obj "
        "coordinates when they are in nm, else attrs['voxel_size_m'].")
    remove_ramp: bool = Field(True, description="Remove the amplitude-weighted phase ramp "
                              "and offset fitted on the support (an off-centre Bragg peak is "
                              "not strain).")
    unwrap: bool = Field(True, description="Unwrap the phase inside the support "
                         "(scikit-image's unwrap_phase).")

    @field_validator("g_direction")
    @classmethod
    def _nonzero(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or not any(v != 0 for v in value)):
            raise ValueError("g_direction must have a non-zero component")
        return value

    @field_validator("voxel_size_nm")
    @classmethod
    def _positive(cls, value):
        sizes = [value] if isinstance(value, (int, float)) else (value or [])
        if any(v <= 0 for v in sizes):
            raise ValueError(f"voxel sizes must be positive [nm], got {value}")
        return value


def _voxel_size(ds: xr.Dataset, params: StrainParams, source: str) -> np.ndarray:
    obj = ds[schema.OBJ]
    ndim = obj.ndim
    if params.voxel_size_nm is not None:
        v = params.voxel_size_nm
        sizes = [float(v)] * ndim if isinstance(v, (int, float)) else [float(x) for x in v]
    elif all(d in ds.coords and ds[d].attrs.get("units") == "nm" for d in obj.dims):
        sizes = [float(np.diff(ds[d].values).mean()) for d in obj.dims]
    elif "voxel_size_m" in ds.attrs:
        v = np.atleast_1d(ds.attrs["voxel_size_m"]).astype(np.float64) * 1e9
        sizes = [float(v[0])] * ndim if v.size == 1 else [float(x) for x in v]
    else:
        raise DataError(f"{source}: bragg.strain needs the voxel size of obj {obj.dims} in "
                        "nm: orthogonalise first (coordinates in nm) or give voxel_size_nm")
    if len(sizes) != ndim:
        raise DataError(f"{source}: voxel_size_nm has {len(sizes)} values for a {ndim}-D obj")
    return np.asarray(sizes)


class Strain(Stage):
    """Displacement ``u = φ/|G|`` and strain ``∂u/∂ĝ`` of a Bragg-CDI object.

    The object must be on an orthonormal grid (voxel sizes in nm). The phase is taken
    relative to its mean, unwrapped inside the support, and its amplitude-weighted ramp
    and offset fitted on the support are removed; strain uses finite differences of
    support voxels only, one-sided on the outer layer, which is flagged (``surface``) and
    left out of the statistics in ``attrs["bragg_strain"]``.
    """

    name = "bragg.strain"
    version = "1.0"
    Params = StrainParams
    requires = (schema.OBJ, schema.SUPPORT)
    produces = (schema.PHASE, schema.DISPLACEMENT, schema.STRAIN, schema.SURFACE)
    record_attr = "bragg_strain"

    @classmethod
    def summary_rows(cls, ds: xr.Dataset) -> list[tuple[str, str]]:
        """Crystal size, d spacing and strain statistics of ``attrs["bragg_strain"]``."""
        rows: list[tuple[str, str]] = []
        bs = ds.attrs.get("bragg_strain")
        if bs and schema.SUPPORT in ds:
            voxel = bs["voxel_size_nm"]
            extent = ds.attrs.get("bragg_crystal_size_nm")  # face to face at half amplitude
            how = "face to face at half amplitude"
            if extent is None:  # an orthogonalisation that did not record it: voxels counted
                extent = [(int(np.ptp(ix)) + 1) * v for ix, v in
                          zip(np.nonzero(np.asarray(ds[schema.SUPPORT].values)), voxel,
                              strict=True)]
                how = "support's bounding box"
            rows.append(("crystal size", " × ".join(f"{e:.0f}" for e in extent) + " nm"
                         + f" ({', '.join(map(str, ds[schema.SUPPORT].dims))}, {how}; voxel "
                           f"{voxel[0]:.3g} nm)"))
            rows.append(("d spacing / |G|", f"{bs['d_spacing_nm']:.4f} nm / {bs['g_inv_nm']:.4g} "
                                            "1/nm"))
            rows.append(("RMS strain (interior)", f"{bs['strain_rms']:.3g} (mean "
                                                  f"{bs['strain_mean']:.2g}, "
                                                  f"{bs['interior_voxels']} voxels; "
                                                  f"{bs['surface_voxels']} surface voxels "
                                                  "flagged)"))
        return rows

    def run(self, ds: xr.Dataset, params: StrainParams, context: Context) -> xr.Dataset:
        source = ds.attrs.get("source", "the input")
        obj = np.asarray(ds[schema.OBJ].values)
        support = np.asarray(ds[schema.SUPPORT].values, bool)
        if support.shape != obj.shape:
            raise DataError(f"{source}: support {support.shape} does not match obj "
                            f"{obj.shape}")
        if not support.any():
            raise DataError(f"{source}: the support is empty; there is no crystal to "
                            "analyse")
        spacing = _voxel_size(ds, params, source)
        d = params.d_spacing_nm if params.d_spacing_nm is not None else ds.attrs.get(
            "bragg_d_spacing_nm")
        if d is None:
            raise DataError(f"{source}: bragg.strain needs the reflection's d spacing: set "
                            "d_spacing_nm (nm)")
        direction = (params.g_direction if params.g_direction is not None
                     else ds.attrs.get("bragg_g_direction"))
        if direction is None:
            raise DataError(f"{source}: bragg.strain needs the direction of G in the "
                            f"array axes {ds[schema.OBJ].dims}: set g_direction")
        direction = np.asarray(direction, np.float64)
        if direction.shape != (obj.ndim,):
            raise DataError(f"{source}: g_direction has {direction.size} components for a "
                            f"{obj.ndim}-D obj {ds[schema.OBJ].dims}")
        g = 2 * np.pi / float(d) * direction / np.linalg.norm(direction)
        result = strain_from_object(obj, support, spacing, g, remove_ramp=params.remove_ramp,
                                    unwrap_phase=params.unwrap)
        dims = ds[schema.OBJ].dims
        out = ds.copy()
        out[schema.PHASE] = (dims, result.phase.astype(np.float32), {"units": "rad"})
        out[schema.DISPLACEMENT] = (dims, result.displacement.astype(np.float32),
                                    {"units": "nm"})
        out[schema.STRAIN] = (dims, result.strain.astype(np.float32), {"units": "1"})
        out[schema.SURFACE] = (dims, result.surface)
        summary = result.summary(support, spacing)
        out.attrs = dict(ds.attrs)
        out.attrs["bragg_strain"] = {
            **summary, "d_spacing_nm": float(d), "g_direction": direction.tolist(),
            "g_inv_nm": float(np.linalg.norm(g)), "voxel_size_nm": spacing.tolist(),
            "ramp_rad_per_nm": [float(k) for k in result.ramp],
        }
        context.logger.info("bragg.strain: RMS strain %.3g over %d interior voxels "
                            "(%d surface voxels flagged)", summary["strain_rms"],
                            summary["interior_voxels"], summary["surface_voxels"])
        return out


@hookimpl
def sipflow_stages():
    return [Strain]


__all__ = ["Strain", "StrainParams"]
