"""The certificate: fitted multipliers, scaled violations, KKT residual and the verdict."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch

from ._problem import Certificate, Problem, SolverOptions, Variable, _Packing, _projected, _stack


def certify(problem: Problem, values: Mapping[str, torch.Tensor],
            options: SolverOptions | None = None) -> Certificate:
    """The certificate of any answer to `problem` (another solver's, a network's).

    The multipliers are fitted: the non-negative inequality multipliers and the equality
    multipliers that minimise the Lagrangian's gradient projected on the simple sets
    (plus the complementarity ``λ_i c_i``), over the constraints within 0.1 (scaled) of
    being active. The simple sets are those of ``problem.variables``; `values` are
    projected on them first (an answer outside its bounds is judged where it would be put).

    Parameters
    ----------
    problem : Problem
    values : dict of str to Tensor
        One tensor per variable, of its shape.
    options : SolverOptions, optional
        Tolerances and precision.

    Returns
    -------
    Certificate
        With ``outer_iterations = inner_iterations = 0`` and ``penalty = 0``.
    """
    opts = options or SolverOptions()
    t0 = time.perf_counter()
    missing = [v.name for v in problem.variables if v.name not in values]
    if missing:
        raise KeyError(f"no value for variable(s) {missing}")
    answer = []
    for v in problem.variables:
        value = torch.as_tensor(values[v.name]).to(v.init.device)
        if tuple(value.shape) != tuple(v.init.shape):
            raise ValueError(f"variable {v.name!r}: value of shape {tuple(value.shape)}, "
                             f"expected {tuple(v.init.shape)}")
        if v.fixed is not None:  # fixed entries are where the problem holds them
            value = torch.where(torch.as_tensor(v.fixed, device=value.device),
                                v.init.to(value.dtype), value)
        answer.append(Variable(v.name, value, v.lower, v.upper, v.fixed))
    pack = _Packing(answer, opts.dtype)
    ref = _reference_gradient(problem, _Packing(problem.variables, opts.dtype), opts.dtype)
    x = pack.x0
    lam, mu = _fit_multipliers(problem, pack, x, opts, ref)
    return _certificate(problem, pack, x, lam, mu, opts, 0, 0, 0.0, t0, ref)


def _fit_multipliers(problem: Problem, pack: _Packing, x: np.ndarray, opts: SolverOptions,
                     ref: float, start: tuple[np.ndarray, np.ndarray] | None = None,
                     max_entries: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers that make `x` as stationary as it can be (see :func:`certify`).

    Falls back to `start` (or zeros) when the Jacobian of the near-active constraints
    would hold more than `max_entries` numbers.
    """
    from scipy.optimize import minimize

    dtype = opts.dtype
    with torch.enable_grad():
        z = pack.tensor(x, grad=True)
        v = pack.unpack(z)
        f = problem.objective(v).to(dtype).reshape(())
        c, _ = _stack(problem.inequalities, problem.scales, v, dtype)
        h, _ = _stack(problem.equalities, problem.scales, v, dtype)
        (gf,) = torch.autograd.grad(f, z, retain_graph=True)
        c_np = c.detach().cpu().double().numpy()
        lam0, mu0 = start if start is not None else (np.zeros(c.numel()), np.zeros(h.numel()))
        rows_c = np.flatnonzero(c_np >= -0.1)
        n_rows = rows_c.size + h.numel()
        if n_rows == 0 or n_rows * x.size > max_entries:
            return lam0, mu0
        jac = [torch.autograd.grad(c[i], z, retain_graph=True)[0] for i in rows_c]
        jac += [torch.autograd.grad(h[j], z, retain_graph=True)[0] for j in range(h.numel())]
    jmat = torch.stack(jac).cpu().double().numpy()
    g0 = gf.cpu().double().numpy()
    fixed = pack.lower == pack.upper
    jmat[:, fixed] = 0.0
    g0[fixed] = 0.0
    span = np.maximum(1.0, np.abs(x))
    at_lo = np.isfinite(pack.lower) & (x - pack.lower <= 1e-10 * span) & ~fixed
    at_hi = np.isfinite(pack.upper) & (pack.upper - x <= 1e-10 * span) & ~fixed
    gscale = _scale(ref, float(np.abs(g0).max(initial=0.0)))
    cscale = max(1.0, abs(float(f.detach())))
    k = rows_c.size
    c_rows = c_np[rows_c]

    def fun(y: np.ndarray) -> tuple[float, np.ndarray]:
        r = g0 + jmat.T @ y
        r[at_lo] = np.minimum(r[at_lo], 0.0)  # a bound absorbs what pushes out of the set
        r[at_hi] = np.maximum(r[at_hi], 0.0)
        comp = y[:k] * c_rows / cscale
        value = float(r @ r) / gscale ** 2 + float(comp @ comp)
        grad = 2.0 * (jmat @ r) / gscale ** 2
        grad[:k] += 2.0 * comp * c_rows / cscale
        return value, grad

    y0 = np.concatenate([lam0[rows_c], mu0])
    res = minimize(fun, y0, jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * k + [(None, None)] * h.numel(),
                   options={"maxiter": 1000, "ftol": 1e-30, "gtol": 1e-30})
    y = res.x if fun(res.x)[0] <= fun(y0)[0] else y0
    lam = np.zeros(c.numel())
    lam[rows_c] = y[:k]
    return lam, y[k:]


def _scale(ref: float, grad_now: float) -> float:
    """What the KKT residual is relative to (see :attr:`SolverOptions.kkt_tol`)."""
    value = max(ref, grad_now)
    return value if value > 0 else 1.0


