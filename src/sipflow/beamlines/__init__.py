"""Beamline presets and the diffractometer's rotation chain.

:class:`~sipflow.contracts.BeamlinePreset` objects come from the ``sipflow_beamlines``
hook (the built-ins ``aps-34idc``, ``id01``, ``p10`` and ``nanomax`` through it too);
:class:`Diffractometer` turns a preset and circle positions into rotation matrices and
the q of detector pixels, the one implementation that readers, ``bragg.orthogonalize``
and the golden tests use.
"""

from __future__ import annotations

from typing import Any

from ..contracts import BeamlinePreset, default_registry
from ._chain import Diffractometer, axis_vector, chain, rotation
from ._presets import BUILTIN, circle_angles, preset_quantities


def get_beamline(name: str, registry: Any = None) -> BeamlinePreset:
    """The preset registered as `name` (in `registry`, else the process-wide one)."""
    return (registry if registry is not None else default_registry()).beamline(name)


__all__ = ["BUILTIN", "Diffractometer", "axis_vector", "chain", "circle_angles",
           "get_beamline", "preset_quantities", "rotation"]
