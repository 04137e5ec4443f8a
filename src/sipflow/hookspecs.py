"""Hook specifications: the whole plugin API of sipflow.

A plugin is a module (or object) with functions decorated by
:data:`sipflow.hookimpl` whose names are the hooks below. Built-in stages and
readers are registered through these very hooks. Third-party plugins declare an
entry point in the ``sipflow`` group::

    [project.entry-points.sipflow]
    hotpixel = "sipflow_hotpixel"

Hooks are called with keyword arguments; an implementation may accept fewer
arguments than the specification (new arguments are only ever added).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .contracts import AmbiguityGroup, BeamlinePreset, Constraint, Reader, Stage

#: Version of this plugin API. Incremented only when a hook changes incompatibly.
PLUGIN_API_VERSION = 1

hookspec = pluggy.HookspecMarker("sipflow")
hookimpl = pluggy.HookimplMarker("sipflow")


@hookspec
def sipflow_stages() -> Sequence[type[Stage]]:
    """Return the stage classes this plugin provides.

    Each is a subclass of :class:`sipflow.Stage` with a unique ``name``
    (``<kind>.<method>``), a ``version`` and a ``Params`` model.

    Returns
    -------
    sequence of Stage subclasses
        Collected from every plugin. Two stages with the same name are an error
        that names both plugins.

    When it is called
    -----------------
    Once, when the stage registry is first needed (``sipflow stages``,
    pipeline validation, ``run_pipeline``).
    """


@hookspec
def sipflow_readers() -> Sequence[Reader]:
    """Return readers for detector data files.

    A reader is an object with ``name`` (str), ``can_read(path) -> int``
    (a confidence: 0 = not mine, higher wins; it must never raise) and
    ``read(path, **options) -> xarray.Dataset`` following :mod:`sipflow.schema`.

    Returns
    -------
    sequence of reader objects

    When it is called
    -----------------
    Once, when the registry is built; :func:`sipflow.load` then asks every reader
    for each input file, and the highest ``can_read`` wins (ties: first registered).
    """


@hookspec
def sipflow_pipeline_templates() -> Mapping[str, Path]:
    """Return named pipeline templates as ``{name: path to a YAML file}``.

    Names are what users type (``sipflow run bcdi scan.h5``).

    Returns
    -------
    mapping of str to Path
        A name used by two plugins is an error naming both.

    When it is called
    -----------------
    Once, when the registry is built; the files are read when a template is used.
    """


@hookspec
def sipflow_constraints() -> Sequence[type[Constraint]]:
    """Return the constraints this plugin offers to ``refine.constrained``.

    Each is a subclass of :class:`sipflow.contracts.Constraint` with a unique ``name``,
    a ``kind`` (``"inequality"``: values ≤ 0, ``"equality"``: values = 0, or ``"set"``:
    bounds or fixed entries applied exactly to the variable), a ``Params`` model and the
    torch function of the object that gives its values (see that class).

    Returns
    -------
    sequence of Constraint subclasses
        Two constraints with the same name are an error that names both plugins.

    When it is called
    -----------------
    Once, when the registry is built; a pipeline names them under
    ``refine.constrained``'s ``constraints`` (``- use: tv``, ``with: {budget: ...}``).
    """


@hookspec
def sipflow_symmetry_groups() -> Sequence[AmbiguityGroup]:
    """Return ambiguity groups (e.g. a crystal's point group) for sipflow to use by name.

    Each is an object following :class:`sipflow.contracts.AmbiguityGroup`: a ``name``,
    a one-line ``description`` and ``apply(x, element)``, ``canonical(x)`` (returning a
    :class:`sipflow.contracts.CanonicalForm` with a confidence, near-ties reported),
    ``align(reference, x)`` and ``error(estimate, truth)``. The defining property,
    which a plugin should test as sipflow tests its own groups: ``canonical(g · x).x ==
    canonical(x).x`` for every element ``g``.

    Returns
    -------
    sequence of group objects
        Names must be unique; the built-in ``farfield`` and ``sign`` are registered
        through this hook too.

    When it is called
    -----------------
    Once, when the registry is built; ``symmetry.canonicalize`` (``group:``) and
    ``sipflow train`` (``--group``) look groups up by name with
    :func:`sipflow.symmetry.get_group` in the registry of the run.
    """


@hookspec
def sipflow_beamlines() -> Sequence[BeamlinePreset]:
    """Return beamline presets: a diffractometer's circles, pixel directions, file keys.

    Each is a :class:`sipflow.contracts.BeamlinePreset` (validated when built): sample
    and detector circles outermost first, each with its axis and sense in the CXI
    laboratory frame (``z`` along the beam, ``y`` up), the file key of every circle,
    where energy and distance live and in which units, the detector's pixel directions
    and the circles a rocking scan may turn. Test a preset as sipflow tests its own:
    q of three pixels against an independent computation (``sipflow.testing.
    assert_beamline`` does it with xrayutilities when installed).

    Returns
    -------
    sequence of BeamlinePreset
        Names must be unique; the built-in presets come through this hook too.

    When it is called
    -----------------
    Once, when the registry is built; readers (``beamline:`` in a pipeline's
    ``input:``) and ``bragg.orthogonalize`` (``geometry: {beamline: ...}``) look presets
    up by name, and ``sipflow beamlines`` lists them.
    """
