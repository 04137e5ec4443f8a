"""Ambiguity groups: the transformations a measurement cannot see, and canonical forms.

For far-field data, :class:`FarFieldElement` (global phase × translation × twin)
with :func:`apply`, :meth:`FarFieldElement.inverse`, :func:`align` (bring one
array onto another) and :func:`canonical` (a representative of the orbit, with a
twin confidence). Run averaging, breeding, centring, metrics and training-set
symmetry breaking all use these.
"""

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

__all__ = ["TWIN_CONFIDENCE_THRESHOLD", "Alignment", "Canonical", "FarFieldElement", "align",
           "apply", "canonical", "circular_centroid", "subpixel_shift", "translate", "twin"]
