"""Augmented-Lagrangian solver around L-BFGS-B, with a KKT certificate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Values = dict[str, torch.Tensor]
Function = Callable[[Values], torch.Tensor]


@dataclass
class Variable:
    """One named optimisation variable and its simple set.

    Parameters
    ----------
    name : str
    init : Tensor
        Starting value, any shape, real or complex; its device is used.
    lower, upper : float or Tensor, optional
        Element-wise bounds (broadcast to `init`). For a complex variable they bound the
        real part (e.g. ``lower=0`` is "non-negative real part"); the imaginary part is free.
    fixed : bool Tensor, optional
        Entries held at their starting value (e.g. outside a support); exactly, by the
        inner solver's bounds.
    """

    name: str
    init: torch.Tensor
    lower: float | torch.Tensor | None = None
    upper: float | torch.Tensor | None = None
    fixed: torch.Tensor | None = None


@dataclass
class Problem:
    """``min objective(v)`` s.t. ``inequalities[k](v) ≤ 0``, ``equalities[k](v) = 0``.

    Parameters
    ----------
    objective : callable
        ``v -> scalar tensor``, where ``v`` maps variable names to tensors.
    variables : list of Variable
    inequalities, equalities : dict of str to callable
        Each returns a tensor of any shape; every element is one constraint.
    scales : dict of str to float
        Divides a constraint's values (default 1): the violation in the certificate, and
        the tolerance it is held to, are in these units.
    exact : dict of str to callable
        For constraints whose function in `inequalities` / `equalities` is a smoothed
        form (e.g. a total variation with ε): the exact function. The certificate's
        violations use it; its stationarity is that of the smoothed problem (a nonsmooth
        function has no gradient at its kinks). Make the smooth form an upper bound of
        the exact one, so that a point feasible for it is feasible.
    """

    objective: Function
    variables: list[Variable]
    inequalities: Mapping[str, Function] = field(default_factory=dict)
    equalities: Mapping[str, Function] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)
    exact: Mapping[str, Function] = field(default_factory=dict)

    def exact_problem(self) -> Problem:
        """The same problem with the exact constraint functions."""
        from dataclasses import replace

        return replace(self, inequalities={k: self.exact.get(k, f)
                                           for k, f in self.inequalities.items()},
                       equalities={k: self.exact.get(k, f) for k, f in self.equalities.items()},
                       exact={})


@dataclass(frozen=True)
class SolverOptions:
    """Tolerances and limits of :func:`solve`.

    Attributes
    ----------
    violation_tol : float
        Largest scaled constraint violation of a certified solution.
    kkt_tol : float
        Largest relative KKT residual of a certified solution: the ∞-norm of the
        Lagrangian's gradient projected on the simple sets, over ``max(1, ‖∇f(x)‖∞)``
        (the objective's own gradient, unprojected), so that a residual left by
        rounding in a large objective is not mistaken for non-stationarity.
    max_outer : int
        Augmented-Lagrangian iterations.
    max_inner : int
        L-BFGS-B iterations per outer iteration.
    penalty, penalty_growth, penalty_max : float
        Initial penalty ρ, its growth factor when the violation did not fall below
        `decrease` times the previous one, and its cap.
    decrease : float
    memory : int
        L-BFGS history length.
    dtype : torch.dtype
        Precision of the evaluations (float64 for certification; float32 allowed).
    """

    violation_tol: float = 1e-6
    kkt_tol: float = 1e-5
    max_outer: int = 50
    max_inner: int = 2000
    penalty: float = 10.0
    penalty_growth: float = 10.0
    penalty_max: float = 1e12
    decrease: float = 0.25
    memory: int = 20
    dtype: torch.dtype = torch.float64


@dataclass(frozen=True)
class Certificate:
    """What a solution is worth, in numbers.

    Attributes
    ----------
    certified : bool
        ``max_violation ≤ violation_tol`` and ``kkt_residual ≤ kkt_tol``.
    status : str
        ``certified``, ``infeasible`` (the violation stayed above tolerance with the
        penalty at its cap or the iterations spent) or ``not_stationary``.
    reason : str
        One sentence saying why.
    objective : float
    max_violation : float
        Largest scaled violation, inequalities and equalities together.
    max_inequality_violation, max_equality_violation : float
    kkt_residual : float
        Relative projected gradient of the Lagrangian with the fitted multipliers (see
        :attr:`SolverOptions.kkt_tol`).
    complementarity : float
        ``max |λ_i c_i|`` over the scaled inequalities.
    multipliers : dict of str to float
        Largest multiplier magnitude per constraint.
    outer_iterations, inner_iterations : int
    penalty : float
    wall_s : float
    """

    certified: bool
    status: str
    reason: str
    objective: float
    max_violation: float
    max_inequality_violation: float
    max_equality_violation: float
    kkt_residual: float
    complementarity: float
    multipliers: dict[str, float]
    outer_iterations: int
    inner_iterations: int
    penalty: float
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (for result attrs)."""
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class Result:
    """The solution and its certificate."""

    values: Values
    certificate: Certificate


class _Packing:
    """Named real/complex tensors <-> one real float64 vector, with the simple sets."""

    def __init__(self, variables: list[Variable], dtype: torch.dtype) -> None:
        self.variables = variables
        self.dtype = dtype
        self.device = variables[0].init.device
        self.sizes, self.shapes, self.complex = [], [], []
        x0, lo, hi = [], [], []
        for v in variables:
            t = v.init.detach()
            is_complex = t.is_complex()
            real = torch.view_as_real(t.to(_complex_of(dtype))) if is_complex else t.to(dtype)
            self.complex.append(is_complex)
            self.shapes.append(tuple(t.shape))
            self.sizes.append(real.numel())
            x0.append(real.reshape(-1).cpu().double().numpy())
            low = np.full(real.shape, -np.inf)
            high = np.full(real.shape, np.inf)
            for bound, arr in ((v.lower, low), (v.upper, high)):
                if bound is None:
                    continue
                b = torch.as_tensor(bound, dtype=torch.float64).cpu()
                b = torch.broadcast_to(b, t.shape).numpy()
                if is_complex:
                    arr[..., 0] = b
                else:
                    arr[...] = b
            if v.fixed is not None:
                fixed = torch.broadcast_to(torch.as_tensor(v.fixed, dtype=torch.bool).cpu(),
                                           t.shape).numpy()
                if is_complex:
                    fixed = np.stack([fixed, fixed], axis=-1)
                start = real.cpu().double().numpy()
                low = np.where(fixed, start, low)
                high = np.where(fixed, start, high)
            lo.append(low.reshape(-1))
            hi.append(high.reshape(-1))
        self.x0 = np.concatenate(x0)
        self.lower = np.concatenate(lo)
        self.upper = np.concatenate(hi)
        if np.any(self.lower > self.upper):
            raise ValueError("a variable's lower bound exceeds its upper bound")
        self.x0 = np.clip(self.x0, self.lower, self.upper)

    def unpack(self, z: torch.Tensor) -> Values:
        out: Values = {}
        start = 0
        for v, n, shape, is_complex in zip(self.variables, self.sizes, self.shapes,
                                           self.complex, strict=True):
            piece = z[start:start + n]
            start += n
            if is_complex:
                out[v.name] = torch.view_as_complex(piece.reshape(*shape, 2))
            else:
                out[v.name] = piece.reshape(shape)
        return out

    def tensor(self, x: np.ndarray, grad: bool = False) -> torch.Tensor:
        return torch.tensor(x, dtype=self.dtype, device=self.device, requires_grad=grad)

    def bounds(self) -> list[tuple[float | None, float | None]]:
        return [(None if math.isinf(lo) else float(lo), None if math.isinf(hi) else float(hi))
                for lo, hi in zip(self.lower, self.upper, strict=True)]


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _stack(funcs: Mapping[str, Function], scales: Mapping[str, float], values: Values,
           dtype: torch.dtype) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Every constraint value, scaled and flattened, with (name, count) per block."""
    parts, index = [], []
    for name, fn in funcs.items():
        c = torch.as_tensor(fn(values))
        if c.is_complex():
            raise TypeError(f"constraint {name!r} returned complex values; return real ones "
                            "(e.g. split real and imaginary parts)")
        c = c.to(dtype).reshape(-1) / float(scales.get(name, 1.0))
        parts.append(c)
        index.append((name, c.numel()))
    if not parts:
        return torch.zeros(0, dtype=dtype), index
    return torch.cat([p.to(parts[0].device) for p in parts]), index


def _projected(g: np.ndarray, x: np.ndarray, lower: np.ndarray, upper: np.ndarray
               ) -> np.ndarray:
    """The gradient with the components that push out of the simple sets removed."""
    span = np.maximum(1.0, np.abs(x))
    at_lo = np.isfinite(lower) & (x - lower <= 1e-10 * span)
    at_hi = np.isfinite(upper) & (upper - x <= 1e-10 * span)
    fixed = lower == upper
    out = g.copy()
    out[(at_lo & (g > 0)) | (at_hi & (g < 0)) | fixed] = 0.0
    return out


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
    pack = _Packing(problem.variables, opts.dtype)
    x = pack.x0.copy()
    dtype = opts.dtype

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
    inner_total = 0
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
                                "gtol": 0.1 * opts.kkt_tol * _kkt_scale(problem, pack, x, dtype),
                                "maxfun": 4 * opts.max_inner})
        x = np.clip(res.x, pack.lower, pack.upper)
        x[fixed_all] = pack.lower[fixed_all]
        inner_total += int(res.nit)
        with torch.no_grad():
            _, c, h = parts(pack.tensor(x))
        c_np, h_np = c.cpu().double().numpy(), h.cpu().double().numpy()
        lam = np.maximum(0.0, lam + rho * c_np)
        mu = mu + rho * h_np
        cert = _certificate(problem, pack, x, lam, mu, opts, outer, inner_total, rho, t0)
        if callback is not None:
            callback(outer, cert)
        if cert.certified:
            break
        violation = cert.max_violation
        if violation > opts.violation_tol and violation > opts.decrease * prev_violation:
            if rho >= opts.penalty_max:
                break
            rho = min(opts.penalty_max, rho * opts.penalty_growth)
        prev_violation = violation
    assert cert is not None
    values = pack.unpack(pack.tensor(x))
    values = {v.name: values[v.name].detach().to(v.init.dtype if v.init.is_floating_point()
                                                  or v.init.is_complex() else dtype)
              for v in problem.variables}
    return Result(values, cert)


def _kkt_scale(problem: Problem, pack: _Packing, x: np.ndarray, dtype: torch.dtype) -> float:
    """``max(1, ‖∇f(x)‖∞)``: what the KKT residual is relative to."""
    with torch.enable_grad():
        z = pack.tensor(x, grad=True)
        f = problem.objective(pack.unpack(z)).to(dtype).reshape(())
        (g,) = torch.autograd.grad(f, z)
    return max(1.0, float(g.abs().max()))


def _certificate(problem: Problem, pack: _Packing, x: np.ndarray, lam: np.ndarray,
                 mu: np.ndarray, opts: SolverOptions, outer: int, inner: int, rho: float,
                 t0: float) -> Certificate:
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
    kkt = float(np.abs(g_np).max(initial=0.0)) / max(1.0, float(gf.abs().max()))
    c_np = c.detach().cpu().double().numpy()
    if problem.exact:
        exact = problem.exact_problem()
        with torch.no_grad():
            v_exact = pack.unpack(pack.tensor(x))
            ce, _ = _stack(exact.inequalities, exact.scales, v_exact, dtype)
            he, _ = _stack(exact.equalities, exact.scales, v_exact, dtype)
    else:
        ce, he = c.detach(), h.detach()
    ce_np = ce.cpu().double().numpy()
    he_np = he.cpu().double().numpy()
    v_in = float(np.maximum(ce_np, 0).max(initial=0.0))
    v_eq = float(np.abs(he_np).max(initial=0.0))
    violation = max(v_in, v_eq)
    comp = float(np.abs(lam * c_np).max(initial=0.0))
    multipliers: dict[str, float] = {}
    for index, arr in ((c_index, lam), (h_index, mu)):
        start = 0
        for name, n in index:
            multipliers[name] = float(np.abs(arr[start:start + n]).max(initial=0.0))
            start += n
    feasible = violation <= opts.violation_tol
    stationary = kkt <= opts.kkt_tol and comp <= max(opts.kkt_tol * max(1.0, abs(fval)),
                                                     opts.violation_tol)
    if feasible and stationary:
        status, reason = "certified", "feasible and stationary within tolerance"
    elif not feasible:
        status = "infeasible"
        reason = (f"scaled violation {violation:.3g} > {opts.violation_tol:g} "
                  f"(penalty {rho:.3g}, outer iteration {outer})")
    else:
        status = "not_stationary"
        reason = (f"feasible, but KKT residual {kkt:.3g} > {opts.kkt_tol:g} or "
                  f"complementarity {comp:.3g} too large")
    return Certificate(
        certified=feasible and stationary, status=status, reason=reason,
        objective=fval, max_violation=violation, max_inequality_violation=v_in,
        max_equality_violation=v_eq, kkt_residual=kkt, complementarity=comp,
        multipliers=multipliers, outer_iterations=outer, inner_iterations=inner,
        penalty=rho, wall_s=round(time.perf_counter() - t0, 4))


def penalty_adam(problem: Problem, *, weight: float = 100.0, steps: int = 2000,
                 lr: float = 1e-2, options: SolverOptions | None = None) -> Result:
    """The common practice, for comparison: ``f + weight·Σ(max(0, c)² + h²)`` with Adam.

    Bounds and fixed entries are enforced by projection after every step. The result
    carries the same :class:`Certificate` as :func:`solve`, with the multipliers that the
    penalty implies (``2·weight·max(0, c)``, ``2·weight·h``); its tolerances are those
    of `options`.
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
    lam = 2 * weight * np.maximum(c.cpu().double().numpy(), 0)
    mu = 2 * weight * h.cpu().double().numpy()
    cert = _certificate(problem, pack, x, lam, mu, opts, 0, steps, weight, t0)
    values = pack.unpack(pack.tensor(x))
    return Result({v.name: values[v.name].detach().to(v.init.dtype) for v in problem.variables},
                  cert)
