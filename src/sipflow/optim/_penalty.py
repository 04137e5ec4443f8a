"""The penalty + Adam practice, for comparison with the certified solver."""

from __future__ import annotations

import time

import numpy as np
import torch

from ._certificate import _certificate, _fit_multipliers, _reference_gradient
from ._problem import Problem, Result, SolverOptions, _Packing, _stack


def penalty_adam(problem: Problem, *, weight: float = 100.0, steps: int = 2000,
                 lr: float = 1e-2, options: SolverOptions | None = None) -> Result:
    """The common practice, for comparison: ``f + weight·Σ(max(0, c)² + h²)`` with Adam.

    Bounds and fixed entries are enforced by projection after every step; a
    ``problem.continuation`` is ignored (the practice as commonly run). The result
    carries the same :class:`Certificate` as :func:`solve`, with fitted multipliers (as
    :func:`certify`; started from those the penalty implies, ``2·weight·max(0, c)`` and
    ``2·weight·h``); its tolerances are those of `options`.
    """
    opts = options or SolverOptions()
    t0 = time.perf_counter()
    pack = _Packing(problem.variables, opts.dtype)
    lower = torch.as_tensor(pack.lower, dtype=opts.dtype, device=pack.device)
    upper = torch.as_tensor(pack.upper, dtype=opts.dtype, device=pack.device)
    z = pack.tensor(pack.x0, grad=True)
    optimiser = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        v = pack.unpack(z)
        c, _ = _stack(problem.inequalities, problem.scales, v, opts.dtype)
        h, _ = _stack(problem.equalities, problem.scales, v, opts.dtype)
        loss = problem.objective(v).to(opts.dtype).reshape(()) + weight * (
            (torch.clamp(c, min=0) ** 2).sum() + (h ** 2).sum())
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, upper), lower))
    x = z.detach().cpu().double().numpy()
    with torch.no_grad():
        v = pack.unpack(pack.tensor(x))
        c, _ = _stack(problem.inequalities, problem.scales, v, opts.dtype)
        h, _ = _stack(problem.equalities, problem.scales, v, opts.dtype)
    start = (2 * weight * np.maximum(c.cpu().double().numpy(), 0),
             2 * weight * h.cpu().double().numpy())
    ref = _reference_gradient(problem, pack, opts.dtype)
    lam, mu = _fit_multipliers(problem, pack, x, opts, ref, start)
    cert = _certificate(problem, pack, x, lam, mu, opts, 0, steps, weight, t0, ref)
    values = pack.unpack(pack.tensor(x))
    return Result({v.name: values[v.name].detach().to(v.init.dtype) for v in problem.variables},
                  cert)
