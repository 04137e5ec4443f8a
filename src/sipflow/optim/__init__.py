"""Constrained optimisation with a certificate, for torch callables (no CDI inside).

Solve ``min f(x)`` subject to ``c(x) ≤ 0``, ``h(x) = 0`` and simple sets (bounds, fixed
entries) over named tensor variables of any shape, real or complex::

    from sipflow.optim import Problem, Variable, solve

    problem = Problem(
        objective=lambda v: ((v["x"] - 1) ** 2).sum() + ((v["y"] - 2) ** 2).sum(),
        variables=[Variable("x", torch.zeros(())), Variable("y", torch.zeros(()))],
        equalities={"line": lambda v: v["x"] + v["y"] - 1},
    )
    result = solve(problem)
    result.certificate.certified, result.values["x"]   # True, ~0.0

Method: an augmented-Lagrangian outer loop (PHR form, multiplier updates, a penalty that
is raised when the violation does not fall fast enough) around scipy's bound-constrained
L-BFGS-B with torch autograd gradients, in float64 by default. Bounds and fixed entries
are handled exactly by the inner solver, never as constraints. Every run returns a
:class:`Certificate`: objective, scaled violations, KKT residual with the fitted
multipliers (projected on the simple sets), complementarity, and whether those meet the
tolerances. :func:`certify` gives the same certificate to any other answer (multipliers
fitted), so that every method is judged alike.

Nonsmooth problems (kinks from ``|·|`` or ``max``, where no gradient exists and a gradient
test cannot certify) end with gradient sampling on the exact penalty: the certificate then
says that the convex hull of the Lagrangian's gradients sampled within a small radius of the
point contains a vector within tolerance (``Certificate.stationarity == "sampled"``; see
:attr:`SolverOptions.nonsmooth`). That is done automatically for small problems (at most
``sampling_max_unknowns`` real unknowns) that end feasible but not stationary.
"""

from ._certificate import certify
from ._penalty import penalty_adam
from ._problem import Certificate, Problem, Result, SolverOptions, Variable
from ._solver import solve

__all__ = ["Certificate", "Problem", "Result", "SolverOptions", "Variable", "certify",
           "penalty_adam", "solve"]