def _reference_gradient(problem: Problem, start: _Packing, dtype: torch.dtype) -> float:
    """``‖∇f‖∞`` at the problem's starting point, projected on the simple sets."""
    with torch.enable_grad():
        z = start.tensor(start.x0, grad=True)
        f = torch.as_tensor(problem.objective(start.unpack(z)))
        if f.numel() != 1 or f.is_complex():
            raise TypeError("the objective must return a real scalar tensor")
        (g,) = torch.autograd.grad(f.to(dtype).reshape(()), z)
    g_np = _projected(g.cpu().double().numpy(), start.x0, start.lower, start.upper)
    return float(np.abs(g_np).max(initial=0.0))


def _kkt_scale(problem: Problem, pack: _Packing, x: np.ndarray, ref: float,
               dtype: torch.dtype) -> float:
    """The KKT residual's unit at `x`: :func:`_scale` of ``‖∇f(x)‖∞``."""
    with torch.enable_grad():
        z = pack.tensor(x, grad=True)
        f = problem.objective(pack.unpack(z)).to(dtype).reshape(())
        (g,) = torch.autograd.grad(f, z)
    return _scale(ref, float(g.abs().max()))


def _certificate(problem: Problem, pack: _Packing, x: np.ndarray, lam: np.ndarray,
                 mu: np.ndarray, opts: SolverOptions, outer: int, inner: int, rho: float,
                 t0: float, ref: float) -> Certificate:
    """Violations with the exact constraint functions; stationarity (KKT residual,
    complementarity) of the problem as solved, i.e. with the smooth forms, which bound the
    exact ones from above (a nonsmooth function has no gradient to test at its kinks)."""
    dtype = opts.dtype
    z = pack.tensor(x, grad=True)
    with torch.enable_grad():
        v = pack.unpack(z)
        f = problem.objective(v).to(dtype).reshape(())
        c, c_index = _stack(problem.inequalities, problem.scales, v, dtype)
        h, h_index = _stack(problem.equalities, problem.scales, v, dtype)
        lagrangian = f
        if c.numel():
            lagrangian = lagrangian + (torch.as_tensor(lam, dtype=dtype, device=c.device) * c
                                       ).sum()
        if h.numel():
            lagrangian = lagrangian + (torch.as_tensor(mu, dtype=dtype, device=h.device) * h
                                       ).sum()
        (g,) = torch.autograd.grad(lagrangian, z, retain_graph=True)
        (gf,) = torch.autograd.grad(f, z)
    g_np = _projected(g.cpu().double().numpy(), x, pack.lower, pack.upper)
    fval = float(f.detach())
    kkt = float(np.abs(g_np).max(initial=0.0)) / _scale(ref, float(gf.abs().max()))
    c_np = c.detach().cpu().double().numpy()
    if problem.exact:
        exact = problem.exact_problem()
        with torch.no_grad():
            v_exact = pack.unpack(pack.tensor(x))
            ce, _ = _stack(exact.inequalities, exact.scales, v_exact, dtype)
            he, _ = _stack(exact.equalities, exact.scales, v_exact, dtype)
    else:
        ce, he = c.detach(), h.detach()
    v_in, v_eq, comp, multipliers = _measures(
        ce.cpu().double().numpy(), he.cpu().double().numpy(), c_np, lam, mu, c_index, h_index)
    violation = max(v_in, v_eq)
    status, reason = _verdict(violation, kkt, comp, fval, opts,
                              f"penalty {rho:.3g}, outer iteration {outer}")
    return Certificate(
        certified=status == "certified", status=status, reason=reason,
        objective=fval, max_violation=violation, max_inequality_violation=v_in,
        max_equality_violation=v_eq, kkt_residual=kkt, complementarity=comp,
        multipliers=multipliers, outer_iterations=outer, inner_iterations=inner,
        penalty=rho, wall_s=round(time.perf_counter() - t0, 4))


def _measures(c_exact: np.ndarray, h_exact: np.ndarray, c_solved: np.ndarray,
              lam: np.ndarray, mu: np.ndarray, c_index: list[tuple[str, int]],
              h_index: list[tuple[str, int]]
              ) -> tuple[float, float, float, dict[str, float]]:
    """Inequality and equality violations (of the exact constraints), complementarity
    ``max |λ c|`` (of the constraints as solved) and the largest multiplier per constraint."""
    v_in = float(np.maximum(c_exact, 0).max(initial=0.0))
    v_eq = float(np.abs(h_exact).max(initial=0.0))
    comp = float(np.abs(lam * c_solved).max(initial=0.0))
    multipliers: dict[str, float] = {}
    for index, arr in ((c_index, lam), (h_index, mu)):
        start = 0
        for name, n in index:
            multipliers[name] = float(np.abs(arr[start:start + n]).max(initial=0.0))
            start += n
    return v_in, v_eq, comp, multipliers


def _verdict(violation: float, kkt: float, comp: float, fval: float, opts: SolverOptions,
             where: str) -> tuple[str, str]:
    """Status and reason from the certificate's numbers."""
    feasible = violation <= opts.violation_tol
    stationary = kkt <= opts.kkt_tol and comp <= max(opts.kkt_tol * max(1.0, abs(fval)),
                                                     opts.violation_tol)
    if feasible and stationary:
        return "certified", "feasible and stationary within tolerance"
    if not feasible:
        return "infeasible", (f"scaled violation {violation:.3g} > {opts.violation_tol:g} "
                              f"({where})")
    return "not_stationary", (f"feasible, but KKT residual {kkt:.3g} > {opts.kkt_tol:g} or "
                              f"complementarity {comp:.3g} too large ({where})")
