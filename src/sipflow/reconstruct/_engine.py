"""The classical iteration loop: a generator over a plan, batched over runs.

:func:`iterate` yields a :class:`~sipflow.stage.ProgressRecord` every few
iterations and returns an :class:`EngineResult`; callers decide what to do with
progress (CLI bar, Prefect log, nothing) and can stop early by closing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .._resources import rebalance_threads
from ..contracts import ProgressRecord
from ..physics import gaussian_kernel, inverse_farfield, richardson_lucy_kernel
from ..symmetry import circular_centroid
from ._memory import release_freed_memory, reuse_freed_memory
from ._params import ClassicParams
from ._plan import Plan
from ._projections import (
    FourierModulus,
    PoissonScore,
    apply_update,
    ml_step,
    update,
    update_factors,
)
from ._support import (
    autocorrelation_support,
    detwin,
    morph,
    shaped_support,
    shrinkwrap,
)

#: plan steps that are not iterations (support updates, the coherence kernel's update)
SUPPORT_STEPS = ("sup", "detwin", "psf")
#: guard on the support size, as a fraction of the array (docs/design.md)
SUPPORT_FRACTION_RANGE = (1e-4, 0.7)


@dataclass(frozen=True)
class EngineSettings:
    """Numerical settings of :func:`iterate`.

    The fields that are also ``phase.classic`` parameters have no defaults of their
    own: build settings with :meth:`from_params`, which takes them (defaults, bounds
    and documentation) from :class:`~sipflow.reconstruct.ClassicParams`.
    """

    beta: float
    positivity: bool
    initial_support: str
    support_size: float
    support_threshold: tuple[float, float]
    support_radius: tuple[float, float]
    shrinkwrap_threshold: float | tuple[float, float]
    shrinkwrap_method: str
    sigma_start: float
    sigma_end: float
    force_shrink: bool
    post_expand: tuple[int, ...]
    detwin_axis: int
    psf_sigma: float
    psf_iterations: int
    llk_every: int
    preview_every: int
    progress_every: int = 50
    preview_size: int = 64
    #: runs computed together; 0: all on a GPU, on CPU groups of at most `chunk_bytes`
    #: per thread per complex array, each taken through the plan up to the next progress
    #: record before the next group (so its arrays stay in cache)
    batch_chunk: int = 0
    chunk_bytes: float = 2**20

    @classmethod
    def from_params(cls, params: Any = None, ndim: int = 3, **engine_only: Any
                    ) -> EngineSettings:
        """Settings from a ``ClassicParams`` (default: its defaults) plus engine-only fields.

        Parameters
        ----------
        params : ClassicParams, optional
        ndim : int
            Spatial dimensions of the data (bounds ``detwin_axis``).
        **engine_only
            ``progress_every``, ``preview_size``, ``batch_chunk``, ``chunk_bytes``.
        """
        params = params if params is not None else ClassicParams()
        shared = {f.name for f in fields(cls)} & set(type(params).model_fields)
        values = {name: getattr(params, name) for name in shared}
        values["post_expand"] = tuple(values["post_expand"])
        values["support_threshold"] = tuple(values["support_threshold"])
        values["support_radius"] = tuple(values["support_radius"])
        if isinstance(values["shrinkwrap_threshold"], list | tuple):
            values["shrinkwrap_threshold"] = tuple(values["shrinkwrap_threshold"])
        values["detwin_axis"] = min(values["detwin_axis"], ndim - 1)
        return cls(**values, **engine_only)


@dataclass
class EngineResult:
    """What :func:`iterate` returns (torch tensors on the compute device, centred).

    Attributes
    ----------
    x : complex (runs, *spatial)
        Final objects, each rolled so that its support's centroid is at n//2.
    support : bool (runs, *spatial)
    llk_iterations : list of int
        Iteration numbers at which the LLKs were evaluated.
    llk : real (runs, len(llk_iterations))
        Normalised Poisson LLK on the projected (measured, not free) pixels.
    llk_free : real (runs, len(llk_iterations))
        The same on the held-out free pixels (NaN when there are none).
    outside_fraction : real (runs,)
        Share of ``|P_M x|^2`` outside the support at the end.
    status : list of str
        ``"ok"`` or why the run was stopped.
    kernel : real (runs, *spatial) or None
        Each run's partial-coherence kernel (centred: origin at n//2), when the plan
        has ``psf``.
    """

    x: torch.Tensor
    support: torch.Tensor
    llk_iterations: list[int]
    llk: torch.Tensor
    llk_free: torch.Tensor
    outside_fraction: torch.Tensor
    status: list[str] = field(default_factory=list)
    kernel: torch.Tensor | None = None


def _sigmas(n_updates: int, start: float, end: float) -> list[float]:
    if n_updates <= 1:
        return [start] * n_updates
    return [start * (end / start) ** (k / (n_updates - 1)) for k in range(n_updates)]


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


@dataclass(frozen=True)
class _Step:
    """One plan step with what it needs: the iteration it is or follows, its sigma."""

    op: str
    iteration: int
    sigma: float = 0.0


def _annotate(plan: Plan, settings: EngineSettings, skip_first_sup: bool) -> list[_Step]:
    """The plan's steps with iteration numbers and shrinkwrap widths, in order.

    A ``sup`` before the first iteration is dropped when there is nothing to wrap yet
    (a random start); it still takes its place in the sigma schedule.
    """
    sigmas = iter(_sigmas(plan.count("sup"), settings.sigma_start, settings.sigma_end))
    steps, it = [], 0
    for op in plan.steps():
        if op == "sup":
            sigma = next(sigmas)
            if not (it == 0 and skip_first_sup):
                steps.append(_Step(op, it, sigma))
        elif op in ("detwin", "psf"):
            steps.append(_Step(op, it))
        else:
            it += 1
            steps.append(_Step(op, it))
    return steps


def _segments(steps: list[_Step], n_iter: int, every: int) -> list[list[_Step]]:
    """Split `steps` after every iteration that is a progress point (and at the end)."""
    out: list[list[_Step]] = [[]]
    for step in steps:
        out[-1].append(step)
        if step.op not in SUPPORT_STEPS and (step.iteration % every == 0
                                                 or step.iteration == n_iter):
            out.append([])
    if not out[-1]:
        out.pop()
    return out


@dataclass
class _Loop:
    """What every operator of a reconstruction shares (read-only but for the records)."""

    settings: EngineSettings
    ndim: int
    rdtype: torch.dtype
    size: float
    project: FourierModulus
    score: PoissonScore
    obs: torch.Tensor
    valid: torch.Tensor
    alive: torch.Tensor
    status: list[str]
    llk: torch.Tensor
    llk_free: torch.Tensor
    column: dict[int, int]
    #: each run's shrinkwrap threshold, (runs,)
    shrink_threshold: torch.Tensor
    #: which runs keep their object real and non-negative, (runs,) bool, and the same
    #: flags on the host (deciding the code path without waiting for the device)
    positive: torch.Tensor
    positive_flags: tuple[bool, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(range(-self.ndim, 0))


@dataclass
class _Group:
    """A group of runs going through a plan segment: their objects and supports.

    ``sizes`` (support sizes, for the LLK's degrees of freedom) and ``factors`` (the
    linear update factors of one algorithm) are caches of the support; an operator
    that changes the support calls :meth:`set_support`.
    """

    sl: slice
    x: torch.Tensor
    support: torch.Tensor
    #: partial-coherence kernels (origin at index 0) and their FFTs, once a psf step ran
    kernel: torch.Tensor | None = None
    kernel_f: torch.Tensor | None = None
    sizes: torch.Tensor | None = None
    factors: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_support(self.support)

    def set_support(self, support: torch.Tensor) -> None:
        self.support = support
        self.sizes = support.sum(dim=tuple(range(1, support.ndim)))
        self.factors.clear()


#: an operator of the plan: updates a group of runs in place for one plan step
Operator = Callable[[_Loop, _Group, "_Step"], None]


def _record(loop: _Loop, group: _Group, step: _Step, calc: torch.Tensor | None) -> None:
    if calc is not None and step.iteration in loop.column:
        j = loop.column[step.iteration]
        loop.llk[group.sl, j], loop.llk_free[group.sl, j] = loop.score(calc, group.sizes)


def _projection_update(loop: _Loop, group: _Group, step: _Step) -> None:
    """ER / HIO / RAAR: modulus projection, then the algorithm's update (see ``update``)."""
    want_llk = step.iteration in loop.column
    d, calc = loop.project(group.x, with_calc=want_llk, kernel_f=group.kernel_f)
    flags = loop.positive_flags[group.sl]
    if any(flags):
        group.x = update(step.op, group.x, d, group.support, loop.settings.beta,
                         positivity=True if all(flags) else loop.positive[group.sl])
    else:
        if step.op not in group.factors:
            group.factors.clear()  # one algorithm's factors at a time
            group.factors[step.op] = update_factors(step.op, group.support,
                                                    loop.settings.beta, loop.rdtype)
        group.x = apply_update(d, group.x, *group.factors[step.op])
    _record(loop, group, step, calc)


