"""The engine's operator table: a plan annotated into steps, and one function per step
(projections, ML, shrinkwrap, detwin, psf) acting on a group of runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..physics import gaussian_kernel, richardson_lucy_kernel
from ._plan import Plan
from ._projections import (
    FourierModulus,
    PoissonScore,
    apply_update,
    ml_step,
    update,
    update_factors,
)
from ._settings import SUPPORT_FRACTION_RANGE, SUPPORT_STEPS, EngineSettings
from ._support import (
    detwin,
    morph,
    shrinkwrap,
)


def _sigmas(n_updates: int, start: float, end: float) -> list[float]:
    if n_updates <= 1:
        return [start] * n_updates
    return [start * (end / start) ** (k / (n_updates - 1)) for k in range(n_updates)]


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
