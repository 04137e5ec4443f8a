"""``phase.classic``: ER / HIO / RAAR with shrinkwrap, many runs as one batch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr
from pydantic import Field, field_validator, model_validator

from .. import schema
from ..errors import ReconstructionError
from ..hookspecs import hookimpl
from ..preprocess._validate import checked_counts
from ..stage import Context, Stage, StageParams
from ._plan import parse


class ClassicParams(StageParams):
    """Parameters of ``phase.classic``."""

    schedule: str = Field(
        "(sup * ER**5 * HIO**40)**20 * ER**100",
        description="Plan expression, read left to right: '*' = then, '**n' = repeat n times; "
                    "operators ER, HIO, RAAR and sup (shrinkwrap update).")
    runs: int = Field(4, ge=1, le=1024, description="Independent random starts, computed as "
                                                    "one batched tensor.")
    beta: float = Field(0.9, gt=0, lt=1, description="Feedback parameter of HIO and RAAR.")
    positivity: bool = Field(False, description="Treat in-support pixels with Re < 0 as "
                                                "outside (for real, non-negative objects).")
    support_threshold: tuple[float, float] = Field(
        (0.09, 0.11), description="Initial support: autocorrelation above this fraction of its "
                                  "maximum, drawn uniformly per run in [low, high].")
    shrinkwrap_threshold: float = Field(0.2, gt=0, lt=10, description="Shrinkwrap threshold, "
                                        "relative to the reference of shrinkwrap_method.")
    shrinkwrap_method: Literal["max", "rms"] = Field(
        "max", description="'max': fraction of the blurred amplitude's maximum (Marchesini); "
                           "'rms': multiple of its RMS inside the support (PyNX).")
    sigma_start: float = Field(2.0, gt=0, description="Shrinkwrap Gaussian width at the first "
                                                      "update [pixels].")
    sigma_end: float = Field(0.7, gt=0, description="Width at the last update [pixels]; "
                                                    "shrinks geometrically in between.")
    llk_every: int = Field(10, ge=1, description="Evaluate the Poisson LLK every this many "
                                                 "iterations.")
    keep_runs: bool = Field(True, description="Store every run as obj_runs/support_runs.")

    @field_validator("schedule")
    @classmethod
    def _valid_plan(cls, v: str) -> str:
        parse(v)
        return v

    @model_validator(mode="after")
    def _ordered(self):
        lo, hi = self.support_threshold
        if not 0 < lo <= hi < 1:
            raise ValueError("support_threshold must satisfy 0 < low <= high < 1")
        return self


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


class Classic(Stage):
    """Classical phase retrieval (ER/HIO/RAAR + shrinkwrap), batched over random starts.

    Input: a centred ``intensity`` (q = 0 at n//2, e.g. from ``prep.standard``)
    and its ``mask``, 2-D or 3-D. Output adds ``obj`` and ``support`` (the run
    with the lowest final Poisson LLK), ``obj_runs``/``support_runs`` and
    ``llk`` (run, iter). Runs whose support collapsed or exploded are kept but
    never selected; if none survives the stage fails with their reasons.
    """

    name = "phase.classic"
    version = "1.0"
    Params = ClassicParams
    requires = (schema.INTENSITY,)
    heavy = True

    def run(self, ds: xr.Dataset, params: ClassicParams, context: Context) -> xr.Dataset:
        import torch

        from ._engine import EngineSettings, iterate

        counts, mask = checked_counts(ds, stage=self.name)
        plan = parse(params.schedule)
        dtype = _torch_dtype(context.dtype)
        device = context.device
        intensity = torch.as_tensor(counts, dtype=dtype, device=device)
        valid = torch.as_tensor(mask, device=device)
        settings = EngineSettings(
            beta=params.beta, positivity=params.positivity,
            support_threshold=params.support_threshold,
            shrinkwrap_threshold=params.shrinkwrap_threshold,
            shrinkwrap_method=params.shrinkwrap_method, sigma_start=params.sigma_start,
            sigma_end=params.sigma_end, llk_every=params.llk_every,
        )
        gen = iterate(intensity, valid, plan, params.runs, settings, context.generator(),
                      stage=self.name)
        while True:
            try:
                record = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            try:
                context.progress(record)
            except Exception:  # progress display must never break the science
                context.logger.debug("progress callback failed", exc_info=True)

        llk = result.llk.detach().cpu().numpy()
        ok = np.array([s == "ok" for s in result.status])
        if not ok.any():
            raise ReconstructionError(
                f"{ds.attrs.get('source', 'input')}: phase.classic: every run failed: "
                + "; ".join(f"run {i}: {s}" for i, s in enumerate(result.status))
                + ". Try another shrinkwrap_threshold or support_threshold.")
        final = np.where(ok, llk[:, -1], np.inf)
        best = int(np.argmin(final))
        x = result.x.detach().cpu().numpy()
        support = result.support.detach().cpu().numpy()
        ndim = counts.ndim
        rdims = schema.real_dims(ndim)
        out = ds.copy()
        out[schema.INTENSITY] = (ds[schema.INTENSITY].dims, counts)
        out[schema.MASK] = (ds[schema.INTENSITY].dims, mask)
        out[schema.OBJ] = (rdims, x[best])
        out[schema.SUPPORT] = (rdims, support[best])
        if params.keep_runs:
            out[schema.OBJ_RUNS] = ((schema.RUN, *rdims), x)
            out[schema.SUPPORT_RUNS] = ((schema.RUN, *rdims), support)
        out[schema.LLK] = ((schema.RUN, schema.ITER), llk.astype(np.float32))
        out = out.assign_coords({schema.ITER: np.asarray(result.llk_iterations, dtype=np.int64),
                                 schema.RUN: np.arange(params.runs)})
        out.attrs["phase_classic"] = {
            "plan": str(plan), "iterations": plan.n_iterations(), "best_run": best,
            "run_status": result.status, "final_llk": [float(v) for v in llk[:, -1]],
        }
        context.logger.info("phase.classic: %d runs x %d iterations, best run %d (LLK %.4g)",
                            params.runs, plan.n_iterations(), best, final[best])
        return out


@hookimpl
def sipflow_stages():
    return [Classic]
