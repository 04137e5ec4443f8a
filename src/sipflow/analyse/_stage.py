"""``analyse.metrics``: figures of merit into ``attrs["metrics"]``."""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field

from .. import physics, schema
from ..contracts import Context, Stage, StageParams
from ..hookspecs import hookimpl
from ._fom import data_metrics, truth_metrics

#: a mode with at least this share of its power on unmeasured pixels is not determined
#: by the data (the gaps' modes of a forward-CDI detector stay below ~0.9; a beamstop
#: hiding several speckles of a compact object gives modes above 0.999)
UNDETERMINED = 0.99


class MetricsParams(StageParams):
    """Parameters of ``analyse.metrics``."""

    per_run: bool = Field(True, description="Also score every run in obj_runs against the "
                                            "truth (when there is one).")
    unmeasured_modes: int = Field(
        8, ge=0, le=64, description="When q = 0 is not measured (a beamstop), find this "
                                    "many modes of the support that the unmeasured pixels "
                                    "hide most (sipflow.physics.unmeasured_modes); 0: skip.")


def compute_metrics(ds: xr.Dataset, per_run: bool = True, unmeasured_modes: int = 8) -> dict:
    """Figures of merit of ``ds.obj`` (see :class:`Metrics`); pure function.

    With ``unmeasured_modes > 0``, a support and a mask on the object's grid, and q = 0
    unmeasured (a beamstop: the case where whole modes go missing), also
    ``unmeasured_mode_power`` (the share of power on unmeasured pixels of the support's
    most hidden modes, largest first) and ``undetermined_modes`` (how many of them have
    at least :data:`UNDETERMINED` of it there: the data do not fix them).
    """
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
        hidden_centre = not mask[tuple(n // 2 for n in mask.shape)]
        if unmeasured_modes and hidden_centre and support is not None and support.any():
            modes = physics.unmeasured_modes(support, mask, k=unmeasured_modes,
                                             with_modes=False)
            metrics["unmeasured_mode_power"] = [round(float(f), 5) for f in modes.fractions]
            metrics["undetermined_modes"] = modes.count(UNDETERMINED)
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
    modulo global phase, sub-pixel translation and twin; docs/design.md), and
    ``support`` with ``mask`` for the modes of the support the mask leaves
    undetermined (``undetermined_modes``; the summary warns when there are any).
    Results go to ``attrs["metrics"]``.
    """

    name = "analyse.metrics"
    version = "1.0"
    Params = MetricsParams
    requires = (schema.OBJ,)

    def run(self, ds: xr.Dataset, params: MetricsParams, context: Context) -> xr.Dataset:
        out = ds.copy()
        out.attrs = dict(ds.attrs)
        out.attrs["metrics"] = compute_metrics(ds, params.per_run, params.unmeasured_modes)
        shown = {k: v for k, v in out.attrs["metrics"].items() if not isinstance(v, list)}
        context.logger.info("analyse.metrics: %s", str(shown))
        return out


@hookimpl
def sipflow_stages():
    return [Metrics]
