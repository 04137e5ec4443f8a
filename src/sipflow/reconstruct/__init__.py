"""Iterative phase retrieval: plan algebra, projections, shrinkwrap, the batched engine."""

from ._engine import EngineResult, EngineSettings, iterate
from ._plan import ER, HIO, RAAR, Op, Plan, Repeat, Seq, parse, sup
from ._stage import Classic, ClassicParams

__all__ = ["ER", "HIO", "RAAR", "Classic", "ClassicParams", "EngineResult", "EngineSettings",
           "Op", "Plan", "Repeat", "Seq", "iterate", "parse", "sup"]
