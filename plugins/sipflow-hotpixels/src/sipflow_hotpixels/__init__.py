"""Example sipflow plugin: ``prep.hot_pixels`` masks hot pixels the detector mask missed,
and the ``zero_mean_phase`` constraint of ``refine.constrained`` fixes the global phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from pydantic import Field
from scipy.ndimage import median_filter

from sipflow import Context, Stage, StageParams, hookimpl
from sipflow.preprocess import checked_counts
from sipflow.refine import Constraint

__version__ = "0.1.0"


class HotPixelParams(StageParams):
    """Parameters of ``prep.hot_pixels``."""

    factor: float = Field(20.0, gt=1, description="A pixel is hot when its counts exceed "
                                                  "factor x (median of its 3x3 neighbours + 1).")
    min_counts: float = Field(100.0, ge=0, description="Pixels below this many counts are never "
                                                       "hot [photons].")


class HotPixels(Stage):
    """Mask isolated hot pixels: counts far above the 3x3 median of their frame.

    Adds the hot pixels to ``mask`` (full intensity shape) and zeroes them; the
    count is in ``attrs["hot_pixels_masked"]``. Works on 2-D patterns and on every
    frame of a 3-D scan.
    """

    name = "prep.hot_pixels"
    version = "0.1"
    Params = HotPixelParams
    requires = ("intensity",)

    def run(self, ds: xr.Dataset, params: HotPixelParams, context: Context) -> xr.Dataset:
        counts, mask = checked_counts(ds, stage=self.name)
        size = (1, 3, 3) if counts.ndim == 3 else (3, 3)
        local = median_filter(counts, size=size, mode="nearest")
        hot = mask & (counts > params.min_counts) & (counts > params.factor * (local + 1))
        out = ds.copy()
        dims = ds["intensity"].dims
        out["intensity"] = (dims, np.where(hot, 0, counts).astype(np.float32))
        out["mask"] = (dims, mask & ~hot)
        out.attrs = dict(ds.attrs) | {"hot_pixels_masked": int(hot.sum())}
        context.logger.info("prep.hot_pixels: masked %d hot pixels", int(hot.sum()))
        return out


class ZeroMeanPhase(Constraint):
    """Im(Σ x) = 0 over the support: the amplitude-weighted mean phase is zero.

    The measured intensities do not depend on a global phase; this equality picks one,
    so that refined objects can be compared pixel by pixel.
    """

    name = "zero_mean_phase"
    kind = "equality"

    def values(self, x, params, problem):
        return x[problem.support].sum().imag.reshape(1)

    def scale(self, params, problem):
        return max(float(problem.x0[problem.support].abs().sum()), 1e-30)


@hookimpl
def sipflow_constraints():
    return [ZeroMeanPhase]


@hookimpl
def sipflow_stages():
    return [HotPixels]


@hookimpl
def sipflow_pipeline_templates():
    return {"hotpixels": Path(__file__).with_name("hotpixels.yaml")}
