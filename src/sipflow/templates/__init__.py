"""Built-in pipeline templates, addressable by name (``sipflow run default scan.h5``)."""

from __future__ import annotations

from pathlib import Path

from ..hookspecs import hookimpl

HERE = Path(__file__).parent


@hookimpl
def sipflow_pipeline_templates():
    return {p.stem: p for p in sorted(HERE.glob("*.yaml"))}
