"""``phase.shrinkwrap_hio``: an example phase stage written against sipflow's public API.

It is short on purpose: a third-party phase method needs its iterations and nothing
else. The forward model is :mod:`sipflow.physics`'s, the LLKs are sipflow's, and
:class:`sipflow.runset.RunSet` ranks, averages and writes the runs in the phase schema
with the :class:`~sipflow.contracts.PhaseRecord`, so the stage shows up in ``sipflow
evaluate``, ``sipflow batch``'s table and the napari Result widget unchanged.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field
from scipy.ndimage import gaussian_filter

from sipflow import Context, Stage, StageParams
from sipflow.physics import centred_farfield, centred_inverse_farfield, free_llk, normalised_llk
from sipflow.preprocess import checked_counts
from sipflow.runset import RunSet


class ShrinkwrapHioParams(StageParams):
    """Parameters of ``phase.shrinkwrap_hio``."""

    runs: int = Field(4, ge=1, le=64, description="Independent random starts.")
    hio: int = Field(300, ge=0, description="HIO iterations (with shrinkwrap).")
    er: int = Field(100, ge=0, description="Error-reduction iterations at the end.")
    beta: float = Field(0.9, gt=0, le=1, description="HIO feedback.")
    shrinkwrap_every: int = Field(20, ge=1, description="Iterations between support updates.")
    sigma: tuple[float, float] = Field((3.0, 1.0), description="Blur of the shrinkwrap "
                                       "[pixels], from the first to the last update.")
    threshold: float = Field(0.12, gt=0, lt=1, description="Shrinkwrap threshold, relative "
                             "to the blurred amplitude's maximum.")
    free_fraction: float = Field(0.03, ge=0, lt=0.5, description="Measured pixels held out "
                                 "to rank the runs by their free LLK.")
    positivity: bool = Field(False, description="The object is real and non-negative "
                             "(HIO feeds back where the real part is negative too).")
    keep_best: int = Field(1, ge=1, description="Average this many of the best runs.")
    record_every: int = Field(10, ge=1, description="Iterations between LLK records.")


class ShrinkwrapHio(Stage):
    """HIO then ER with a shrinkwrap support from the autocorrelation (example plugin).

    Runs ``runs`` random starts; the free LLK of held-out pixels ranks them.
    """

    name = "phase.shrinkwrap_hio"
    version = "0.1"
    Params = ShrinkwrapHioParams
    requires = ("intensity",)
    produces = ("obj", "support", "obj_runs", "support_runs", "llk", "llk_free")

    def run(self, ds: xr.Dataset, params: ShrinkwrapHioParams, context: Context
            ) -> xr.Dataset:
        counts, mask = checked_counts(ds, stage=self.name)
        rng = np.random.default_rng(context.seed)
        free = mask & (rng.random(counts.shape) < params.free_fraction)
        fit = mask & ~free
        autocorrelation = np.abs(centred_inverse_farfield(np.where(fit, counts, 0.0)))
        start = autocorrelation > 0.04 * autocorrelation.max()
        runs = [self._one_run(np.sqrt(counts), counts, fit, free, start, rng, params)
                for _ in range(params.runs)]
        iterations = np.arange(0, params.hio + params.er + 1, params.record_every)
        result = RunSet(objects=np.stack([r[0] for r in runs]).astype(np.complex64),
                        supports=np.stack([r[1] for r in runs]),
                        llk=np.stack([r[2] for r in runs]), iterations=iterations,
                        llk_free=np.stack([r[3] for r in runs]) if free.any() else None)
        context.logger.info("%s: %d runs", self.name, params.runs)
        return result.to_dataset(ds, self.name, keep_best=params.keep_best)

    @staticmethod
    def _one_run(amp: np.ndarray, counts: np.ndarray, fit: np.ndarray, free: np.ndarray,
                 support: np.ndarray, rng: np.random.Generator, params: ShrinkwrapHioParams
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        x = support * np.exp(2j * np.pi * rng.random(amp.shape))
        llk, llk_free = [], []
        total = params.hio + params.er
        for it in range(total + 1):
            f = centred_farfield(x)
            if it % params.record_every == 0:
                calc = np.abs(f) ** 2
                llk.append(float(normalised_llk(calc, counts, fit)))
                llk_free.append(float(free_llk(calc, counts, free)) if free.any() else np.nan)
            if it == total:
                break
            y = centred_inverse_farfield(np.where(fit, amp * np.exp(1j * np.angle(f)), f))
            inside = support & (y.real >= 0) if params.positivity else support
            if params.positivity:
                y = y.real.astype(y.dtype)
            if it < params.hio:
                x = np.where(inside, y, x - params.beta * y)
                if (it + 1) % params.shrinkwrap_every == 0:
                    first, last = params.sigma
                    sigma = first + (last - first) * it / max(params.hio - 1, 1)
                    blurred = gaussian_filter(np.abs(y * support), sigma)
                    support = blurred > params.threshold * blurred.max()
            else:
                x = np.where(inside, y, 0)
        return x, support, np.asarray(llk), np.asarray(llk_free)
