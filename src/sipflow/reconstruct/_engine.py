"""The classical iteration loop: a generator over a plan, batched over runs.

:func:`iterate` yields a :class:`~sipflow.stage.ProgressRecord` every few
iterations and returns an :class:`EngineResult`; callers decide what to do with
progress (CLI bar, Prefect log, nothing) and can stop early by closing it.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..stage import ProgressRecord
from ._plan import Plan
from ._projections import modulus_projection, poisson_llk, update
from ._support import autocorrelation_support, shrinkwrap

#: guard on the support size, as a fraction of the array (SCIENCE.md §1)
SUPPORT_FRACTION_RANGE = (1e-4, 0.7)


@dataclass(frozen=True)
class EngineSettings:
    """Numerical settings of :func:`iterate` (validated by the stage's Params)."""

    beta: float = 0.9
    positivity: bool = False
    support_threshold: tuple[float, float] = (0.09, 0.11)
    shrinkwrap_threshold: float = 0.2
    shrinkwrap_method: str = "max"
    sigma_start: float = 2.0
    sigma_end: float = 0.7
    llk_every: int = 10
    progress_every: int = 50


@dataclass
class EngineResult:
    """What :func:`iterate` returns (torch tensors on the compute device, centred).

    Attributes
    ----------
    x : complex (runs, *spatial)
    support : bool (runs, *spatial)
    llk_iterations : list of int
        Iteration numbers at which LLK was evaluated.
    llk : real (runs, len(llk_iterations))
    status : list of str
        ``"ok"`` or why the run was stopped.
    """

    x: torch.Tensor
    support: torch.Tensor
    llk_iterations: list[int]
    llk: torch.Tensor
    status: list[str] = field(default_factory=list)


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
    out_x, out_s = [], []
    for r in range(x.shape[0]):
        w = support[r].to(torch.float64)
        shifts = []
        for axis in range(ndim):
            n = w.shape[axis]
            other = tuple(a for a in range(ndim) if a != axis)
            profile = w.sum(dim=other) if other else w
            phase = torch.exp(2j * math.pi * torch.arange(n, device=w.device) / n)
            angle = torch.angle((profile * phase).sum()).item()
            com = (angle / (2 * math.pi)) * n % n
            shifts.append(round(n // 2 - com))
        out_x.append(torch.roll(x[r], shifts=shifts, dims=dims))
        out_s.append(torch.roll(support[r], shifts=shifts, dims=dims))
    return torch.stack(out_x), torch.stack(out_s)


def iterate(intensity: torch.Tensor, mask: torch.Tensor, plan: Plan, runs: int,
            settings: EngineSettings, generator: torch.Generator, stage: str = "phase.classic",
            initial_support: torch.Tensor | None = None,
            ) -> Generator[ProgressRecord, None, EngineResult]:
    """Run `plan` on `runs` independent random starts at once.

    Parameters
    ----------
    intensity : torch.Tensor, real, (*spatial)
        Centred measured intensity [photons], non-negative.
    mask : torch.Tensor, bool, (*spatial)
        Valid pixels.
    plan : Plan
        Schedule of ER / HIO / RAAR iterations and ``sup`` updates.
    runs : int
        Number of independent random starts (the batch dimension).
    settings : EngineSettings
    generator : torch.Generator
        Source of all randomness (same seed, same result on CPU).
    initial_support : torch.Tensor, bool, (*spatial), optional
        Centred starting support; default from the autocorrelation.

    Yields
    ------
    ProgressRecord
        Every ``settings.progress_every`` iterations and at the end.

    Returns
    -------
    EngineResult
    """
    ndim = intensity.ndim
    dims = tuple(range(-ndim, 0))
    device = intensity.device
    rdtype = intensity.dtype
    cdtype = torch.complex64 if rdtype == torch.float32 else torch.complex128
    obs = torch.fft.ifftshift(intensity, dim=dims)
    valid = torch.fft.ifftshift(mask, dim=dims)
    amplitude = torch.sqrt(obs.clamp_min(0))
    size = float(np.prod(intensity.shape))
    n_valid = valid.sum().to(rdtype)

    lo, hi = settings.support_threshold
    thresholds = lo + (hi - lo) * torch.rand(runs, generator=generator, device=device,
                                             dtype=rdtype)
    if initial_support is not None:
        support = torch.fft.ifftshift(initial_support.to(device), dim=dims).expand(
            runs, *intensity.shape).clone()
    else:
        support = autocorrelation_support(obs, valid, thresholds, ndim)
    phases = torch.rand((runs, *intensity.shape), generator=generator, device=device,
                        dtype=rdtype)
    from ..physics import inverse_farfield

    x = inverse_farfield(amplitude * torch.exp(2j * math.pi * phases).to(cdtype), ndim)
    x = torch.where(support, x, torch.zeros_like(x))

    n_iter = plan.n_iterations()
    sigmas = iter(_sigmas(plan.count("sup"), settings.sigma_start, settings.sigma_end))
    status = ["ok"] * runs
    alive = torch.ones(runs, dtype=torch.bool, device=device)
    llk_its: list[int] = []
    llk_vals: list[torch.Tensor] = []
    it = 0
    lo_frac, hi_frac = SUPPORT_FRACTION_RANGE
    for op in plan.steps():
        if op == "sup":
            sigma = next(sigmas)
            if it == 0:  # nothing to shrink-wrap before the first iteration
                continue
            new = shrinkwrap(x, support, sigma, settings.shrinkwrap_threshold,
                             settings.shrinkwrap_method, ndim)
            frac = new.sum(dim=dims).to(rdtype) / size
            bad = ((frac < lo_frac) | (frac > hi_frac)) & alive
            if bool(bad.any()):
                for r in torch.nonzero(bad).flatten().tolist():
                    kind = "collapsed" if frac[r] < lo_frac else "exploded"
                    status[r] = (f"support {kind} to {frac[r].item():.2%} of the array at "
                                 f"iteration {it} (allowed {lo_frac:.2%}-{hi_frac:.0%})")
                alive &= ~bad
            keep = alive.reshape((-1,) + (1,) * ndim)
            support = torch.where(keep, new, support)
            continue
        d, calc = modulus_projection(x, amplitude, valid, ndim)
        it += 1
        if it % settings.llk_every == 0 or it == n_iter:
            llk_its.append(it)
            dof = n_valid - support.sum(dim=dims).to(rdtype)
            llk_vals.append(poisson_llk(calc, obs, valid, ndim, dof))
        x = update(op, x, d, support, settings.beta, settings.positivity)
        if it % settings.progress_every == 0 or it == n_iter:
            best = llk_vals[-1][alive].min().item() if llk_vals and bool(alive.any()) else math.nan
            yield ProgressRecord(stage, it, n_iter, {"llk": best, "alive": int(alive.sum())})
    llk = torch.stack(llk_vals, dim=1) if llk_vals else torch.zeros((runs, 0), dtype=rdtype)
    xc, sc = centre_runs(x, support, ndim)
    return EngineResult(xc, sc, llk_its, llk, status)
