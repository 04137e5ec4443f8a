"""Bragg CDI physics after phasing: lab-frame geometry, displacement and strain.

:class:`Geometry` turns the diffractometer angles into the q steps of a rocking scan's
array, :func:`transfer_matrix` into the real-space lattice of the reconstructed object,
and :func:`orthogonalize` / :func:`to_detector_frame` map between that oblique lattice
and a regular laboratory grid in nm.

:func:`strain_from_object` takes a complex object on an orthonormal grid (voxel sizes in
nm) and the Bragg vector G [1/nm], and returns the unwrapped phase with its ramp removed,
the displacement ``u = φ/|G|`` (convention ``φ = G · u``) and the strain ``∂u/∂ĝ``; the
stage ``bragg.strain`` wraps it for pipelines.
"""

from ._geometry import Geometry, lab_grid, orthogonalize, to_detector_frame, transfer_matrix
from ._strain import (
    StrainResult,
    directional_derivative,
    fit_ramp,
    strain_from_object,
    surface_layer,
    unwrap,
)

__all__ = ["Geometry", "StrainResult", "directional_derivative", "fit_ramp", "lab_grid",
           "orthogonalize", "strain_from_object", "surface_layer", "to_detector_frame",
           "transfer_matrix", "unwrap"]
