"""Constrained refinement (``refine.constrained``): the stage and its constraints.

The solver is :mod:`sipflow.optim` (no CDI inside); the forward model and likelihoods
are :mod:`sipflow.physics`. Plugins add constraints by returning :class:`Constraint`
subclasses from the ``sipflow_constraints`` hook.
"""

from ..contracts import Constraint
from ._constraints import RefineProblem, phase_roughness, total_variation

__all__ = ["Constraint", "RefineProblem", "phase_roughness", "total_variation"]
