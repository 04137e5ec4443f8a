"""sipflow: HDF5 detector data -> pluggy stages -> Zarr results -> napari.

The data path, as the package layout shows it::

    io (read HDF5) -> preprocess -> reconstruct -> analyse -> io (write Zarr)
                      \\______ stages, found through plugins ______/

Public API: :func:`load`, :func:`run_pipeline`, :func:`save`, :func:`open_result`,
:class:`Stage`, :class:`StageParams`, :class:`Context`, :data:`hookimpl`.
Heavy dependencies (torch, Prefect, napari) are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import plugins as _plugins  # noqa: F401  (installs the default registry provider)
from ._version import __version__
from .contracts import Context, ProgressRecord, Stage, StageParams
from .errors import (
    DataError,
    InputError,
    OutputError,
    PipelineError,
    PluginError,
    ReconstructionError,
    SipflowError,
)
from .hookspecs import PLUGIN_API_VERSION, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from ._api import run_pipeline
    from .io import load, open_result, save
    from .pipeline import Pipeline

_LAZY = {
    "run_pipeline": ("._api", "run_pipeline"),
    "load": (".io", "load"),
    "save": (".io", "save"),
    "open_result": (".io", "open_result"),
    "Pipeline": (".pipeline", "Pipeline"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'sipflow' has no attribute {name!r}")


__all__ = [
    "PLUGIN_API_VERSION",
    "Context",
    "DataError",
    "InputError",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "PluginError",
    "ProgressRecord",
    "ReconstructionError",
    "SipflowError",
    "Stage",
    "StageParams",
    "__version__",
    "hookimpl",
    "load",
    "open_result",
    "run_pipeline",
    "save",
]
