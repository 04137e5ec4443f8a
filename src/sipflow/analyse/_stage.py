"""``analyse.metrics``: figures of merit into ``attrs["metrics"]``."""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field

from .. import schema
from ..hookspecs import hookimpl
from ..stage import Context, Stage, StageParams
from ._fom import data_metrics, truth_metrics


class MetricsParams(StageParams):
    """Parameters of ``analyse.metrics``."""

    per_run: bool = Field(True, description="Also score every run in obj_runs against the "
                                            "truth (when there is one).")


def compute_metrics(ds: xr.Dataset, per_run: bool = True) -> dict:
    """Figures of merit of ``ds.obj`` (see :class:`Metrics`); pure function."""
    obj = np.asarray(ds[schema.OBJ].values)
    support = np.asarray(ds[schema.SUPPORT].values) if schema.SUPPORT in ds else None
    metrics: dict = {}
    if support is not None:
        metrics["support_size_px"] = int(support.sum())
        power = np.abs(obj) ** 2
        metrics["outside_support_fraction"] = float(power[~support].sum() / max(power.sum(),
                                                                                  1e-30))
    if schema.INTENSITY in ds and ds[schema.INTENSITY].shape == obj.shape:
        intensity = np.asarray(ds[schema.INTENSITY].values, dtype=np.float64)
        mask = (np.broadcast_to(np.asarray(ds[schema.MASK].values, bool), obj.shape)
                if schema.MASK in ds else np.ones(obj.shape, bool))
        metrics.update(data_metrics(obj, intensity, mask, support))
    if schema.OBJ_TRUE in ds and ds[schema.OBJ_TRUE].shape == obj.shape:
        truth = np.asarray(ds[schema.OBJ_TRUE].values)
        st = (np.asarray(ds[schema.SUPPORT_TRUE].values, bool)
              if schema.SUPPORT_TRUE in ds else None)
        metrics.update(truth_metrics(obj, truth, st))
        if per_run and schema.OBJ_RUNS in ds:
            runs = np.asarray(ds[schema.OBJ_RUNS].values)
            metrics["error_runs"] = [truth_metrics(r, truth, st)["error"] for r in runs]
    return metrics


class Metrics(Stage):
    """Figures of merit: R-factor, Poisson/Gaussian/Euclidean LLK, error against a truth.

    Needs only ``obj``. Uses ``intensity``/``mask`` when present on the same grid
    (R-factor, LLKs after a global scale) and ``obj_true`` when present (error
    modulo global phase, sub-pixel translation and twin; docs/design.md).
    Results go to ``attrs["metrics"]``.
    """

    name = "analyse.metrics"
    version = "1.0"
    Params = MetricsParams
    requires = (schema.OBJ,)

    def run(self, ds: xr.Dataset, params: MetricsParams, context: Context) -> xr.Dataset:
        out = ds.copy()
        out.attrs = dict(ds.attrs)
        out.attrs["metrics"] = compute_metrics(ds, params.per_run)
        shown = {k: v for k, v in out.attrs["metrics"].items() if not isinstance(v, list)}
        context.logger.info("analyse.metrics: %s", str(shown))
        return out


@hookimpl
def sipflow_stages():
    return [Metrics]
