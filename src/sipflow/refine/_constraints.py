"""Constraints of ``refine.constrained``: the base class and the built-in ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, model_validator

from ..contracts import Constraint, StageParams
from ..hookspecs import hookimpl
from ..optim import Variable
from ..physics import FarField
from ..priors import total_variation


@dataclass(frozen=True)
class RefineProblem:
    """What a constraint may look at.

    Attributes
    ----------
    x0 : complex Tensor, real-space shape
        The starting object (centred, as in the result store).
    support : bool Tensor, real-space shape
        The support of the previous stage.
    counts : real Tensor, detector shape
        Measured counts [photons], centred.
    valid : bool Tensor, detector shape
        Pixels that are fitted (measured and not held out as free).
    model : FarField
        The measurement model (``model.intensity(x)`` are the expected counts).
    """

    x0: torch.Tensor
    support: torch.Tensor
    counts: torch.Tensor
    valid: torch.Tensor
    model: FarField


def _budget(params: Any, start: float) -> float:
    return float(params.budget) if params.budget is not None else float(params.relative) * start


# --- the built-in constraints ----------------------------------------------------------------
class _NoParams(StageParams):
    pass


class Support(Constraint):
    """The object is zero outside the support of the previous stage (exact: fixed entries)."""

    name = "support"
    kind = "set"
    Params = _NoParams

    def restrict(self, variable: Variable, params: Any, problem: RefineProblem) -> Variable:
        init = torch.where(problem.support, variable.init, torch.zeros_like(variable.init))
        fixed = ~problem.support if variable.fixed is None else (variable.fixed
                                                                 | ~problem.support)
        return Variable(variable.name, init, variable.lower, variable.upper, fixed)


class RealPositive(Constraint):
    """Re(x) ≥ 0 (exact: a bound on the real part)."""

    name = "real_positive"
    kind = "set"
    Params = _NoParams

    def restrict(self, variable: Variable, params: Any, problem: RefineProblem) -> Variable:
        init = torch.complex(variable.init.real.clamp_min(0), variable.init.imag)
        return Variable(variable.name, init, 0.0, variable.upper, variable.fixed)


class AmplitudeParams(StageParams):
    max: float | None = Field(None, gt=0, description="Largest |x| inside the support "
                              "[same units as the object]; default: max_relative × max |x0|.")
    max_relative: float = Field(1.5, gt=0, description="Default of `max`, relative to the "
                                "largest amplitude of the starting object.")
    min: float = Field(0.0, ge=0, description="Smallest |x| inside the support (0: none).")

    @model_validator(mode="after")
    def _min_below_max(self) -> AmplitudeParams:
        if self.max is not None and self.min > 0 and self.min >= self.max:
            raise ValueError(f"min {self.min:g} is not below max {self.max:g}; no object "
                             "meets both")
        return self


class Amplitude(Constraint):
    """min ≤ |x| ≤ max inside the support (as |x|² − max² ≤ 0 and min² − |x|² ≤ 0)."""

    name = "amplitude"
    kind = "inequality"
    Params = AmplitudeParams

    def _max(self, params: AmplitudeParams, problem: RefineProblem) -> float:
        if params.max is not None:
            return float(params.max)
        return float(params.max_relative) * float(problem.x0.abs().max())

    def values(self, x, params, problem):
        a2 = (x.real ** 2 + x.imag ** 2)[problem.support]
        parts = [a2 - self._max(params, problem) ** 2]
        if params.min > 0:
            parts.append(params.min ** 2 - a2)
        return torch.cat(parts)

    def scale(self, params, problem):
        return self._max(params, problem) ** 2

    def check(self, params, problem):
        from ..errors import PipelineError

        if params.min > 0 and params.min >= self._max(params, problem):
            raise PipelineError(f"constraint amplitude: min {params.min:g} is not below max "
                                f"{self._max(params, problem):g}; no object meets both")


class BudgetParams(StageParams):
    budget: float | None = Field(None, ge=0, description="Upper bound of the quantity; "
                                 "default: relative × its value for the starting object.")
    relative: float = Field(1.0, ge=0, description="Default budget relative to the start.")


def _touching(support: torch.Tensor) -> torch.Tensor:
    """Pixels whose forward differences involve a support pixel (the support, grown by one
    towards lower indices)."""
    out = support.clone()
    for d in range(support.ndim):
        grown = torch.zeros_like(support)
        grown.narrow(d, 0, support.shape[d] - 1).copy_(support.narrow(d, 1, support.shape[d] - 1))
        out |= grown
    return out


class TVParams(BudgetParams):
    smoothing: float = Field(1e-3, gt=0, le=1, description="ε of the smoothed total variation "
                             "√(|∇x|² + ε²) used by the solver, relative to max |x0| (the "
                             "certificate uses the exact one).")


class TotalVariation(Constraint):
    """Total variation of the object ≤ budget (smoothed with ε in the solve, exact in the
    certificate; the smooth form is an upper bound, so its solutions are feasible)."""

    name = "tv"
    kind = "inequality"
    Params = TVParams

    def _eps(self, params, problem: RefineProblem) -> float:
        return float(params.smoothing) * float(problem.x0.abs().max())

    def _budget(self, params, problem):
        return _budget(params, float(total_variation(problem.x0)))

    def values(self, x, params, problem):
        return (total_variation(x) - self._budget(params, problem)).reshape(1)

    def smooth_values(self, x, params, problem):
        return (total_variation(x, self._eps(params, problem), _touching(problem.support))
                - self._budget(params, problem)).reshape(1)

    def scale(self, params, problem):
        return max(self._budget(params, problem), 1e-30)


class EnergyParams(StageParams):
    target: float | None = Field(None, gt=0, description="Expected counts summed over the "
                                 "fitted pixels [photons]; default: the measured sum.")


class Energy(Constraint):
    """Σ expected counts = Σ measured counts over the fitted pixels (an equality)."""

    name = "energy"
    kind = "equality"
    Params = EnergyParams

    def _target(self, params, problem):
        if params.target is not None:
            return float(params.target)
        return float(problem.counts[problem.valid].sum())

    def values(self, x, params, problem):
        calc = problem.model.intensity(x)
        return (calc[problem.valid].sum() - self._target(params, problem)).reshape(1)

    def scale(self, params, problem):
        return self._target(params, problem)


def phase_roughness(x: torch.Tensor, support: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Σ over neighbouring pairs inside the support of |a||b| − Re(a b̄) = |a||b|(1 − cos Δφ).

    With ``eps > 0``, |a b̄| is replaced by √(|a b̄|² + ε²): a differentiable upper bound.
    """
    total = x.real.new_zeros(())
    for d in range(x.ndim):
        n = x.shape[d] - 1
        prod = x.narrow(d, 0, n) * x.narrow(d, 1, n).conj()
        both = support.narrow(d, 0, n) & support.narrow(d, 1, n)
        size = torch.sqrt(prod.real ** 2 + prod.imag ** 2 + eps ** 2) if eps else prod.abs()
        total = total + (size - prod.real)[both].sum()
    return total


class PhaseSmoothness(Constraint):
    """Amplitude-weighted phase roughness inside the support ≤ budget."""

    name = "phase_smoothness"
    kind = "inequality"
    Params = BudgetParams

    def _budget(self, params, problem):
        return _budget(params, float(phase_roughness(problem.x0, problem.support)))

    def values(self, x, params, problem):
        return (phase_roughness(x, problem.support) - self._budget(params, problem)).reshape(1)

    def smooth_values(self, x, params, problem):
        eps = 1e-6 * float(problem.x0.abs().max()) ** 2  # |a b̄| is not differentiable at 0
        return (phase_roughness(x, problem.support, eps)
                - self._budget(params, problem)).reshape(1)

    def scale(self, params, problem):
        return max(self._budget(params, problem), 1e-30)


BUILTIN = (Support, RealPositive, Amplitude, TotalVariation, Energy, PhaseSmoothness)


@hookimpl
def sipflow_constraints():
    return list(BUILTIN)
