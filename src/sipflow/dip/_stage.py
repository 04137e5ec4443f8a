"""``phase.dip`` and ``phase.double_dip``: phase retrieval with untrained generator priors."""

from __future__ import annotations

import abc
import math
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field, model_validator

from .. import schema
from ..contracts import PHASE_ATTR, Context, PhaseRecord, Stage
from ..errors import DataError, ReconstructionError
from ..hookspecs import hookimpl
from ..physics import Measurement
from ..runset import PhaseParams, rank_runs, run_seeds
from ._runs import fit_settings, judge_runs, run_curves
from ._summary import deep_prior_rows


class DipParams(PhaseParams):
    """Parameters shared by ``phase.dip`` and ``phase.double_dip``.

    Held-out pixels: an earlier stage's ``free_mask`` is kept (the classical start's, so
    both are judged on the same pixels); ``free_fraction`` and ``free_radius`` draw new
    ones only when the dataset has none.
    """

    runs: int = Field(1, ge=1, le=64, description="Independent fits (new network weights and "
                      "inputs), ranked by free LLK.")
    init: Literal["auto", "random", "previous", "classic"] = Field(
        "auto", description="'previous': fit the generators to the dataset's obj (an earlier "
        "stage's result) first, then to the data; 'classic': run phase.classic (with "
        "'classic_params') first and start from its result as from 'previous'; 'random': "
        "start from the random networks (slow and unreliable on far-field data); 'auto': "
        "'previous' when the dataset has an obj, else 'classic'.")
    classic_params: dict[str, Any] = Field(
        default_factory=dict, description="init 'classic': parameters of the phase.classic "
        "start, over the default template's (8 starts of HIO then ER with a tight "
        "shrinkwrap, a second generation, set retries).")
    loss: Literal["poisson", "amplitude", "intensity"] = Field(
        "poisson", description="Fitted-pixel loss: Poisson NLL, amplitude L2 "
        "(2 (sqrt(I) - |Fx|)^2) or variance-weighted intensity L2 ((I - |Fx|^2)^2 / 2(I+1)); "
        "each normalised per fitted pixel.")
    positivity: bool = Field(False, description="Real, non-negative object (one amplitude "
                             "generator, no phase).")
    support: Literal["auto", "previous", "autocorrelation", "circle", "box", "none"] = Field(
        "auto", description="Where the object may be non-zero: the dataset's support "
        "('previous'), the thresholded autocorrelation of the data, a centred circle/box of "
        "support_size, or the whole array ('none'); 'auto': 'previous' when the dataset has a "
        "support, else 'autocorrelation'.")
    support_dilate: int = Field(0, ge=0, le=20, description="Dilate the starting support by "
                                "this many pixels.")
    support_threshold: float = Field(0.04, gt=0, lt=1, description="Autocorrelation support: "
                                     "above this fraction of its maximum.")
    shrinkwrap_every: int | None = Field(
        None, ge=0, description="Shrinkwrap the support every this many iterations (0: never; "
        "default: 100 when the support was estimated, never when it came from a previous "
        "stage).")
    shrinkwrap_threshold: float = Field(0.2, gt=0, lt=1, description="Shrinkwrap: blurred "
                                        "amplitude above this fraction of its maximum.")
    shrinkwrap_sigma: float = Field(1.0, gt=0, description="Shrinkwrap Gaussian width "
                                    "[pixels].")
    iterations: int = Field(2000, ge=1, le=1_000_000, description="Adam steps at most per run.")
    lr: float | None = Field(None, gt=0, description="Adam learning rate (default: 1e-2 from "
                             "random networks, 3e-3 after a warm start).")
    warm_iterations: int = Field(50, ge=0, description="init 'previous': steps fitting the "
                                 "generators to the previous object (at least, with "
                                 "warm_until; few: the generators take its structure, not "
                                 "its noise; 0: no warm fit).")
    warm_until: float | None = Field(
        2.0, gt=0, description="init 'previous': after warm_iterations, keep fitting the "
        "previous object (checked every 10 steps, up to warm_max_iterations) until the "
        "generators' free-LLK excess over the noise level (LLK - 1) is at most this multiple "
        "of the previous object's: an accurate object (high dose) is followed closely, a "
        "noisy one only by its structure. None: exactly warm_iterations.")
    warm_max_iterations: int = Field(500, ge=0, description="init 'previous': most steps of "
                                     "the warm fit with warm_until.")
    warm_lr: float = Field(0.01, gt=0, description="init 'previous': Adam learning rate of "
                           "the fit to the previous object.")
    tv_weight: float = Field(0.0, ge=0, description="Weight of the total variation of "
                             "obj/scale per support pixel added to the loss.")
    early_stopping: Literal["auto", "wmv", "emv", "free_llk", "none"] = Field(
        "auto", description="Windowed moving variance of the outputs (ES-WMV), its "
        "O(1)-memory exponential form (EMV), the minimum of the free LLK (validation on the "
        "held-out pixels), or none (the last iterate); 'auto': free_llk when there are free "
        "pixels, else wmv in 2-D and emv in 3-D.")
    window: int = Field(100, ge=2, description="ES-WMV window [iterations].")
    patience: int = Field(500, ge=1, description="Stop when the variance has not reached a new "
                          "minimum for this many iterations.")
    emv_alpha: float = Field(0.1, gt=0, lt=1, description="EMV: weight of the newest output.")
    width: int = Field(32, ge=1, le=512, description="Channels of each generator level.")
    depth: int = Field(4, ge=1, le=8, description="Levels of each generator.")
    skip_channels: int = Field(4, ge=0, le=128, description="Channels of each skip branch.")
    upsample: Literal["nearest", "linear"] = Field("linear", description="Upsampling "
                                                   "(bi/trilinear or nearest).")
    input_channels: int = Field(8, ge=1, le=256, description="Channels of the random input.")
    input_noise: float = Field(0.0, ge=0, description="Std of the noise added to the input at "
                               "each step (0: fixed input).")
    mixed_precision: bool = Field(True, description="bfloat16 generators on a GPU (never on "
                                  "CPU); the physics stays float32.")
    @model_validator(mode="after")
    def _consistent(self):
        if self.early_stopping in ("auto", "wmv") and self.window > self.iterations:
            raise ValueError(f"window ({self.window}) is larger than iterations "
                             f"({self.iterations}): early stopping could never decide; lower "
                             "window or set early_stopping: none")
        if self.classic_params:  # wrong keys fail when the pipeline loads, not after hours
            from pydantic import ValidationError

            from ..reconstruct import ClassicParams

            try:
                ClassicParams(**self.classic_recipe())
            except ValidationError as exc:
                bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                for e in exc.errors())
                raise ValueError(f"classic_params are not phase.classic's: {bad}") from None
        return self

    def classic_recipe(self) -> dict[str, Any]:
        """Parameters of the ``init: classic`` start: the ``default`` template's
        ``phase.classic`` recipe (:data:`sipflow.reconstruct.DEFAULT_RECIPE`) with
        ``classic_params`` over them."""
        import copy

        from ..reconstruct import DEFAULT_RECIPE

        return {**copy.deepcopy(DEFAULT_RECIPE), **self.classic_params}


