"""Bragg CDI physics after phasing: displacement and strain along the Bragg vector.

:func:`strain_from_object` takes a complex object on an orthonormal grid (voxel sizes in
nm) and the Bragg vector G [1/nm], and returns the unwrapped phase with its ramp removed,
the displacement ``u = φ/|G|`` (convention ``φ = G · u``) and the strain ``∂u/∂ĝ``; the
stage ``bragg.strain`` wraps it for pipelines.
"""

from ._strain import (
    StrainResult,
    directional_derivative,
    fit_ramp,
    strain_from_object,
    surface_layer,
    unwrap,
)

__all__ = ["StrainResult", "directional_derivative", "fit_ramp", "strain_from_object",
           "surface_layer", "unwrap"]
