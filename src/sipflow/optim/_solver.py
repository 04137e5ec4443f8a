"""The augmented-Lagrangian solver around scipy's L-BFGS-B (see sipflow.optim)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ._certificate import (
    _certificate,
    _fit_multipliers,
    _kkt_scale,
    _reference_gradient,
)
from ._problem import Certificate, Problem, Result, SolverOptions, Values, _Packing, _stack
from ._sampling import _gradient_sampling


def solve(problem: Problem, options: SolverOptions | None = None,
          callback: Callable[[int, Certificate], None] | None = None) -> Result:
    """Solve `problem` and certify the answer.

    Parameters
    ----------
    problem : Problem
    options : SolverOptions, optional
    callback : callable, optional
        Called with (outer iteration, certificate so far) after every outer iteration.

    Returns
    -------
    Result
        ``values`` (tensors of the variables' shapes, dtypes and device) and the
        :class:`Certificate`. A problem whose constraints cannot be met ends with
        ``status == "infeasible"`` and the violation reached, not with an exception.
    """
    from scipy.optimize import minimize

    opts = options or SolverOptions()
    t0 = time.perf_counter()
    dtype = opts.dtype
    # the certificate's unit is the user's problem at the user's start
    ref = _reference_gradient(problem, _Packing(problem.variables, dtype), dtype)
    problem, restoration_inner = _restore(problem, opts)
    problem, continuation_inner = _continue(problem, opts)
    pack = _Packing(problem.variables, opts.dtype)
    x = pack.x0.copy()

    def parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = pack.unpack(z)
        f = problem.objective(v).to(dtype)
        if f.numel() != 1 or f.is_complex():
            raise TypeError("the objective must return a real scalar tensor")
        c, _ = _stack(problem.inequalities, problem.scales, v, dtype)
        h, _ = _stack(problem.equalities, problem.scales, v, dtype)
        return f.reshape(()), c.to(pack.device), h.to(pack.device)

    with torch.no_grad():
        _, c0, h0 = parts(pack.tensor(x))
    lam = np.zeros(c0.numel())
    mu = np.zeros(h0.numel())
    rho = opts.penalty
    inner_total = restoration_inner + continuation_inner
    prev_violation = math.inf
    cert: Certificate | None = None

    def augmented(xv: np.ndarray) -> tuple[float, np.ndarray]:
        z = pack.tensor(xv, grad=True)
        f, c, h = parts(z)
        lam_t = torch.as_tensor(lam, dtype=dtype, device=pack.device)
        mu_t = torch.as_tensor(mu, dtype=dtype, device=pack.device)
        value = f
        if c.numel():
            value = value + (torch.clamp(lam_t + rho * c, min=0) ** 2 - lam_t ** 2).sum() / (
                2 * rho)
        if h.numel():
            value = value + (mu_t * h).sum() + 0.5 * rho * (h ** 2).sum()
        (grad,) = torch.autograd.grad(value, z)
        return float(value.detach()), grad.detach().cpu().double().numpy()

    fixed_all = pack.lower == pack.upper
    outer = 0
    for outer in range(1, opts.max_outer + 1):
        res = minimize(augmented, x, jac=True, method="L-BFGS-B", bounds=pack.bounds(),
                       options={"maxiter": opts.max_inner, "maxcor": opts.memory,
                                "ftol": 1e-16,
                                "gtol": 1e-3 * opts.kkt_tol * _kkt_scale(problem, pack, x, ref,
                                                                        dtype),
                                "maxfun": 4 * opts.max_inner})
        x_prev = x
        x = np.clip(res.x, pack.lower, pack.upper)
        x[fixed_all] = pack.lower[fixed_all]
        inner_total += int(res.nit)
        with torch.no_grad():
            _, c, h = parts(pack.tensor(x))
        c_np, h_np = c.cpu().double().numpy(), h.cpu().double().numpy()
        lam = np.maximum(0.0, lam + rho * c_np)
        mu = mu + rho * h_np
        cert = _certificate(problem, pack, x, lam, mu, opts, outer, inner_total, rho, t0, ref)
        if callback is not None:
            callback(outer, cert)
        if cert.certified:
            break
        # the penalty answers the problem as solved: smoothed constraints may be violated
        # where the exact ones (the certificate's) are met, and multipliers would grow
        violation = max(cert.max_violation, float(np.maximum(c_np, 0).max(initial=0.0)),
                        float(np.abs(h_np).max(initial=0.0)))
        if (violation <= opts.violation_tol and outer > 1
                and np.abs(x - x_prev).max(initial=0.0)
                <= 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0)))):
            break  # feasible and stalled (e.g. at a kink): more outer iterations change nothing
        if violation > opts.violation_tol and violation > opts.decrease * prev_violation:
            if rho >= opts.penalty_max:
                break
            rho = min(opts.penalty_max, rho * opts.penalty_growth)
        prev_violation = violation
    assert cert is not None
    if cert.status == "not_stationary":  # the AL estimates may be poor; fitted ones may do
        lam_fit, mu_fit = _fit_multipliers(problem, pack, x, opts, ref, (lam, mu))
        fitted = _certificate(problem, pack, x, lam_fit, mu_fit, opts, outer, inner_total,
                              rho, t0, ref)
        if fitted.kkt_residual < cert.kkt_residual:
            cert = fitted
    free_unknowns = int((pack.lower != pack.upper).sum())
    if not cert.certified and (
            opts.nonsmooth is True
            or (opts.nonsmooth is None and cert.status == "not_stationary"
                and free_unknowns <= opts.sampling_max_unknowns)):
        x, cert = _gradient_sampling(problem, pack, x, cert, opts, outer, inner_total, t0,
                                     ref)
    values = pack.unpack(pack.tensor(x))
    values = {v.name: values[v.name].detach().to(v.init.dtype if v.init.is_floating_point()
                                                  or v.init.is_complex() else dtype)
              for v in problem.variables}
    return Result(values, cert)


def _restore(problem: Problem, opts: SolverOptions) -> tuple[Problem, int]:
    """Feasibility restoration: when the start violates the constraints, start instead
    from the nearest point that meets them (``min ‖x − x0‖² / ‖x0‖²`` under the same
    constraints and simple sets, solved by the same method).

    A start far outside a budget otherwise lets the first inner solves fit the objective
    alone and settle in the nearest stationary point of the objective that happens to be
    feasible; on CDI refinement with a total-variation budget the restored start (a
    denoised object) reaches lower objectives (``benchmarks/README.md``). Returns the
    problem with the restored starting values (unchanged when the start is feasible, when
    `opts.restoration` is off, or when restoring did not lower the violation) and the
    inner iterations spent.
    """
    from dataclasses import replace

    if not opts.restoration or not (problem.inequalities or problem.equalities):
        return problem, 0
    violation, v0 = _start_violation(problem, opts)
    if violation <= opts.violation_tol:
        return problem, 0
    inits = {name: value.detach().clone() for name, value in v0.items()}
    norm = max(sum(float((t.abs() ** 2).sum()) for t in inits.values()), 1e-300)

    def distance(v: Values) -> torch.Tensor:
        return sum(((v[k] - inits[k].to(v[k].dtype)).abs() ** 2).sum()
                   for k in inits) / norm

    nearest = replace(problem, objective=distance, continuation=(),
                      variables=[replace(v, init=inits[v.name].to(v.init.dtype))
                                 for v in problem.variables])
    result = solve(nearest, replace(opts, restoration=False, nonsmooth=False))
    if result.certificate.max_violation >= violation:
        return problem, result.certificate.inner_iterations
    restored = replace(problem, variables=[replace(v, init=result.values[v.name])
                                           for v in problem.variables])
    return restored, result.certificate.inner_iterations


def _start_violation(problem: Problem, opts: SolverOptions) -> tuple[float, Values]:
    """Largest scaled violation of the constraints as solved, at the problem's start."""
    start = _Packing(problem.variables, opts.dtype)
    with torch.no_grad():
        v0 = start.unpack(start.tensor(start.x0))
        c, _ = _stack(problem.inequalities, problem.scales, v0, opts.dtype)
        h, _ = _stack(problem.equalities, problem.scales, v0, opts.dtype)
    violation = max(float(torch.clamp(c, min=0).max()) if c.numel() else 0.0,
                    float(h.abs().max()) if h.numel() else 0.0)
    return violation, v0


#: a continuation's intermediate solves only have to reach a basin: KKT tolerance × this
_CONTINUATION_LOOSENESS = 1000.0


def _continue(problem: Problem, opts: SolverOptions) -> tuple[Problem, int]:
    """Solve `problem.continuation`'s objectives in turn (see :class:`Problem`).

    Returns `problem` without its continuation, started from the last answer, and the
    inner iterations spent. An intermediate answer that is less feasible than the start
    it came from is dropped (the continuation then goes on from that start).
    """
    from dataclasses import replace

    inner = 0
    for objective in problem.continuation:
        step = replace(problem, objective=objective, continuation=())
        before, _ = _start_violation(problem, opts)
        result = solve(step, replace(opts, restoration=False, nonsmooth=False,
                                     kkt_tol=opts.kkt_tol * _CONTINUATION_LOOSENESS))
        inner += result.certificate.inner_iterations
        moved = replace(problem, variables=[replace(v, init=result.values[v.name])
                                            for v in problem.variables])
        if _start_violation(moved, opts)[0] <= max(before, opts.violation_tol):
            problem = moved
    return replace(problem, continuation=()), inner
