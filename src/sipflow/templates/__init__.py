"""Built-in pipeline templates, addressable by name (``sipflow run default scan.h5``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hookspecs import hookimpl

HERE = Path(__file__).parent


@hookimpl
def sipflow_pipeline_templates():
    return {p.stem: p for p in sorted(HERE.glob("*.yaml"))}


def stage_params(template: str, stage: str) -> dict[str, Any]:
    """The parameters (``with``) of a stage in a built-in template.

    Lets a stage that runs another one inside it use the recipe users get from the
    template (``phase.double_dip``'s classical start is the ``default`` template's
    ``phase.classic``), written once, in the template.

    Parameters
    ----------
    template : str
        Name of a built-in template (a YAML file in this package), e.g. ``"default"``.
    stage : str
        Registered stage name, e.g. ``"phase.classic"``; its first use counts.

    Returns
    -------
    dict
        A new dict of the stage's parameters (empty when the template gives none).

    Raises
    ------
    KeyError
        When the template has no such stage.
    """
    import yaml

    spec = yaml.safe_load((HERE / f"{template}.yaml").read_text())
    for entry in spec["stages"]:
        if entry.get("use") == stage:
            return dict(entry.get("with") or {})
    raise KeyError(f"the built-in template {template!r} has no stage {stage!r}")
