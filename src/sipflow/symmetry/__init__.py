"""Ambiguity groups: the transformations a measurement cannot see, and canonical forms.

By name: :func:`get_group` (``"farfield"``, ``"sign"`` and the groups of plugins, all
registered through the ``sipflow_symmetry_groups`` hook) returns an
:class:`AmbiguityGroup` with ``apply``, ``canonical`` (a :class:`CanonicalForm` with
its confidence; near-ties are reported), ``align`` and ``error``.

For far-field data in detail, :class:`FarFieldElement` (global phase × translation × twin)
with :func:`apply`, :meth:`FarFieldElement.inverse`, :func:`align` (bring one
array onto another) and :func:`canonical` (a representative of the orbit, with a
twin confidence). Run averaging, breeding, centring, metrics and training-set
symmetry breaking all use these.
"""

from ..contracts import AmbiguityGroup, CanonicalForm, check_group, element_dict
from ._farfield import (
    TWIN_CONFIDENCE_THRESHOLD,
    Alignment,
    Canonical,
    FarFieldElement,
    align,
    apply,
    canonical,
    circular_centroid,
    subpixel_shift,
    translate,
    twin,
)
from ._groups import (
    BUILTIN_GROUPS,
    SIGN_CONFIDENCE_THRESHOLD,
    FarFieldGroup,
    SignElement,
    SignGroup,
    available_groups,
    get_group,
)

__all__ = ["BUILTIN_GROUPS", "SIGN_CONFIDENCE_THRESHOLD", "TWIN_CONFIDENCE_THRESHOLD", "Alignment",
           "AmbiguityGroup", "Canonical", "CanonicalForm", "FarFieldElement", "FarFieldGroup",
           "SignElement", "SignGroup", "align", "apply", "available_groups", "canonical",
           "check_group", "circular_centroid", "element_dict", "get_group", "subpixel_shift",
           "translate", "twin"]
