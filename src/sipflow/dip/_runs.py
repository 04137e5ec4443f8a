"""The deep-prior runs: the fit's settings from the stage's parameters, each run judged on the
measurement, and the runs' curves on one iteration grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..physics import Measurement


def fit_settings(params: Any, lr: float, stopping: str, shrink: int) -> tuple[Any, Any]:
    """The generator's :class:`~sipflow.dip.NetSpec` and the fit's
    :class:`~sipflow.dip.FitSettings` from the stage's parameters."""
    from ._fit import FitSettings, NetSpec

    spec = NetSpec(width=params.width, depth=params.depth, skip=params.skip_channels,
                   upsample=params.upsample, input_channels=params.input_channels,
                   input_noise=params.input_noise)
    settings = FitSettings(
        loss=params.loss, iterations=params.iterations, lr=lr, tv_weight=params.tv_weight,
        stopping=stopping, window=params.window, patience=params.patience,
        emv_alpha=params.emv_alpha, llk_every=params.llk_every,
        preview_every=params.preview_every, warm_iterations=params.warm_iterations,
        warm_until=params.warm_until, warm_max_iterations=params.warm_max_iterations,
        warm_lr=params.warm_lr,
        shrinkwrap_every=shrink, shrinkwrap_threshold=params.shrinkwrap_threshold,
        shrinkwrap_sigma=params.shrinkwrap_sigma)
    return spec, settings


def judge_runs(meas: Measurement, results: list[Any]
               ) -> tuple[np.ndarray, np.ndarray, list[float], list[float], list[str]]:
    """Objects, supports, final LLK and free LLK on `meas`, and status of each fitted run.

    A run that reported ``ok`` fails here when its LLK is not finite or its object empty.
    """
    xs = np.stack([r.x.cpu().numpy() for r in results]).astype(np.complex64)
    sups = np.stack([r.support.cpu().numpy() for r in results])
    final_llk, final_free, status = [], [], []
    for r, x in zip(results, xs, strict=True):
        final_llk.append(meas.llk(x))
        final_free.append(meas.free_llk(x))
        ok = r.status == "ok" and np.isfinite(final_llk[-1]) and np.abs(x).max() > 0
        status.append(r.status if r.status != "ok" else ("ok" if ok else
                                                         "failed: empty object"))
    return xs, sups, final_llk, final_free, status


def run_curves(results: list[Any]) -> tuple[list[int], Any]:
    """The iterations any run recorded, and ``curves(name)``: (run, iteration) float32 of that
    recorded quantity, NaN where a run has no value."""
    grid = sorted({it for r in results for it in r.iterations})
    pos = {it: k for k, it in enumerate(grid)}

    def curves(name: str) -> np.ndarray:
        out = np.full((len(results), len(grid)), np.nan, np.float32)
        for i, r in enumerate(results):
            for it, v in zip(r.iterations, getattr(r, name), strict=True):
                out[i, pos[it]] = v
        return out

    return grid, curves
