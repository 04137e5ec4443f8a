"""The ambiguity-group contract: what a ``sipflow_symmetry_groups`` hook returns.

An ambiguity group is what a measurement cannot see. Every group offers the same
four things: ``apply(x, element)``, ``canonical(x)`` (a :class:`CanonicalForm`),
``align(reference, x)`` and ``error(estimate, truth)``, plus ``random_element`` for
training sets. The built-in groups (``farfield``, ``sign``) live in
:mod:`sipflow.symmetry` and are registered through the same hook.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import PluginError

#: the methods a group must have (checked when a plugin registers one)
GROUP_METHODS = ("apply", "canonical", "align", "error", "random_element")


@dataclass(frozen=True)
class CanonicalForm:
    """A canonical representative, whichever the group.

    Attributes
    ----------
    x : array
        ``element · input``, the representative (same type and shape as the input).
    element : object
        The group element applied (a frozen dataclass of the group).
    confidence : float
        How far the deciding test is from a tie (group-specific units, documented by
        the group); below ``threshold`` the choice is a guess.
    threshold : float
    """

    x: Any
    element: Any
    confidence: float
    threshold: float

    @property
    def ambiguous(self) -> bool:
        """True when the choice of representative is a near-tie (reported, never hidden)."""
        return self.confidence < self.threshold

    def element_dict(self) -> dict[str, Any]:
        """The element as plain values (for attrs and JSON)."""
        return element_dict(self.element)


def element_dict(element: Any) -> dict[str, Any]:
    """A group element (frozen dataclass) as a JSON-ready dict."""
    if is_dataclass(element) and not isinstance(element, type):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(element).items()}
    return {"value": repr(element)}


@runtime_checkable
class AmbiguityGroup(Protocol):
    """What a symmetry group offers to sipflow (implement it to register your own).

    Attributes
    ----------
    name : str
        What users type (``group: farfield``).
    description : str
        One line for listings.
    """

    name: str
    description: str

    def apply(self, x: Any, element: Any) -> Any:
        """``element · x``."""

    def canonical(self, x: Any) -> CanonicalForm:
        """A representative of the orbit of `x`; ``canonical(g · x).x == canonical(x).x``."""

    def align(self, reference: Any, x: Any) -> tuple[Any, Any]:
        """``(g · x, g)`` with the element ``g`` minimising ``||reference - g · x||``."""

    def error(self, estimate: Any, truth: Any) -> float:
        """``min_g ||truth - g · estimate|| / ||truth||``."""

    def random_element(self, rng: Any, x: Any) -> Any:
        """An element drawn at random, suited to `x` (training sets sample the orbit with it)."""


def check_group(group: Any, owner: str) -> AmbiguityGroup:
    """Validate what a plugin returned from ``sipflow_symmetry_groups``.

    Parameters
    ----------
    group : object
        What the hook returned.
    owner : str
        The plugin's name, for the message.

    Raises
    ------
    PluginError
        When `group` lacks a ``str`` name, a description or one of the methods.
    """
    missing = [m for m in ("name", "description", *GROUP_METHODS) if not hasattr(group, m)]
    if missing or not isinstance(getattr(group, "name", None), str):
        raise PluginError(f"plugin {owner!r} returned {group!r} from sipflow_symmetry_groups; "
                          f"it lacks {', '.join(missing) or 'a str name'} (see "
                          "sipflow.contracts.AmbiguityGroup)")
    return group
