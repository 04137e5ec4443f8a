"""Example sipflow plugin: ``prep.hot_pixels`` masks hot pixels the detector mask missed,
the ``zero_mean_phase`` constraint of ``refine.constrained`` fixes the global phase, the
``mirror_x`` symmetry group (a mirror plane, as in a crystal's point group) gives
``symmetry.canonicalize`` and ``sipflow train`` another ambiguity to break, and
``phase.shrinkwrap_hio`` (:mod:`._phase`) is a phase method that sipflow's summaries,
batch tables and viewer show with no code of theirs naming it, and the ``cristal``
beamline preset (``sipflow beamlines``) gives ``bragg.orthogonalize`` SOLEIL CRISTAL's
diffractometer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from pydantic import Field
from scipy.ndimage import median_filter

from sipflow import Context, Stage, StageParams, hookimpl
from sipflow.contracts import BeamlinePreset, Circle, Quantity
from sipflow.preprocess import checked_counts
from sipflow.refine import Constraint
from sipflow.symmetry import CanonicalForm

from ._phase import ShrinkwrapHio

__version__ = "0.1.0"
__all__ = ["HotPixels", "MirrorX", "ShrinkwrapHio", "ZeroMeanPhase"]


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


@dataclass(frozen=True)
class Mirror:
    """Element of ``mirror_x``: whether the x axis is mirrored."""

    mirrored: bool = False


class MirrorX:
    """The group {identity, mirror of the last axis about its centre n // 2}.

    For an object whose measurement cannot tell it from its mirror image. Canonical
    form: the one whose ``|x|^2`` has a non-negative first moment along x (the mirror
    negates it); the confidence is that moment over the profile's RMS width.
    """

    name = "mirror_x"
    description = "mirror plane normal to x (example plugin)"

    def apply(self, x, element):
        if not element.mirrored:
            return x
        n = np.shape(x)[-1]
        return np.roll(np.flip(x, axis=-1), 1 - n % 2, axis=-1)

    def _moment(self, x) -> tuple[float, float]:
        w = np.abs(np.asarray(x)) ** 2
        n = w.shape[-1]
        r = np.arange(n) - n // 2
        profile = w.reshape(-1, n).sum(axis=0)
        total = max(float(profile.sum()), 1e-300)
        mean = float((profile * r).sum() / total)
        width = float(np.sqrt(max((profile * r**2).sum() / total - mean**2, 1e-12)))
        return mean, abs(mean) / width

    def canonical(self, x):
        mean, confidence = self._moment(x)
        element = Mirror(mean < 0)
        return CanonicalForm(self.apply(x, element), element, confidence, 0.02)

    def align(self, reference, x):
        errors = {m: float(np.linalg.norm(np.asarray(reference) - self.apply(x, Mirror(m))))
                  for m in (False, True)}
        best = min(errors, key=errors.get)
        return self.apply(x, Mirror(best)), Mirror(best)

    def error(self, estimate, truth):
        aligned, _ = self.align(truth, estimate)
        return float(np.linalg.norm(np.asarray(truth) - aligned) / np.linalg.norm(truth))

    def random_element(self, rng, x):
        return Mirror(bool(rng.integers(2)))


#: SOLEIL CRISTAL's four-circle, as cdiutils describes it (which flags the sample circles
#: other than omega as unchecked): an example of a preset shipped by a plugin
CRISTAL = BeamlinePreset(
    name="cristal",
    description="SOLEIL CRISTAL (example plugin): omega/phi sample, gamma/delta detector",
    sample_circles=(Circle(name="omega", axis="x-"), Circle(name="phi", axis="y+")),
    detector_circles=(Circle(name="gamma", axis="y+"), Circle(name="delta", axis="x-")),
    pixel_directions=("y-", "x+"),
    rocking_circles=("omega", "phi"),
    energy=Quantity(key="energy", unit="keV"),
    layouts=("hdf5",),
)


@hookimpl
def sipflow_beamlines():
    return [CRISTAL]


@hookimpl
def sipflow_symmetry_groups():
    return [MirrorX()]


@hookimpl
def sipflow_constraints():
    return [ZeroMeanPhase]


@hookimpl
def sipflow_stages():
    return [HotPixels, ShrinkwrapHio]


@hookimpl
def sipflow_pipeline_templates():
    return {"hotpixels": Path(__file__).with_name("hotpixels.yaml")}
