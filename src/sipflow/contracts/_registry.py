"""Where science code gets a registry when none was passed: the provider of the default one.

Stages receive the registry in their :class:`~sipflow.contracts.Context` and parameter
validators in pydantic's validation context (``info.context["registry"]``); both are set
by :class:`sipflow.Pipeline` and :func:`sipflow.run_pipeline`. A stage called directly
(``Stage()(ds, params)``) or a validator run without a context falls back to
:func:`default_registry`, the process-wide one, which :mod:`sipflow.plugins` provides
when it is imported (so this floor imports nothing above it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_provider: Callable[[], Any] | None = None


def set_default_registry_provider(provider: Callable[[], Any]) -> None:
    """Install the function that returns the process-wide registry (done by sipflow.plugins)."""
    global _provider
    _provider = provider


def default_registry() -> Any:
    """The process-wide :class:`sipflow.plugins.Registry` (built on first use)."""
    if _provider is None:  # sipflow/__init__ imports sipflow.plugins, which installs it
        raise RuntimeError("sipflow.plugins was not imported: no default registry")
    return _provider()


def registry_of(context: Any) -> Any:
    """The registry of a pydantic validation context or a stage Context, else the default.

    Parameters
    ----------
    context : dict, Context or None
        ``info.context`` of a pydantic validator, or a :class:`~sipflow.contracts.Context`.
    """
    if isinstance(context, dict):
        found = context.get("registry")
    else:
        found = getattr(context, "registry", None)
    return found if found is not None else default_registry()
