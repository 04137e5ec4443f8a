"""The contracts floor: every interface a plugin implements, below everything that uses it.

:class:`Stage` (with :class:`StageParams`, :class:`Context`, :class:`ProgressRecord`),
:class:`Reader`, :class:`Constraint`, :class:`AmbiguityGroup` (with
:class:`CanonicalForm`), :class:`PhaseRecord` (what every phase stage records
about its runs) and :class:`BeamlinePreset` (a diffractometer's circles, file
keys and units). This package imports only :mod:`sipflow.errors` and
:mod:`sipflow._resources`; hook specifications, the plugin registry and every
implementation import it, never the other way round.
"""

from ._beamline import BeamlinePreset, Circle, Quantity
from ._constraint import Constraint
from ._group import GROUP_METHODS, AmbiguityGroup, CanonicalForm, check_group, element_dict
from ._phase import PHASE_ATTR, PhaseRecord
from ._reader import Reader
from ._registry import default_registry, registry_of, set_default_registry_provider
from ._stage import Context, ProgressFn, ProgressRecord, Stage, StageParams

__all__ = [
           "GROUP_METHODS",
           "PHASE_ATTR",
           "AmbiguityGroup",
           "BeamlinePreset",
           "CanonicalForm",
           "Circle",
           "Constraint",
           "Context",
           "PhaseRecord",
           "ProgressFn",
           "ProgressRecord",
           "Quantity",
           "Reader",
           "Stage",
           "StageParams",
           "check_group",
           "default_registry",
           "element_dict",
           "registry_of",
           "set_default_registry_provider",
]