class DoubleDipParams(DipParams):
    """Parameters of ``phase.double_dip``."""

    variant: Literal["amplitude_phase", "real_imag", "object_support"] = Field(
        "amplitude_phase", description="x = G1 · exp(i π G2) with a non-negative amplitude "
        "head; real and imaginary parts from two generators; or a complex object times a "
        "soft support sigmoid(G2).")


def previous_is_better(previous_llk: float, previous_llk_free: float | None,
                       llk: float, llk_free: float | None) -> str | None:
    """Whether a warm-started deep prior's answer should not replace the object it started from.

    With free pixels the deep prior replaces the previous object only when it fits the
    free pixels better *and* the mean of its fitted and free LLK is lower. The free LLK
    alone (a few hundred pixels in islands) can prefer a prior that no longer fits the
    measured pixels (measured at 1e7 photons: free 1.79 against 2.13 but fitted 1.26
    against 0.77, error 5x worse); the fitted LLK alone favours the previous object's
    overfit. For a linear least-squares fit of p parameters to n pixels the expected
    fitted and held-out misfits are s²(1 − p/n) and s²(1 + p/n): their mean does not
    reward overfitting. Without free pixels the fitted LLK decides.

    Parameters
    ----------
    previous_llk, previous_llk_free : float, float or None
        Normalised LLK (2·NLL / pixel, 1 for a fit at the noise level) of the previous
        object on the fitted and on the free pixels (None: no free pixels).
    llk, llk_free : float, float or None
        The same for the deep prior's selected run.

    Returns
    -------
    str or None
        What the previous object is better by ("free LLK", "mean of the fitted and free
        LLK", "LLK"), or None when the deep prior's answer should replace it.
    """
    if previous_llk_free is None or llk_free is None:
        return "LLK" if previous_llk <= llk else None
    if previous_llk_free <= llk_free:
        return "free LLK"
    if previous_llk + previous_llk_free <= llk + llk_free:
        return "mean of the fitted and free LLK"
    return None


