"""The classical iteration loop: a generator over a plan, batched over runs.

:func:`iterate` yields a :class:`~sipflow.contracts.ProgressRecord` every few
iterations and returns an :class:`EngineResult`; callers decide what to do with
progress (CLI bar, Prefect log, nothing) and can stop early by closing it.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

import numpy as np
import torch

from .._resources import rebalance_threads
from ..contracts import ProgressRecord
from ..physics import inverse_farfield
from ..symmetry import circular_centroid
from ._memory import release_freed_memory, reuse_freed_memory
from ._operators import (
    OPERATORS,
    _annotate,
    _Group,
    _Loop,
    _segments,
    _Step,
    shrinkwrap_thresholds,
)
from ._plan import Plan
from ._projections import (
    FourierModulus,
    PoissonScore,
)
from ._settings import SUPPORT_STEPS, EngineResult, EngineSettings
from ._support import (
    autocorrelation_support,
    shaped_support,
    shrinkwrap,
)


def centre_runs(x: torch.Tensor, support: torch.Tensor, ndim: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """fftshift then roll every run so its support's (circular) centroid is at ``n // 2``."""
    dims = tuple(range(-ndim, 0))
    x = torch.fft.fftshift(x, dim=dims)
    support = torch.fft.fftshift(support, dim=dims)
    centres = circular_centroid(support, ndim).cpu().tolist()
    out_x, out_s = [], []
    for r in range(x.shape[0]):
        shifts = [round(n // 2 - c) for n, c in zip(support.shape[1:], centres[r], strict=True)]
        out_x.append(torch.roll(x[r], shifts=shifts, dims=dims))
        out_s.append(torch.roll(support[r], shifts=shifts, dims=dims))
    return torch.stack(out_x), torch.stack(out_s)


def _preview(x: torch.Tensor, support: torch.Tensor, size: int, ndim: int) -> dict[str, np.ndarray]:
    """Low-resolution amplitude/phase/support of one run (central slice in 3-D), centred."""
    dims = tuple(range(-ndim, 0))
    xc = torch.fft.fftshift(x, dim=dims)
    sc = torch.fft.fftshift(support, dim=dims)
    if ndim == 3:
        xc, sc = xc[xc.shape[0] // 2], sc[sc.shape[0] // 2]
    step = max(1, max(xc.shape) // size)
    xc, sc = xc[::step, ::step], sc[::step, ::step]
    return {"amplitude": xc.abs().cpu().numpy(), "phase": torch.angle(xc).cpu().numpy(),
            "support": sc.cpu().numpy()}


def _per_run(settings: EngineSettings, seeds: Sequence[int], gens: list[torch.Generator],
             shrink_thresholds: Sequence[float | tuple[float, float]] | None,
             positive: Sequence[bool] | None, rdtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """Per run: its autocorrelation threshold, shrinkwrap threshold and positivity flag.

    The autocorrelation thresholds are the first draws of each run's generator.
    """
    runs, device = len(seeds), gens[0].device
    lo, hi = settings.support_threshold
    ac_thresholds = torch.stack([lo + (hi - lo) * torch.rand((), generator=g, device=device,
                                                             dtype=rdtype) for g in gens])
    per_run = ([settings.shrinkwrap_threshold] * runs if shrink_thresholds is None
               else list(shrink_thresholds))
    positive = [settings.positivity] * runs if positive is None else list(positive)
    if len(per_run) != runs or len(positive) != runs:
        raise ValueError(f"{len(positive)} positivity flags and {len(per_run)} thresholds "
                         f"for {runs} runs")
    shrink_threshold = torch.cat([shrinkwrap_thresholds(t, [s], device, rdtype)
                                  for t, s in zip(per_run, seeds, strict=True)])
    return ac_thresholds, shrink_threshold, positive


def _starts(obs: torch.Tensor, valid: torch.Tensor, measured: torch.Tensor,
            amplitude: torch.Tensor, gens: list[torch.Generator], ac_thresholds: torch.Tensor,
            shrink_threshold: torch.Tensor, settings: EngineSettings,
            start: torch.Tensor | None, initial_support: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The runs' first objects and supports (unshifted): from `start`, or random phases in
    the initial supports (given, shaped, or from the autocorrelation).

    Draws from `gens` in a fixed order, so that run r is the same in any batch.
    """
    ndim = obs.ndim
    dims = tuple(range(-ndim, 0))
    device, rdtype = obs.device, obs.dtype
    cdtype = torch.complex64 if rdtype == torch.float32 else torch.complex128
    runs, shape = len(gens), tuple(obs.shape)
    size = float(np.prod(shape))
    if start is not None:
        x = torch.fft.ifftshift(start.to(device=device, dtype=cdtype), dim=dims)
        support = shrinkwrap(x, torch.ones_like(x, dtype=torch.bool), settings.sigma_start,
                             shrink_threshold, "max", ndim)
    else:
        if settings.initial_support == "input":
            if initial_support is None:
                raise ValueError("initial_support='input' needs a support")
            base = torch.fft.ifftshift(initial_support.to(device), dim=dims)
            support = base.expand(runs, *shape).clone()
        elif settings.initial_support in ("circle", "box"):
            base = shaped_support(shape, settings.initial_support, settings.support_size, device)
            support = base.expand(runs, *shape).clone()
        else:
            support = autocorrelation_support(obs, valid, ac_thresholds, ndim)
            if not bool(measured.reshape(-1)[0]):
                # q = 0 hidden (a beamstop): the autocorrelation loses its central peak;
                # filled, it serves a beamstop of about one speckle, but with a larger
                # one a threshold relative to its maximum keeps a fraction of the object
                # (measured: 1 % of the array for an object of 2.6 %). A run whose
                # autocorrelation support is smaller than twice the smallest circle of
                # `support_radius` (an autocorrelation covers about 4x its object)
                # starts from a circle of radius drawn in that range instead, exploring
                # the object's size; the free LLK ranks all runs.
                rlo, rhi = settings.support_radius
                smallest = (math.pi * rlo**2 if ndim == 2 else 4 / 3 * math.pi * rlo**3) * size
                counts = support.reshape(runs, -1).sum(dim=1).tolist()
                for r, g in enumerate(gens):
                    u = float(torch.rand((), generator=g, device=device, dtype=torch.float64))
                    if counts[r] < 2 * smallest:
                        support[r] = shaped_support(shape, "circle", rlo + (rhi - rlo) * u,
                                                    device)
        phases = torch.stack([torch.rand(shape, generator=g, device=device, dtype=rdtype)
                              for g in gens])
        x = inverse_farfield(amplitude * torch.exp(2j * math.pi * phases).to(cdtype), ndim)
        x = torch.where(support, x, torch.zeros_like(x))
    return x, support


def _record_progress(stage: str, it: int, n_iter: int, llk_its: list[int], llk: torch.Tensor,
                     llk_free: torch.Tensor, alive: torch.Tensor, score: PoissonScore,
                     x: torch.Tensor, support: torch.Tensor, settings: EngineSettings
                     ) -> ProgressRecord:
    """The progress record after iteration `it`: the best live run's LLKs and a preview."""
    ndim = x.ndim - 1
    done = [j for j, k in enumerate(llk_its) if k <= it]
    metrics: dict[str, float] = {"llk": math.nan, "alive": int(alive.sum())}
    best = 0
    if done and bool(alive.any()):
        latest = torch.where(alive, llk[:, done[-1]], math.inf)
        best = int(torch.argmin(latest))
        metrics["llk"] = latest[best].item()
        if score.has_free:
            metrics["llk_free"] = torch.where(alive, llk_free[:, done[-1]],
                                              math.inf).min().item()
    preview = None
    if settings.preview_every and (it % settings.preview_every == 0 or it == n_iter):
        preview = _preview(x[best], support[best], settings.preview_size, ndim)
    return ProgressRecord(stage, it, n_iter, metrics, preview)


def _outside_fraction(project: FourierModulus, x: torch.Tensor, support: torch.Tensor,
                      kernels: torch.Tensor | None) -> torch.Tensor:
    """Per run: the share of the data-consistent object's power outside its support."""
    dims = tuple(range(-(x.ndim - 1), 0))
    d, _ = project(x, kernel_f=None if kernels is None else torch.fft.fftn(kernels, dim=dims))
    power = d.real**2 + d.imag**2
    return torch.where(support, torch.zeros_like(power), power).sum(
        dim=dims) / power.sum(dim=dims).clamp_min(1e-30)


def _chunks(settings: EngineSettings, x: torch.Tensor) -> list[slice]:
    """Groups of runs that go through a plan segment together: all of them on a GPU, on a
    CPU as many as keep their arrays in cache (``chunk_bytes`` per thread)."""
    runs = x.shape[0]
    chunk = settings.batch_chunk or (
        runs if x.device.type != "cpu"
        else max(1, int(settings.chunk_bytes * torch.get_num_threads()
                        // (x.element_size() * np.prod(tuple(x.shape[1:]))))))
    return [slice(a, min(a + chunk, runs)) for a in range(0, runs, chunk)]


def _new_loop(settings: EngineSettings, n_iter: int, size: float, project: FourierModulus,
              score: PoissonScore, obs: torch.Tensor, valid: torch.Tensor,
              shrink_threshold: torch.Tensor, positive: list[bool]) -> tuple[_Loop, list[int]]:
    """The loop state of ``len(positive)`` runs (all alive, LLK rows of NaN) and the
    iterations at which the LLKs are recorded."""
    runs, ndim, device, rdtype = len(positive), obs.ndim, obs.device, obs.dtype
    status = ["ok"] * runs
    alive = torch.ones(runs, dtype=torch.bool, device=device)
    llk_its = [k for k in range(1, n_iter + 1) if k % settings.llk_every == 0 or k == n_iter]
    llk = torch.full((runs, len(llk_its)), math.nan, dtype=rdtype, device=device)
    llk_free = torch.full_like(llk, math.nan)
    column = {k: j for j, k in enumerate(llk_its)}
    loop = _Loop(settings, ndim, rdtype, size, project, score, obs, valid, alive, status,
                 llk, llk_free, column, shrink_threshold,
                 torch.as_tensor(positive, dtype=torch.bool, device=device),
                 tuple(bool(p) for p in positive))
    return loop, llk_its


def iterate(intensity: torch.Tensor, mask: torch.Tensor, plan: Plan, seeds: Sequence[int],
            settings: EngineSettings, *, stage: str = "phase.classic",
            free: torch.Tensor | None = None, initial_support: torch.Tensor | None = None,
            start: torch.Tensor | None = None, positive: Sequence[bool] | None = None,
            shrink_thresholds: Sequence[float | tuple[float, float]] | None = None,
            ) -> Generator[ProgressRecord, None, EngineResult]:
    """Run `plan` on ``len(seeds)`` independent starts at once (the batch dimension).

    Every random number of run r comes from ``seeds[r]``, so a run in a batch is the
    same run as when computed alone with that seed.

    Parameters
    ----------
    intensity : torch.Tensor, real, (*spatial)
        Centred measured intensity [photons], non-negative.
    mask : torch.Tensor, bool, (*spatial)
        Valid (measured) pixels, centred.
    plan : Plan
        Schedule of ER / HIO / RAAR / ML iterations, ``sup`` and ``detwin``.
    seeds : sequence of int
        One seed per run.
    settings : EngineSettings
    free : torch.Tensor, bool, (*spatial), optional
        Centred pixels held out of the projections, scored by the free LLK.
    initial_support : torch.Tensor, bool, (*spatial), optional
        Centred starting support (``settings.initial_support == "input"``).
    start : torch.Tensor, complex, (runs, *spatial), optional
        Centred starting objects (e.g. bred from an earlier generation); their
        supports start from a shrinkwrap of the start.
    positive : sequence of bool, optional
        Per run: keep the object real and non-negative inside its support (default:
        ``settings.positivity`` for every run).
    shrink_thresholds : sequence of float or (float, float), optional
        Per run: its shrinkwrap threshold, or a range to draw it from (default:
        ``settings.shrinkwrap_threshold`` for every run).

    Yields
    ------
    ProgressRecord
        Every ``settings.progress_every`` iterations and at the end; with a low-resolution
        ``preview`` of the best run every ``settings.preview_every`` iterations.

    Returns
    -------
    EngineResult
    """
    ndim = intensity.ndim
    dims = tuple(range(-ndim, 0))
    device = intensity.device
    rdtype = intensity.dtype
    runs = len(seeds)
    shape = tuple(intensity.shape)
    obs = torch.fft.ifftshift(intensity, dim=dims)
    measured = torch.fft.ifftshift(mask, dim=dims)
    held = (torch.fft.ifftshift(free, dim=dims) if free is not None
            else torch.zeros_like(measured))
    valid = measured & ~held  # projected on
    amplitude = torch.sqrt(obs.clamp_min(0))
    project = FourierModulus(amplitude, valid)
    score = PoissonScore(obs, valid, held, settings.score_scale, settings.score_likelihood)
    size = float(np.prod(shape))

    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    ac_thresholds, shrink_threshold, positive = _per_run(settings, seeds, gens,
                                                         shrink_thresholds, positive, rdtype)
    x, support = _starts(obs, valid, measured, amplitude, gens, ac_thresholds,
                         shrink_threshold, settings, start, initial_support)

    n_iter = plan.n_iterations()
    chunks = _chunks(settings, x)
    loop, llk_its = _new_loop(settings, n_iter, size, project, score, obs, valid,
                              shrink_threshold, positive)
    alive, status, llk, llk_free = loop.alive, loop.status, loop.llk, loop.llk_free

    kernels: torch.Tensor | None = None  # (runs, *spatial) once a psf step ran
    kernel_on = [False] * runs

    def advance(sl: slice, steps: list[_Step]) -> None:
        """Run `steps` on the runs in `sl` (a cache-sized group on CPU, all on a GPU)."""
        nonlocal kernels
        group = _Group(sl, x[sl], support[sl])
        if kernels is not None and kernel_on[sl.start]:
            group.kernel = kernels[sl]
            group.kernel_f = torch.fft.fftn(group.kernel, dim=dims)
        for step in steps:
            OPERATORS[step.op](loop, group, step)
        x[sl], support[sl] = group.x, group.support
        if group.kernel is not None:
            if kernels is None:
                kernels = torch.zeros((runs, *shape), dtype=rdtype, device=device)
            kernels[sl] = group.kernel
            kernel_on[sl] = [True] * (sl.stop - sl.start)

    steps = _annotate(plan, settings, skip_first_sup=start is None)
    if device.type == "cpu":
        reuse_freed_memory()
    try:
        # Runs are independent, so each group of runs goes through a whole segment of
        # the plan (up to the next progress record) while its arrays are in cache.
        for segment in _segments(steps, n_iter, settings.progress_every):
            if device.type == "cpu":
                rebalance_threads()  # other runs may have started or ended meanwhile
            for sl in chunks:
                advance(sl, segment)
            iterations = [s.iteration for s in segment if s.op not in SUPPORT_STEPS]
            if not iterations:  # support steps after the last iteration
                continue
            it = iterations[-1]
            yield _record_progress(stage, it, n_iter, llk_its, llk, llk_free, alive, score,
                                   x, support, settings)
            if not bool(alive.any()):  # every run stopped: nothing left to iterate
                break
        outside = _outside_fraction(project, x, support, kernels)
        xc, sc = centre_runs(x, support, ndim)
        return EngineResult(xc, sc, llk_its, llk, llk_free, outside, status,
                            None if kernels is None else torch.fft.fftshift(kernels, dim=dims))
    finally:  # after the last allocation, so that nothing kept outlives the reconstruction
        if device.type == "cpu":
            release_freed_memory()
