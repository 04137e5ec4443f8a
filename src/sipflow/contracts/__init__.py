"""The contracts floor: every interface a plugin implements, below everything that uses it.

:class:`Stage` (with :class:`StageParams`, :class:`Context`, :class:`ProgressRecord`),
:class:`Reader`, :class:`Constraint`, :class:`AmbiguityGroup` (with
:class:`CanonicalForm`) and :class:`PhaseRecord` (what every phase stage records
about its runs). This package imports only :mod:`sipflow.errors` and
:mod:`sipflow._resources`; hook specifications, the plugin registry and every
implementation import it, never the other way round.
"""

from ._constraint import Constraint
from ._group import GROUP_METHODS, AmbiguityGroup, CanonicalForm, check_group, element_dict
from ._phase import PHASE_ATTR, PhaseRecord
from ._reader import Reader
from ._registry import default_registry, registry_of, set_default_registry_provider
from ._stage import Context, ProgressFn, ProgressRecord, Stage, StageParams

__all__ = ["GROUP_METHODS", "PHASE_ATTR", "AmbiguityGroup", "CanonicalForm", "Constraint",
           "Context", "PhaseRecord", "ProgressFn", "ProgressRecord", "Reader", "Stage",
           "StageParams", "check_group", "default_registry", "element_dict", "registry_of",
           "set_default_registry_provider"]