def _box(support: np.ndarray, margin: int = 4) -> tuple[slice, ...]:
    idx = np.nonzero(support)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
                 for i, n in zip(idx, support.shape, strict=True))


class _DeepPrior(Stage):
    """Shared machinery of the deep-prior phase stages."""

    Params = DipParams
    requires = (schema.INTENSITY,)
    produces = (schema.OBJ, schema.SUPPORT, schema.OBJ_RUNS, schema.SUPPORT_RUNS, schema.LLK,
                schema.LLK_FREE, schema.LOSS, schema.ES_VARIANCE, schema.PRTF,
                schema.FREE_MASK)
    heavy = True
    attr = ""
    #: what summaries call the stage
    label = ""

    @classmethod
    def summary_rows(cls, ds: xr.Dataset) -> list[tuple[str, str]]:
        """Variant, runs, the free and fitted LLK against the previous object."""
        return deep_prior_rows(ds, cls.attr, cls.label)

    @abc.abstractmethod
    def variant(self, params: DipParams) -> str:
        """Name of the :class:`~sipflow.dip.Generated` parametrisation for `params`."""

    @classmethod
    def estimate_memory(cls, params: DipParams, shape: tuple[int, ...], itemsize: int) -> int:
        """Activations of the generators (about 12 maps of `width` channels per level) [bytes]."""
        n = int(np.prod(shape))
        nets = 2 if cls is DoubleDip else 1
        window = params.window if len(shape) == 2 else 2
        return int(nets * 24 * params.width * n * 4 + window * n * 8 + 32 * n * itemsize)

    def _support(self, ds: xr.Dataset, params: DipParams, counts: np.ndarray,
                 mask: np.ndarray, source: str) -> tuple[np.ndarray, str]:
        from .. import reconstruct as sup

        kind = params.support
        if kind == "auto":
            kind = "previous" if schema.SUPPORT in ds else "autocorrelation"
        shape = counts.shape
        if kind == "previous":
            if schema.SUPPORT not in ds:
                raise DataError(f"{source}: {self.name}: support 'previous' needs a 'support' "
                                "variable; put phase.classic (or another phase stage) first or "
                                "choose support: autocorrelation")
            support = np.asarray(ds[schema.SUPPORT].values, bool)
            if support.shape != shape:
                raise DataError(f"{source}: {self.name}: the dataset's support has shape "
                                f"{support.shape}, expected the intensity's {shape}")
        elif kind == "autocorrelation":
            i = torch.fft.ifftshift(torch.as_tensor(counts, dtype=torch.float64))
            m = torch.fft.ifftshift(torch.as_tensor(mask))
            ac = sup.autocorrelation_support(i, m, torch.tensor([params.support_threshold],
                                                                dtype=torch.float64),
                                             counts.ndim)[0]
            support = torch.fft.fftshift(ac).numpy()
        elif kind in ("circle", "box"):
            support = torch.fft.fftshift(sup.shaped_support(shape, kind, params.support_size,
                                                            "cpu")).numpy()
        else:
            support = np.ones(shape, bool)
        if params.support_dilate:
            support = sup.morph(torch.as_tensor(support)[None], (params.support_dilate,),
                                counts.ndim)[0].numpy()
        if not support.any():
            raise DataError(f"{source}: {self.name}: the {kind} support is empty")
        return support, kind

    def _previous(self, ds: xr.Dataset, shape: tuple[int, ...], source: str) -> np.ndarray:
        """The earlier stage's object, the warm start (a far-field pair with the counts)."""
        if schema.OBJ not in ds:
            raise DataError(f"{source}: {self.name}: init 'previous' needs an 'obj' from an "
                            "earlier stage (e.g. phase.classic); none is in the dataset")
        x0 = np.asarray(ds[schema.OBJ].values)
        if x0.shape != shape:
            raise DataError(f"{source}: {self.name}: obj has shape {x0.shape}, expected the "
                            f"intensity's {shape} (a far-field pair)")
        return x0

    def run(self, ds: xr.Dataset, params: DipParams, context: Context) -> xr.Dataset:
        from ..reconstruct import prtf
        from ._fit import Generated, Problem, fit_run

        source = ds.attrs.get("source", "the input")
        init = params.init
        if init == "auto":
            init = "previous" if schema.OBJ in ds else "classic"
        if init == "classic":  # the classical engine's answer is the start, as after it
            from ..reconstruct import Classic

            Measurement.from_dataset(ds, stage=self.name)  # bad counts fail as this stage
            ds = Classic()(ds, params.classic_recipe(), context)
        # after a classical start: its checked counts and its held-out pixels
        meas = Measurement.from_dataset(ds, stage=self.name)
        counts, mask = meas.counts, meas.mask
        ndim = counts.ndim
        x0 = self._previous(ds, counts.shape, source) if init in ("previous", "classic") else None
        support, support_kind = self._support(ds, params, counts, mask, source)
        shrink = params.shrinkwrap_every
        if shrink is None:
            shrink = 0 if support_kind in ("previous", "none") else 100
        stopping = params.early_stopping
        lr = params.lr or (3e-3 if x0 is not None else 1e-2)
        device = context.device
        if meas.free_from != "dataset":  # an earlier stage's held-out pixels are kept
            meas = meas.hold_out(params.free_fraction, params.free_radius,
                                 context.generator() if device == "cpu"
                                 else torch.Generator().manual_seed(context.seed))
        free = meas.free
        if stopping == "auto":  # validation when there is some, else the output variance
            stopping = "free_llk" if free.any() else ("wmv" if ndim == 2 else "emv")
        box = _box(support)
        truth = (torch.as_tensor(np.asarray(ds[schema.OBJ_TRUE].values), device=device)
                 if schema.OBJ_TRUE in ds and ds[schema.OBJ_TRUE].shape == counts.shape
                 else None)
        counts_t = torch.as_tensor(counts, dtype=torch.float32, device=device)
        valid = torch.as_tensor(mask, device=device)
        free_t = torch.as_tensor(free, device=device)
        # expected amplitude inside the support: the measured photons spread over it
        scale = math.sqrt(max(float(counts[mask].sum()), 1.0) / max(int(support.sum()), 1))
        spec, settings = fit_settings(params, lr, stopping, shrink)
        variant = self.variant(params)
        x0_t = (torch.as_tensor(x0, dtype=torch.complex64, device=device)
                if x0 is not None else None)
        results = []
        n_params, depth = 0, params.depth
        seeds = run_seeds(context.seed, 0, params.runs)
        for r in range(params.runs):
            problem = Problem(counts_t, valid & ~free_t, free_t & valid,
                              torch.as_tensor(support, device=device), box,
                              meas.model(),
                              truth)
            seed = seeds[r]  # as phase.classic seeds its first generation
            gen = Generated(variant, ndim, problem.box_shape, spec, scale, seed, device)
            gen.autocast = params.mixed_precision and torch.device(device).type == "cuda"
            n_params = sum(p.numel() for p in gen.parameters())
            depth = gen.depth
            results.append(fit_run(gen, problem, settings, stage=self.name, run=r,
                                   runs=params.runs, progress=context.report, x0=x0_t))
            context.logger.info("%s: run %d stopped at iteration %d, selected %d (free LLK "
                                "%.4g)", self.name, r, results[-1].stopped_iteration,
                                results[-1].selected_iteration, results[-1].llk_free[-1]
                                if results[-1].llk_free else float("nan"))
        return self._output(ds, params, context.logger, meas, results, x0, init,
                            support_kind, shrink, stopping, lr, variant, (n_params, depth),
                            prtf)

    def _output(self, ds, params, logger, meas, results, x0, init,
                support_kind, shrink, stopping, lr, variant, n_params, prtf) -> xr.Dataset:
        counts, mask, free, free_origin = meas.counts, meas.mask, meas.free, meas.free_from
        ndim = meas.ndim
        xs, sups, final_llk, final_free, status = judge_runs(meas, results)
        ranked, _ = rank_runs(final_llk, final_free, status)  # free LLK where held out
        if not ranked:
            raise ReconstructionError(
                f"{ds.attrs.get('source', 'the input')}: {self.name}: every run failed: "
                + "; ".join(f"run {i}: {s}" for i, s in enumerate(status))
                + ". Try a smaller lr or another support.")
        best = ranked[0]
        obj, obj_support = xs[best], sups[best]
        # a warm start is judged against where it started, on the same held-out pixels
        previous_score = previous_fit = kept_reason = None
        if x0 is not None:
            previous_fit = meas.llk(x0)
            previous_score = meas.free_llk(x0) if meas.has_free else None
            kept_reason = previous_is_better(previous_fit, previous_score, final_llk[best],
                                             final_free[best] if free.any() else None)
            if kept_reason is not None:
                obj = x0.astype(np.complex64)
                obj_support = np.asarray(ds[schema.SUPPORT].values, bool) if (
                    schema.SUPPORT in ds and ds[schema.SUPPORT].shape == x0.shape) else sups[best]
                logger.warning(
                    "%s: %s: kept the previous object: its %s is better than the deep prior's "
                    "best run's (free LLK %.4g against %.4g, fitted LLK %.4g against %.4g)",
                    ds.attrs.get("source", "the input"), self.name, kept_reason,
                    previous_score if previous_score is not None else float("nan"),
                    final_free[best], previous_fit, final_llk[best])
        grid, curves = run_curves(results)
        rdims = schema.real_dims(ndim)
        # the previous phase stage's per-run arrays and curves are replaced, not mixed
        out = schema.without_phase_results(ds)
        out[schema.INTENSITY] = (ds[schema.INTENSITY].dims, counts)
        out[schema.MASK] = (ds[schema.INTENSITY].dims, mask)
        out[schema.OBJ] = (rdims, obj)
        out[schema.SUPPORT] = (rdims, obj_support)
        if params.keep_runs:
            out[schema.OBJ_RUNS] = ((schema.RUN, *rdims), xs)
            out[schema.SUPPORT_RUNS] = ((schema.RUN, *rdims), sups)
        for var, name in ((schema.LLK, "llk"), (schema.LLK_FREE, "llk_free"),
                          (schema.LOSS, "loss"), (schema.ES_VARIANCE, "variance")):
            out[var] = ((schema.RUN, schema.ITER), curves(name))
        if schema.OBJ_TRUE in ds:
            out[schema.ERROR] = ((schema.RUN, schema.ITER), curves("error"))
        shells, prtf_values = prtf(obj, counts, mask)
        out[schema.PRTF] = (("q_shell",), prtf_values.astype(np.float32))
        out[schema.FREE_MASK] = (ds[schema.INTENSITY].dims, free)
        out = out.assign_coords({schema.ITER: np.asarray(grid, np.int64),
                                 schema.RUN: np.arange(len(results)), "q_shell": shells})
        rank_of = {r: i for i, r in enumerate(ranked)}
        out.attrs = dict(ds.attrs)
        out.attrs[self.attr] = {
            "variant": variant, "init": init, "support": support_kind,
            "shrinkwrap_every": shrink, "early_stopping": stopping, "lr": lr,
            "network_parameters": n_params[0], "network_depth": n_params[1],
            "best_run": best, "ranked_by": "llk_free" if free.any() else "llk",
            "run_status": status, "run_rank": [rank_of.get(i) for i in range(len(results))],
            "selected_iteration": [r.selected_iteration for r in results],
            "stopped_iteration": [r.stopped_iteration for r in results],
            "stopped_early": [r.stopped_early for r in results],
            "warm_start_misfit": [r.warm_misfit for r in results],
            "warm_start_steps": [r.warm_steps for r in results],
            "final_llk": final_llk, "final_llk_free": final_free,
            "previous_llk": previous_fit,
            "previous_llk_free": previous_score,
            "kept_previous": kept_reason is not None, "kept_previous_by": kept_reason,
            "free_pixels": int(free.sum()), "free_mask_from": free_origin,
        }
        out.attrs[PHASE_ATTR] = PhaseRecord(
            stage=self.name, best_run=int(best), ranked_by=out.attrs[self.attr]["ranked_by"],
            run_status=list(status), run_rank=[rank_of.get(i) for i in range(len(results))],
            final_llk=final_llk, final_llk_free=final_free,
            averaged_runs=[] if kept_reason is not None else [int(best)]).to_attrs()
        return out


