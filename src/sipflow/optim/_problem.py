"""The problem, its options, certificate and result; named variables packed in one vector."""

from __future__ import annotations

import math
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