def _ml(loop: _Loop, group: _Group, step: _Step) -> None:
    """One Poisson maximum-likelihood gradient step inside the support."""
    group.x, calc = ml_step(group.x, loop.obs, loop.valid, group.support, loop.ndim)
    _record(loop, group, step, calc)


def _shrinkwrap(loop: _Loop, group: _Group, step: _Step) -> None:
    """Shrinkwrap the support; runs whose support collapses or explodes are stopped."""
    st = loop.settings
    ss, xs, sl = group.support, group.x, group.sl
    # wrap the in-support part: HIO/RAAR leave large values outside a wrong
    # support, which would make the support explode instead of shrink
    inner = torch.where(ss, xs, torch.zeros_like(xs))
    new = shrinkwrap(inner, ss, step.sigma, loop.shrink_threshold[group.sl],
                     st.shrinkwrap_method, loop.ndim)
    if st.post_expand:
        new = morph(new, st.post_expand, loop.ndim)
    if st.force_shrink:
        new &= ss
    lo_frac, hi_frac = SUPPORT_FRACTION_RANGE
    frac = new.sum(dim=loop.dims).to(loop.rdtype) / loop.size
    ok = loop.alive[sl]
    bad = ((frac < lo_frac) | (frac > hi_frac)) & ok
    if bool(bad.any()):
        for r in torch.nonzero(bad).flatten().tolist():
            kind = "collapsed" if frac[r] < lo_frac else "exploded"
            loop.status[sl.start + r] = (
                f"support {kind} to {frac[r].item():.2%} of the array at "
                f"iteration {step.iteration} (allowed {lo_frac:.2%}-{hi_frac:.0%})")
        ok = ok & ~bad
        loop.alive[sl] = ok
    view = (-1,) + (1,) * loop.ndim
    group.set_support(torch.where(ok.reshape(view), new, ss))


