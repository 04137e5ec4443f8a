"""Fitting a deep-prior parametrisation of the object to measured far-field intensities.

The object is ``x = embed(P_θ())``: a parametrisation ``P`` (one or two generator
networks with heads, see :class:`Generated`) produces the object on the support's
bounding box; it is placed in the full array and multiplied by the support. θ is
fitted by Adam to the likelihood of :mod:`sipflow.physics` on the fitted pixels
(measured, not free); the free pixels give the free LLK that ranks runs, exactly
as in ``phase.classic``. Early stopping by the variance of the outputs
(:mod:`sipflow.priors`) picks the iterate that is returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from .._resources import rebalance_threads
from ..contracts import ProgressRecord
from ..physics import NLL, FarField
from ..priors import (
    ExponentialVariance,
    SkipNet,
    WindowedVariance,
    noise_input,
    seeded,
    total_variation,
)

Variant = Literal["complex", "amplitude_phase", "real_imag", "object_support", "positive"]
#: loss name -> NLL of :mod:`sipflow.physics`
LOSSES = {"poisson": "poisson", "amplitude": "euclidean", "intensity": "gaussian"}


@dataclass(frozen=True)
class NetSpec:
    """Architecture of each generator (see :class:`sipflow.priors.SkipNet`)."""

    width: int = 32
    depth: int = 4
    skip: int = 4
    upsample: Literal["nearest", "linear"] = "linear"
    input_channels: int = 8
    input_kind: Literal["uniform", "normal", "meshgrid"] = "uniform"
    input_scale: float = 0.1
    input_noise: float = 0.0


class Generated(nn.Module):
    """The object as generator outputs: ``x`` on a box grid, complex, ``(*box)``.

    Variants (``scale`` is the expected amplitude [sqrt(photons)]):

    - ``complex`` (``phase.dip``): one generator, two channels, ``x = scale (a + i b)``.
    - ``amplitude_phase`` (double DIP): ``x = scale softplus(G1) exp(i π G2)``.
    - ``real_imag``: two generators for the real and imaginary parts.
    - ``object_support``: a complex generator times a soft support ``sigmoid(G2)``.
    - ``positive``: a real, non-negative object, ``x = scale softplus(G1)``.
    """

    def __init__(self, variant: Variant, ndim: int, box: tuple[int, ...], spec: NetSpec,
                 scale: float, seed: int, device: str | torch.device) -> None:
        super().__init__()
        self.variant = variant
        self.scale = float(scale)
        self.spec = spec
        outs = {"complex": [2], "amplitude_phase": [1, 1], "real_imag": [1, 1],
                "object_support": [2, 1], "positive": [1]}[variant]
        nets, inputs = [], []
        # the coarsest level keeps at least 2 pixels per axis (batch norm needs more than one
        # value per channel), so small objects get shallower generators
        self.depth = max(1, min(spec.depth, math.floor(math.log2(max(min(box), 4) / 2))))
        for k, out in enumerate(outs):
            with seeded(seed * 2 + k):
                nets.append(SkipNet(ndim, spec.input_channels, out, spec.width, self.depth,
                                    spec.skip, spec.upsample))
            inputs.append(noise_input(box, spec.input_channels, seed * 2 + k + 1,
                                      spec.input_scale, device, kind=spec.input_kind))
        self.nets = nn.ModuleList(nets).to(device)
        for k, z in enumerate(inputs):
            self.register_buffer(f"z{k}", z)
        self._noise = torch.Generator(device=device).manual_seed(seed + 7)
        self.autocast = False

    def inputs(self) -> list[torch.Tensor]:
        zs = [getattr(self, f"z{k}") for k in range(len(self.nets))]
        if self.spec.input_noise > 0 and self.training:  # DIP's input perturbation
            zs = [z + self.spec.input_noise * torch.randn(
                z.shape, generator=self._noise, device=z.device, dtype=z.dtype) for z in zs]
        return zs

    def forward(self) -> torch.Tensor:
        zs = self.inputs()
        device_type = zs[0].device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.autocast):
            outs = [net(z)[0] for net, z in zip(self.nets, zs, strict=True)]
        outs = [o.float() for o in outs]
        s = self.scale
        if self.variant == "complex":
            return s * torch.complex(outs[0][0], outs[0][1])
        if self.variant == "amplitude_phase":
            amp = s * nn.functional.softplus(outs[0][0])
            return amp * torch.exp(1j * math.pi * outs[1][0])
        if self.variant == "real_imag":
            return s * torch.complex(outs[0][0], outs[1][0])
        if self.variant == "object_support":
            return s * torch.complex(outs[0][0], outs[0][1]) * torch.sigmoid(outs[1][0])
        amp = s * nn.functional.softplus(outs[0][0])  # positive
        return torch.complex(amp, torch.zeros_like(amp))


@dataclass
class Problem:
    """The measured data of a fit, centred layout, on one device.

    Attributes
    ----------
    counts : torch.Tensor, real, (*spatial)
        Observed photons.
    fit : torch.Tensor, bool, (*spatial)
        Pixels fitted (measured, not free).
    free : torch.Tensor, bool, (*spatial)
        Held-out pixels scored by the free LLK.
    support : torch.Tensor, bool, (*spatial)
        Where the object may be non-zero (updated by shrinkwrap when enabled).
    box : tuple of slice
        Bounding box of the support (with a margin): the generators' grid.
    truth : torch.Tensor or None
        Known object, for the error curve.
    """

    counts: torch.Tensor
    fit: torch.Tensor
    free: torch.Tensor
    support: torch.Tensor
    box: tuple[slice, ...]
    model: FarField
    truth: torch.Tensor | None = None

    @property
    def ndim(self) -> int:
        return self.counts.ndim

    @property
    def box_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.box)

    def embed(self, x_box: torch.Tensor) -> torch.Tensor:
        """The box object placed in the full array and cut to the support."""
        full = torch.zeros(self.counts.shape, dtype=x_box.dtype, device=x_box.device)
        full[self.box] = x_box
        return torch.where(self.support, full, torch.zeros_like(full))


@dataclass(frozen=True)
class FitSettings:
    """How a run is fitted (the stage parameters that are not the architecture)."""

    loss: str = "poisson"
    iterations: int = 3000
    lr: float = 0.01
    tv_weight: float = 0.0
    stopping: Literal["wmv", "emv", "free_llk", "none"] = "wmv"
    window: int = 100
    patience: int = 1000
    emv_alpha: float = 0.1
    llk_every: int = 10
    preview_every: int = 0
    warm_iterations: int = 300
    warm_until: float | None = None
    warm_max_iterations: int = 500
    warm_lr: float = 0.01
    warm_ramp: int = 100
    shrinkwrap_every: int = 0
    shrinkwrap_threshold: float = 0.2
    shrinkwrap_sigma: float = 1.0
    mixed_precision: bool = True


@dataclass
class RunResult:
    """One fitted run: the selected iterate and its curves."""

    x: torch.Tensor
    support: torch.Tensor
    selected_iteration: int
    stopped_iteration: int
    stopped_early: bool
    iterations: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    llk: list[float] = field(default_factory=list)
    llk_free: list[float] = field(default_factory=list)
    variance: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    warm_misfit: float | None = None
    warm_steps: int = 0
    status: str = "ok"


def _llks(problem: Problem, calc: torch.Tensor) -> tuple[float, float]:
    ndim = problem.ndim
    n_fit = max(1, int(problem.fit.sum()))
    n_free = int(problem.free.sum())
    llk = float(2 * NLL["poisson"](calc, problem.counts, problem.fit, ndim)) / n_fit
    llk_free = (float(2 * NLL["poisson"](calc, problem.counts, problem.free, ndim)) / n_free
                if n_free else float("nan"))
    return llk, llk_free


def _error(problem: Problem, x: torch.Tensor) -> float:
    from ..symmetry import align

    if problem.truth is None:
        return float("nan")
    return float(align(problem.truth.to(torch.complex128), x.detach().to(torch.complex128),
                       precision=0.1).error)


def _preview(x: torch.Tensor, support: torch.Tensor, ndim: int) -> dict[str, np.ndarray]:
    if ndim == 3:
        x, support = x[x.shape[0] // 2], support[support.shape[0] // 2]
    step = max(1, max(x.shape) // 64)
    x, support = x[::step, ::step], support[::step, ::step]
    return {"amplitude": x.abs().cpu().numpy(), "phase": torch.angle(x).cpu().numpy(),
            "support": support.cpu().numpy()}


def warm_start(gen: Generated, problem: Problem, x0: torch.Tensor, settings: FitSettings,
               check: Callable[[], None]) -> tuple[float, int]:
    """Fit the generators to a previous object `x0` (full array).

    At least ``settings.warm_iterations`` Adam steps; with ``settings.warm_until`` and
    free pixels, more (up to ``warm_max_iterations``, checked every 10) until the
    generators' object predicts the free pixels nearly as well as `x0`: its free-LLK
    excess over the noise level (LLK − 1) at most ``warm_until`` times `x0`'s. An
    accurate `x0` (high dose) is then followed closely; a noisy one (low dose) is met
    early, by its structure rather than its noise. The global phase is free (a constant
    phase is invisible to the data).

    Returns
    -------
    misfit : float
        Relative squared L2 distance to `x0` on the support's box at the end.
    steps : int
        Adam steps taken.
    """
    target = x0[problem.box]
    norm = target.abs().pow(2).sum().clamp_min(1e-30)
    opt = torch.optim.Adam(gen.parameters(), lr=settings.warm_lr, foreach=True)
    misfit = float("nan")
    adaptive = settings.warm_until is not None and bool(problem.free.any())
    most = max(settings.warm_iterations, settings.warm_max_iterations) if adaptive else \
        settings.warm_iterations
    if adaptive:
        with torch.no_grad():
            goal = 1.0 + settings.warm_until * max(
                _llks(problem, problem.model.intensity(x0))[1] - 1.0, 0.0)
    steps = 0
    for steps in range(1, most + 1):
        opt.zero_grad(set_to_none=True)
        x = gen() * problem.support[problem.box]
        c = (torch.conj(x) * target).sum()
        phase = (c / c.abs().clamp_min(1e-30)).detach()
        loss = (x * phase - target).abs().pow(2).sum() / norm
        loss.backward()
        opt.step()
        misfit = float(loss.detach())
        if steps % 50 == 0:
            check()
        if adaptive and steps >= settings.warm_iterations and steps % 10 == 0:
            with torch.no_grad():
                free = _llks(problem, problem.model.intensity(problem.embed(gen())))[1]
            if free <= goal:
                break
    return misfit, steps


def _record_step(result: RunResult, problem: Problem, settings: FitSettings, it: int,
                 total: int, x: torch.Tensor, calc: torch.Tensor, loss: torch.Tensor,
                 variance: float, stop: bool) -> dict[str, float]:
    """Append iteration `it`'s loss, LLKs, output variance and error (every fifth record,
    with a truth) to `result`; return them as progress metrics."""
    llk, llk_free = _llks(problem, calc.detach())
    result.iterations.append(it)
    result.loss.append(float(loss.detach()))
    result.llk.append(llk)
    result.llk_free.append(llk_free)
    result.variance.append(variance)
    result.error.append(_error(problem, x) if problem.truth is not None and (
        it % (settings.llk_every * 5) == 0 or it in (1, total) or stop) else float("nan"))
    metrics = {"loss": float(loss.detach()), "llk": llk, "llk_free": llk_free}
    if not math.isnan(variance):
        metrics["variance"] = variance
    return metrics


def _tracker(settings: FitSettings) -> tuple[WindowedVariance | ExponentialVariance, bool]:
    """The output-variance tracker of a fit, and whether it decides when to stop."""
    tracker: WindowedVariance | ExponentialVariance
    if settings.stopping == "wmv":
        tracker = WindowedVariance(settings.window, settings.patience)
    else:  # the O(1) form: the rule with 'emv', else the variance curve only
        tracker = ExponentialVariance(settings.emv_alpha, settings.patience)
    decides = settings.stopping in ("wmv", "emv")
    tracker.keep_best = decides  # a curve-only tracker copies no iterates
    return tracker, decides


def fit_run(gen: Generated, problem: Problem, settings: FitSettings, *, stage: str,
            run: int, runs: int, progress: Callable[[ProgressRecord], None],
            x0: torch.Tensor | None = None) -> RunResult:
    """Fit one parametrisation to the data; return the early-stopped iterate and curves.

    Parameters
    ----------
    gen : Generated
    problem : Problem
    settings : FitSettings
    stage : str
        Stage name, for progress records.
    run, runs : int
        This run's index and the number of runs (for progress).
    progress : callable
        Receives :class:`~sipflow.contracts.ProgressRecord` (a stage passes
        :meth:`Context.report <sipflow.contracts.Context.report>`); may raise
        :class:`~sipflow.errors.Cancelled`.
    x0 : torch.Tensor, complex, (*spatial), optional
        Previous object: the generators are first fitted to it.
    """
    ndim = problem.ndim
    nll = NLL[LOSSES[settings.loss]]
    n_fit = max(1, int(problem.fit.sum()))
    total = settings.iterations

    def check() -> None:  # cancellation while warming up
        progress(ProgressRecord(stage, 0, total * runs, {"run": float(run)}))

    warm_misfit, warm_steps = None, 0
    if x0 is not None and settings.warm_iterations:
        warm_misfit, warm_steps = warm_start(gen, problem, x0, settings, check)
    tracker, decides = _tracker(settings)
    free_best = (float("inf"), 0, None)  # free LLK, iteration, iterate
    use_free = settings.stopping == "free_llk" and bool(problem.free.any())
    opt = torch.optim.Adam(gen.parameters(), lr=settings.lr, foreach=True)
    result = RunResult(x=torch.empty(0), support=problem.support.clone(), selected_iteration=0,
                       stopped_iteration=0, stopped_early=False, warm_misfit=warm_misfit,
                       warm_steps=warm_steps)
    last_x = None
    # after a warm start, Adam's first steps (each about lr for every weight) would throw the
    # generators off the previous object: ramp the learning rate up over `ramp` steps
    ramp = settings.warm_ramp if warm_misfit is not None else 0
    for it in range(1, total + 1):
        if it <= ramp:
            for group in opt.param_groups:
                group["lr"] = settings.lr * it / ramp
        opt.zero_grad(set_to_none=True)
        x = problem.embed(gen())
        calc = problem.model.intensity(x)
        loss = nll(calc, problem.counts, problem.fit, ndim) * (2.0 / n_fit)
        if settings.tv_weight:
            tv = total_variation(x / gen.scale, 1e-4, ndim=ndim)  # eps^2 = 1e-8
            loss = loss + settings.tv_weight * tv / max(
                1, int(problem.support.sum()))
        if not torch.isfinite(loss):
            result.status = f"failed: the loss became {float(loss)} at iteration {it}"
            break
        loss.backward()
        opt.step()
        x = x.detach()
        last_x = x
        variance = tracker.update(it, x)
        stop = ((decides and tracker.should_stop(it)) or
                (use_free and free_best[2] is not None and it - free_best[1] >= settings.patience))
        if it % settings.llk_every == 0 or it == total or it == 1 or stop:
            metrics = _record_step(result, problem, settings, it, total, x, calc, loss,
                                   variance, stop)
            if use_free and metrics["llk_free"] < free_best[0]:
                free_best = (metrics["llk_free"], it, x.clone())
            if it % (settings.llk_every * 20) == 0:
                rebalance_threads()  # other runs may have started or ended meanwhile
            preview = (_preview(x, problem.support, ndim) if settings.preview_every and
                       it % settings.preview_every == 0 else None)
            progress(ProgressRecord(stage, run * total + it, runs * total,
                                    metrics | {"run": float(run)}, preview))
        if settings.shrinkwrap_every and it % settings.shrinkwrap_every == 0 and it < total:
            from ..reconstruct import shrinkwrap

            new = shrinkwrap(x.unsqueeze(0), problem.support.unsqueeze(0),
                             settings.shrinkwrap_sigma, settings.shrinkwrap_threshold, "max",
                             ndim)[0]
            problem.support = new & problem.support
        if stop:
            result.stopped_early = True
            break
    result.stopped_iteration = it
    if use_free and free_best[2] is not None:  # the iterate that predicted the free pixels
        result.x, result.selected_iteration = free_best[2], free_best[1]
    elif decides and tracker.best is not None:  # the variance rule's choice
        result.x, result.selected_iteration = tracker.best, tracker.best_iteration
    else:
        result.x = last_x if last_x is not None else problem.embed(gen().detach())
        result.selected_iteration = it
    result.support = problem.support.clone()
    return result
