"""Iterative phase retrieval: plan algebra, projections, shrinkwrap, the batched engine."""

from .._lazy import lazy_exports
from ._plan import ER, HIO, RAAR, Op, Plan, Repeat, Seq, parse, sup

_EXPORTS = {
    "EngineResult": "._settings", "EngineSettings": "._settings", "iterate": "._engine",
    "Classic": "._stage", "ClassicParams": "._params", "DEFAULT_RECIPE": "._params",
    # support and run tools that other phase stages reuse
    "autocorrelation_support": "._support",
    "morph": "._support", "shaped_support": "._support", "shrinkwrap": "._support",
    "prtf": "._runs",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["ER", "HIO", "RAAR", "Op", "Plan", "Repeat", "Seq", "parse", "sup", *_EXPORTS]