class Dip(_DeepPrior):
    """Deep-image-prior phase retrieval: one untrained generator gives the complex object.

    The generator (a skip network, :mod:`sipflow.priors`) is fitted to the measured
    intensity through the far-field model and likelihood of :mod:`sipflow.physics`
    on the fitted pixels; runs are ranked by the free LLK of the same free pixels as
    ``phase.classic`` (the dataset's ``free_mask`` when an earlier stage made one).
    The returned iterate is chosen by early stopping (the free-LLK minimum by default,
    or the variance of the outputs). The start is an earlier stage's object when the
    dataset has one, else ``phase.classic``'s (``init: classic``, run inside the stage
    with the ``default`` template's recipe and ``classic_params`` over it);
    ``init: random`` starts from the random networks alone. After a warm start, the
    previous object is kept unless the deep prior predicts the free pixels better and
    the mean of its fitted and free LLK is lower (:func:`previous_is_better`). Output: the schema of
    ``phase.classic`` plus ``loss`` and ``es_variance`` (run, iter), ``error`` when
    ``obj_true`` is present, and ``attrs["phase_dip"]``.
    """

    name = "phase.dip"
    version = "1.0"
    Params = DipParams
    attr = record_attr = "phase_dip"
    label = "DIP"

    def variant(self, params: DipParams) -> str:
        return "positive" if params.positivity else "complex"


class DoubleDip(_DeepPrior):
    """Double deep image prior: amplitude and phase from two untrained generators.

    ``x = G1(z1) · exp(i π G2(z2))`` with a non-negative (softplus) amplitude head,
    or the ``real_imag`` / ``object_support`` variants; otherwise as ``phase.dip``
    (``attrs["phase_double_dip"]``). With ``init: previous`` (the default after
    another phase stage) the generators first reproduce that stage's object, then
    fit the data: ``phase.classic → phase.double_dip`` is the recommended pipeline,
    and what the stage runs by itself (``init: classic``) when no earlier object exists.
    """

    name = "phase.double_dip"
    version = "1.0"
    Params = DoubleDipParams
    attr = record_attr = "phase_double_dip"
    label = "double DIP"

    def variant(self, params: DoubleDipParams) -> str:  # type: ignore[override]
        return "positive" if params.positivity else params.variant


@hookimpl
def sipflow_stages():
    return [Dip, DoubleDip]
