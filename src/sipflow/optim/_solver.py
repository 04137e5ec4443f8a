"""Augmented-Lagrangian solver around L-BFGS-B, with a KKT certificate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
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
    continuation : sequence of callable
        Objectives solved first, in order, each from the previous answer and under the
        same constraints and simple sets, before `objective` (a continuation). For a
        nonconvex objective the path decides which local minimum is reached: a smoother
        form of the same fit (e.g. the amplitude form of a Poisson likelihood) first
        leads to lower minima of the objective itself. Only the final answer, to
        `objective`, is certified, with the KKT unit of `objective` at the user's start.
    """

    objective: Function
    variables: list[Variable]
    inequalities: Mapping[str, Function] = field(default_factory=dict)
    equalities: Mapping[str, Function] = field(default_factory=dict)
    scales: Mapping[str, float] = field(default_factory=dict)
    exact: Mapping[str, Function] = field(default_factory=dict)
    continuation: Sequence[Function] = ()

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
        Lagrangian's gradient projected on the simple sets, over the larger of
        ``‖∇f(x)‖∞`` (the objective's own gradient at the answer, unprojected: a residual
        left by rounding in a large gradient is not non-stationarity) and the projected
        ``‖∇f‖∞`` at the problem's starting point (so the test does not depend on the
        units of f or x: certified means the free gradient fell by 1/kkt_tol or more).
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
    nonsmooth : bool or None
        Whether to finish with gradient sampling on the exact penalty, for objectives or
        constraints with kinks (``|·|``, ``max``), where a gradient test cannot certify:
        ``None`` (default) does so when the augmented Lagrangian ends feasible but not
        stationary and the problem has at most `sampling_max_unknowns` free real
        unknowns; ``True`` whenever it ends uncertified; ``False`` never.
    restoration : bool
        When the start violates the constraints, start from the nearest point that
        meets them (a feasibility restoration, solved the same way) rather than letting
        the first inner solves chase the objective alone.
    sampling_max_unknowns : int
    sampling_radius : float
        Smallest sampling radius, relative to ``max(1, ‖x‖∞)``: a sampled certificate
        says that the Lagrangian's ε-subdifferential with this ε contains a vector of
        relative norm ≤ `kkt_tol`.
    sampling_iterations : int
        Largest number of gradient-sampling steps.
    seed : int
        Seed of the sampling (the result is deterministic).
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
    nonsmooth: bool | None = None
    restoration: bool = True
    sampling_max_unknowns: int = 200
    sampling_radius: float = 1e-7
    sampling_iterations: int = 2000
    seed: int = 0


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
    stationarity : {"gradient", "sampled"}
        How `kkt_residual` was measured: the projected gradient of the Lagrangian at the
        point, or (nonsmooth problems) the smallest projected element of the convex hull
        of the exact-penalty gradients sampled within `sampling_radius` of it — the
        Lagrangian's gradient with multipliers fitted by that convex combination.
    sampling_radius : float
        Radius of the sampled test (0 for ``gradient``), in the variables' units.
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
    stationarity: str = "gradient"
    sampling_radius: float = 0.0

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


