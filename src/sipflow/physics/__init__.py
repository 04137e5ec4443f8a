"""Forward models: far-field propagation and intensity measurement."""

from ._farfield import (
    centred_farfield,
    centred_inverse_farfield,
    farfield,
    inverse_farfield,
    spatial_dims,
)

__all__ = ["centred_farfield", "centred_inverse_farfield", "farfield", "inverse_farfield",
           "spatial_dims"]