def _detwin(loop: _Loop, group: _Group, step: _Step) -> None:
    """Keep the half of each support on one side of its centroid."""
    group.set_support(detwin(group.support, loop.ndim, loop.settings.detwin_axis))


def _psf(loop: _Loop, group: _Group, step: _Step) -> None:
    """Richardson–Lucy update of each run's coherence kernel against its coherent pattern."""
    st = loop.settings
    f = torch.fft.fftn(group.x, dim=loop.dims)
    coherent = (f.real**2 + f.imag**2) / loop.size
    if group.kernel is None:
        k0 = gaussian_kernel(tuple(loop.obs.shape), st.psf_sigma, device=loop.obs.device,
                             dtype=loop.rdtype)
        group.kernel = k0.expand_as(coherent).clone()
    group.kernel = richardson_lucy_kernel(group.kernel, coherent, loop.obs, loop.valid,
                                          st.psf_iterations)
    group.kernel_f = torch.fft.fftn(group.kernel, dim=loop.dims)


#: the plan's operators: adding one to the engine is one entry here (and its name in
#: the plan grammar)
OPERATORS: dict[str, Operator] = {
    "ER": _projection_update,
    "HIO": _projection_update,
    "RAAR": _projection_update,
    "ML": _ml,
    "sup": _shrinkwrap,
    "detwin": _detwin,
    "psf": _psf,
}


def shrinkwrap_thresholds(threshold: float | tuple[float, float], seeds: Sequence[int],
                          device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Each run's shrinkwrap threshold, (runs,): the value, or one drawn per run in a range.

    A range ``(low, high)`` lets the runs of one set try several thresholds (ranked by free
    LLK at the end), for data whose best threshold is not known. The draw uses a
    generator of its own per run (seed + 1), so the run's other random numbers are those
    of a fixed threshold.
    """
    if not isinstance(threshold, tuple | list):
        return torch.full((len(seeds),), float(threshold), dtype=dtype, device=device)
    lo, hi = (float(v) for v in threshold)
    gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
    return torch.stack([lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64)
                        for g in gens]).to(device=device, dtype=dtype)


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
    cdtype = torch.complex64 if rdtype == torch.float32 else torch.complex128
    runs = len(seeds)
    shape = tuple(intensity.shape)
    obs = torch.fft.ifftshift(intensity, dim=dims)
    measured = torch.fft.ifftshift(mask, dim=dims)
    held = (torch.fft.ifftshift(free, dim=dims) if free is not None
            else torch.zeros_like(measured))
    valid = measured & ~held  # projected on
    amplitude = torch.sqrt(obs.clamp_min(0))
    project = FourierModulus(amplitude, valid)
    score = PoissonScore(obs, valid, held)
    size = float(np.prod(shape))

    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
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

    n_iter = plan.n_iterations()
    chunk = settings.batch_chunk or (
        runs if device.type != "cpu"
        else max(1, int(settings.chunk_bytes * torch.get_num_threads()
                        // (x.element_size() * np.prod(shape)))))
    chunks = [slice(a, min(a + chunk, runs)) for a in range(0, runs, chunk)]
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
            yield ProgressRecord(stage, it, n_iter, metrics, preview)
            if not bool(alive.any()):  # every run stopped: nothing left to iterate
                break
        # share of the data-consistent object outside the support
        d, _ = project(x, kernel_f=None if kernels is None else torch.fft.fftn(kernels,
                                                                               dim=dims))
        power = d.real**2 + d.imag**2
        outside = torch.where(support, torch.zeros_like(power), power).sum(
            dim=dims) / power.sum(dim=dims).clamp_min(1e-30)
        xc, sc = centre_runs(x, support, ndim)
        return EngineResult(xc, sc, llk_its, llk, llk_free, outside, status,
                            None if kernels is None else torch.fft.fftshift(kernels, dim=dims))
    finally:  # after the last allocation, so that nothing kept outlives the reconstruction
        if device.type == "cpu":
            release_freed_memory()