def _min_norm(g: np.ndarray, lower_active: np.ndarray, upper_active: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The convex combination of the columns of `g` (n × m) whose projection on the
    tangent cone of the box is smallest: ``min ‖ψ(g w)‖²`` over the simplex, where ψ drops
    the components that an active bound absorbs. Returns (w, ψ(g w))."""
    from scipy.optimize import minimize

    def psi(v: np.ndarray) -> np.ndarray:
        out = v.copy()
        out[lower_active] = np.minimum(v[lower_active], 0.0)  # > 0 pushes out: absorbed
        out[upper_active] = np.maximum(v[upper_active], 0.0)
        return out

    m = g.shape[1]
    if m == 1:
        return np.ones(1), psi(g[:, 0])
    scale = max(float(np.abs(g).max()), 1e-300)
    gs = g / scale

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = psi(gs @ w)
        return float(p @ p), 2.0 * (gs.T @ p)

    best = int(np.argmin([np.linalg.norm(psi(gs[:, k])) for k in range(m)]))
    w0 = np.full(m, 0.5 / (m - 1))
    w0[best] = 0.5
    res = minimize(fun, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                 "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": 500, "ftol": 1e-30})
    w = np.clip(res.x, 0.0, None)
    w /= w.sum()
    return w, psi(g @ w)


def _gradient_sampling(problem: Problem, pack: _Packing, x: np.ndarray, start: Certificate,
                       opts: SolverOptions, outer: int, inner: int, t0: float, ref: float
                       ) -> tuple[np.ndarray, Certificate]:
    """Finish a nonsmooth problem: gradient sampling on the exact penalty
    ``φ(x) = f(x) + ν (Σ max(c, 0) + Σ |h|)`` (scaled, exact constraint functions), with
    the box handled by projection, and a sampled certificate.

    Each step samples the gradient of φ at the point and at ``2n + 1`` points of the ball
    of radius ε around it, takes the smallest element ``v`` of their convex hull
    (projected on the box's tangent cone), and backtracks along ``-v``; ε shrinks by 10
    when ``‖v‖`` is below tolerance or no step decreases φ, down to `sampling_radius`
    (Burke, Lewis & Overton's gradient sampling). The weights of that convex combination
    are the multipliers: ``λ_i = ν Σ_k w_k [c_i(y_k) > 0]``. ν starts at 10 × the largest
    multiplier of the augmented Lagrangian (≥ 1) and grows by 10 while the end point is
    infeasible.
    """
    exact = problem.exact_problem() if problem.exact else problem
    dtype = opts.dtype
    rng = np.random.default_rng(opts.seed)
    free = pack.lower != pack.upper
    n_free = int(free.sum())
    span = max(1.0, float(np.abs(x).max(initial=0.0)))
    radius_min = opts.sampling_radius * span
    x_best, cert_best = x, start

    def evaluate(xv: np.ndarray, nu: float, grad: bool
                 ) -> tuple[float, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]:
        with torch.enable_grad() if grad else torch.no_grad():
            z = pack.tensor(xv, grad=grad)
            v = pack.unpack(z)
            f = exact.objective(v).to(dtype).reshape(())
            c, _ = _stack(exact.inequalities, exact.scales, v, dtype)
            h, _ = _stack(exact.equalities, exact.scales, v, dtype)
            phi = f + nu * (torch.clamp(c, min=0).sum() + h.abs().sum())
            g = gf = None
            if grad:
                (g,) = torch.autograd.grad(phi, z, retain_graph=True)
                (gf,) = torch.autograd.grad(f, z)
                g = g.cpu().double().numpy()
                g[~free] = 0.0
                gf = gf.cpu().double().numpy()
        return (float(phi.detach()), g, c.detach().cpu().double().numpy(),
                h.detach().cpu().double().numpy(), gf)

    def project(xv: np.ndarray) -> np.ndarray:
        out = np.clip(xv, pack.lower, pack.upper)
        out[~free] = pack.lower[~free]
        return out

    nu = 10.0 * max([1.0, *start.multipliers.values()])
    steps = 0
    for _ in range(4):
        eps = max(1e-3 * span, radius_min)
        xk = project(x)
        phi_k, g_k, c_k, h_k, gf = evaluate(xk, nu, True)
        w = np.ones(1)
        v = g_k
        samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        while steps < opts.sampling_iterations:
            steps += 1
            samples = [(g_k, c_k, h_k)]
            for _ in range(2 * n_free + 1):
                u = rng.normal(size=n_free)
                u *= eps * rng.random() ** (1.0 / n_free) / max(np.linalg.norm(u), 1e-300)
                y = xk.copy()
                y[free] += u
                _, gy, cy, hy, _ = evaluate(project(y), nu, True)
                samples.append((gy, cy, hy))
            lower_active = np.isfinite(pack.lower) & (xk - pack.lower <= eps) & free
            upper_active = np.isfinite(pack.upper) & (pack.upper - xk <= eps) & free
            gmat = np.stack([s[0] for s in samples], axis=1)
            w, v = _min_norm(gmat, lower_active, upper_active)
            tol = opts.kkt_tol * _scale(ref, float(np.abs(gf).max(initial=0.0)))
            if float(np.abs(v).max(initial=0.0)) <= tol:
                if eps <= radius_min:
                    break
                eps = max(eps / 10, radius_min)
                continue
            d = -v
            t, moved = 1.0, False
            slope = float(v @ v)
            for _ in range(60):
                y = project(xk + t * d)
                phi_y = evaluate(y, nu, False)[0]
                if phi_y <= phi_k - 1e-8 * t * slope and not np.array_equal(y, xk):
                    xk, phi_k, moved = y, phi_y, True
                    break
                t *= 0.5
            if moved:
                _, g_k, c_k, h_k, gf = evaluate(xk, nu, True)
            elif eps > radius_min:
                eps = max(eps / 10, radius_min)
            else:
                break
        cert = _sampled_certificate(exact, pack, xk, nu, w, v, samples, eps, opts, outer,
                                    inner + steps, t0, ref)
        if cert.certified or (cert.max_violation <= cert_best.max_violation
                              and cert.kkt_residual <= cert_best.kkt_residual) or (
                cert_best.status == "infeasible" and cert.max_violation
                < cert_best.max_violation):
            x_best, cert_best = xk, cert
        if cert.status != "infeasible" or steps >= opts.sampling_iterations:
            break
        nu *= 10.0
        x = xk
    return x_best, cert_best


def _sampled_certificate(problem: Problem, pack: _Packing, x: np.ndarray, nu: float,
                         w: np.ndarray, v: np.ndarray,
                         samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         eps: float, opts: SolverOptions, outer: int, inner: int, t0: float,
                         ref: float) -> Certificate:
    """The certificate of a gradient-sampling end point (see :class:`Certificate`)."""
    dtype = opts.dtype
    with torch.enable_grad():
        z = pack.tensor(x, grad=True)
        f = problem.objective(pack.unpack(z)).to(dtype).reshape(())
        (gf,) = torch.autograd.grad(f, z)
    with torch.no_grad():
        vals = pack.unpack(pack.tensor(x))
        c, c_index = _stack(problem.inequalities, problem.scales, vals, dtype)
        h, h_index = _stack(problem.equalities, problem.scales, vals, dtype)
    c_np, h_np = c.cpu().double().numpy(), h.cpu().double().numpy()
    lam = np.zeros_like(c_np)
    mu = np.zeros_like(h_np)
    if len(samples) == len(w):
        for wk, (_, ck, hk) in zip(w, samples, strict=True):
            lam += nu * wk * (ck > 0)
            mu += nu * wk * np.sign(hk)
    fval = float(f.detach())
    kkt = float(np.abs(v).max(initial=0.0)) / _scale(ref, float(gf.abs().max()))
    v_in, v_eq, comp, multipliers = _measures(c_np, h_np, c_np, lam, mu, c_index, h_index)
    violation = max(v_in, v_eq)
    status, reason = _verdict(violation, kkt, comp, fval, opts,
                              f"gradient sampling, radius {eps:.2g}, penalty {nu:.3g}")
    if status == "certified":
        reason = (f"feasible, and the convex hull of the Lagrangian's gradients sampled "
                  f"within {eps:.2g} contains a vector within tolerance")
    return Certificate(
        certified=status == "certified", status=status, reason=reason, objective=fval,
        max_violation=violation, max_inequality_violation=v_in, max_equality_violation=v_eq,
        kkt_residual=kkt, complementarity=comp, multipliers=multipliers,
        outer_iterations=outer, inner_iterations=inner, penalty=nu,
        wall_s=round(time.perf_counter() - t0, 4), stationarity="sampled",
        sampling_radius=eps)


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
