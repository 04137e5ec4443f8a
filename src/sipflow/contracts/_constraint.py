"""The constraint contract of ``refine.constrained``: what a ``sipflow_constraints`` hook returns.

A constraint is a torch function of the object (its values), evaluated by the
refinement stage against a :class:`sipflow.refine.RefineProblem` (the start, the
support, the counts, the fitted pixels and the forward model).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._stage import StageParams


class Constraint:
    """A constraint on the object, usable by name in a pipeline.

    Subclasses set ``name``, ``kind``, ``Params`` and implement :meth:`values` (for
    ``inequality`` / ``equality``) or :meth:`restrict` (for ``set``)::

        class MaxPhase(Constraint):
            '''|phase| ≤ limit inside the support.'''
            name = "max_phase"
            kind = "inequality"
            Params = MaxPhaseParams          # a StageParams with `limit` [rad]

            def values(self, x, params, problem):
                return (torch.angle(x)[problem.support].abs() - params.limit)

    and return ``[MaxPhase]`` from the ``sipflow_constraints`` hook.

    Methods receive ``x`` (complex torch Tensor, real-space shape), the validated
    ``params`` and ``problem`` (a :class:`sipflow.refine.RefineProblem`);
    :meth:`restrict` receives and returns a :class:`sipflow.optim.Variable`.

    Attributes
    ----------
    name : str
    kind : {"inequality", "equality", "set"}
        ``values(x) ≤ 0`` element-wise, ``values(x) = 0``, or an exact restriction of
        the variable (bounds, fixed entries).
    Params : type of StageParams
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "inequality"
    Params: ClassVar[type[StageParams]] = StageParams

    def values(self, x: Any, params: Any, problem: Any) -> Any:
        """Constraint values of object `x` (any shape; each element is one constraint)."""
        raise NotImplementedError(f"constraint {self.name!r} of kind {self.kind!r} must "
                                  "implement values()")

    def smooth_values(self, x: Any, params: Any, problem: Any
                      ) -> Any:
        """A differentiable upper bound of :meth:`values` for the solver (default: the same)."""
        return self.values(x, params, problem)

    def has_smooth_form(self) -> bool:
        return type(self).smooth_values is not Constraint.smooth_values

    def scale(self, params: Any, problem: Any) -> float:
        """Units of the violation: values are divided by this in the certificate."""
        return 1.0

    def restrict(self, variable: Any, params: Any, problem: Any) -> Any:
        """For ``set`` constraints: the variable with its bounds or fixed entries."""
        raise NotImplementedError(f"constraint {self.name!r} of kind 'set' must implement "
                                  "restrict()")

    def check(self, params: Any, problem: Any) -> None:
        """Raise :class:`~sipflow.errors.PipelineError` when `params` cannot apply here."""
