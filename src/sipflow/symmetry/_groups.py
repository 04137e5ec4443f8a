"""Ambiguity groups as objects: the far-field group, the sign group, and a registry for plugins.

An ambiguity group is what a measurement cannot see. Every group offers the same
four things (:class:`AmbiguityGroup`): ``apply(x, element)``, ``canonical(x)`` (a
representative of the orbit, the element that reached it and a confidence),
``align(reference, x)`` (the element bringing `x` closest to `reference`) and
``error(estimate, truth)`` (the relative error modulo the group). Stages, training
and metrics ask :func:`get_group` by name, so a plugin that registers another group
(e.g. a crystal's point group) through the ``sipflow_symmetry_groups`` hook is used
by ``symmetry.canonicalize`` and ``sipflow train`` unchanged.

Canonical representatives are chosen by sign tests of continuous, orbit-covariant
functions (a half-space for the sign group; centroid, third moment and a weighted
sum for the far-field group), so the set of representatives is connected: nearby
data keep nearby targets, which is what makes learning possible (the half-space
argument of Tayal, Lai, Kumar & Sun 2020). Where the test is close to zero the
choice is a guess, and :attr:`CanonicalForm.ambiguous` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..contracts import AmbiguityGroup, CanonicalForm, default_registry
from ..errors import PipelineError, unknown_choice
from . import _farfield as ff

#: below this confidence a canonical choice is reported as a near-tie
SIGN_CONFIDENCE_THRESHOLD = 0.05


class FarFieldGroup:
    """Global phase × translation × twin, the ambiguities of ``|F x|^2`` (see :mod:`._farfield`).

    Confidence of :meth:`canonical`: the amplitude's third-moment score that picked
    the twin (:data:`~sipflow.symmetry.TWIN_CONFIDENCE_THRESHOLD`).
    """

    name = "farfield"
    description = "far-field phase retrieval: global phase x translation x twin"

    def apply(self, x: Any, element: ff.FarFieldElement) -> Any:
        return ff.apply(x, element)

    def canonical(self, x: Any) -> CanonicalForm:
        c = ff.canonical(x)
        return CanonicalForm(c.x, c.element, c.twin_confidence, ff.TWIN_CONFIDENCE_THRESHOLD)

    def align(self, reference: Any, x: Any) -> tuple[Any, ff.FarFieldElement]:
        a = ff.align(reference, x)
        return a.aligned, a.element

    def error(self, estimate: Any, truth: Any) -> float:
        return float(ff.align(truth, estimate).error)

    def random_element(self, rng: np.random.Generator, x: Any) -> ff.FarFieldElement:
        """Uniform phase, a coin for the twin, an integer shift that keeps the object inside.

        The shift per axis is drawn in ``[-m, m]`` with ``m`` the margin between the
        support of ``|x|`` (above 1 % of its maximum) and the array's edge.
        """
        amp = np.abs(np.asarray(x))
        inside = amp > 0.01 * amp.max() if amp.max() > 0 else np.ones(amp.shape, bool)
        shift = []
        for axis, n in enumerate(amp.shape):
            idx = np.nonzero(inside.any(axis=tuple(a for a in range(amp.ndim) if a != axis)))[0]
            margin = max(0, min(int(idx.min()), n - 1 - int(idx.max())) - 1)
            shift.append(float(rng.integers(-margin, margin + 1)))
        return ff.FarFieldElement(float(rng.uniform(-np.pi, np.pi)), tuple(shift),
                                  bool(rng.integers(2)))


@dataclass(frozen=True)
class SignElement:
    """``±1``, the element of the sign group."""

    sign: int = 1

    def inverse(self) -> SignElement:
        return self


class SignGroup:
    """The global sign ``x -> -x`` of real phase retrieval ``y = |A x|^2``.

    Representatives: the half-space ``x · v > 0`` (convex, hence connected), ``v``
    the first unit vector unless given; on its boundary the first non-zero entry
    of ``x`` is made positive, so the map is a true canonical form. Works on the
    last axis, batched over the leading ones. Confidence: ``|x · v| / ||x||`` (0 on
    the boundary, where both signs are representatives).

    Parameters
    ----------
    direction : array_like, optional
        ``v`` (normalised here); default ``e_1``.
    """

    name = "sign"
    description = "real phase retrieval: global sign, representatives x . v >= 0"

    def __init__(self, direction: Any | None = None) -> None:
        self.direction = None if direction is None else np.asarray(direction, np.float64)

    def _v(self, n: int, like: torch.Tensor) -> torch.Tensor:
        if self.direction is None:
            v = torch.zeros(n, dtype=like.dtype, device=like.device)
            v[0] = 1
            return v
        if self.direction.shape != (n,):
            raise ValueError(f"sign group direction has shape {self.direction.shape}, "
                             f"expected ({n},)")
        v = torch.as_tensor(self.direction, dtype=like.dtype, device=like.device)
        return v / torch.linalg.vector_norm(v)

    def apply(self, x: Any, element: SignElement) -> Any:
        return x * element.sign if isinstance(element, SignElement) else x * int(element)

    def signs(self, x: Any) -> tuple[Any, Any]:
        """Batched canonical signs and confidences of the rows of `x`, ``(...,)`` each."""
        t, numpy_in = ff._as_torch(x)
        t = t if t.is_floating_point() else t.to(torch.float64)
        proj = t @ self._v(t.shape[-1], t)
        # on the boundary x . v = 0 both signs qualify: the first non-zero entry decides
        first = torch.gather(t, -1, (t != 0).to(torch.int8).argmax(dim=-1, keepdim=True))[..., 0]
        sign = torch.where(proj != 0, torch.sign(proj), torch.sign(first))
        sign = torch.where(sign == 0, 1, sign).to(t.dtype)
        conf = proj.abs() / torch.linalg.vector_norm(t, dim=-1).clamp_min(1e-300)
        if numpy_in:
            return sign.numpy(), conf.numpy()
        return sign, conf

    def canonical(self, x: Any) -> CanonicalForm:
        """Canonical form of one vector (or a batch: then ``element`` is the array of signs
        and ``confidence`` the smallest one)."""
        sign, conf = self.signs(x)
        out = x * (sign[..., None] if np.ndim(sign) else sign)
        if np.ndim(sign) == 0:
            return CanonicalForm(out, SignElement(int(sign)), float(conf),
                                 SIGN_CONFIDENCE_THRESHOLD)
        return CanonicalForm(out, sign, float(conf.min()), SIGN_CONFIDENCE_THRESHOLD)

    def align(self, reference: Any, x: Any) -> tuple[Any, SignElement]:
        ref, _ = ff._as_torch(reference)
        t, _ = ff._as_torch(x)
        s = 1 if float((ref * t).sum()) >= 0 else -1
        return x * s, SignElement(s)

    def error(self, estimate: Any, truth: Any) -> float:
        e, _ = ff._as_torch(estimate)
        t, _ = ff._as_torch(truth)
        norm = float(torch.linalg.vector_norm(t)) or 1.0
        return min(float(torch.linalg.vector_norm(t - e)), float(torch.linalg.vector_norm(t + e))
                   ) / norm

    def random_element(self, rng: np.random.Generator, x: Any) -> SignElement:
        return SignElement(int(rng.choice([-1, 1])))


#: the built-in groups, registered through the ``sipflow_symmetry_groups`` hook like a plugin's
BUILTIN_GROUPS: tuple[AmbiguityGroup, ...] = (FarFieldGroup(), SignGroup())


def available_groups(registry: Any = None) -> dict[str, AmbiguityGroup]:
    """Every group by name: the built-in ones and those of installed plugins.

    Parameters
    ----------
    registry : sipflow.plugins.Registry, optional
        Whose groups (default: :func:`sipflow.contracts.default_registry`).
    """
    return dict((registry or default_registry()).groups)


def get_group(name: str, registry: Any = None) -> AmbiguityGroup:
    """The group registered as `name`; a clear error listing the others otherwise.

    Parameters
    ----------
    name : str
        What users type (``farfield``, ``sign``, a plugin's group).
    registry : sipflow.plugins.Registry, optional
        Where to look it up (default: :func:`sipflow.contracts.default_registry`).
    """
    groups = available_groups(registry)
    if name not in groups:
        raise PipelineError(unknown_choice("symmetry group", name, groups))
    return groups[name]
