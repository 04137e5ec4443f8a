"""The physics shared by every stage: the far-field measurement model and the likelihoods.

:class:`FarField` maps an object to what the detector sees (torch, differentiable,
any device; numpy too); :mod:`the likelihoods <sipflow.physics._likelihood>` score
expected against observed counts; :mod:`partial coherence <sipflow.physics._coherence>`
is a kernel on the intensity with its Richardson–Lucy update;
:func:`unmeasured_modes` counts the object modes a mask (a beamstop) leaves undetermined;
:class:`Measurement` is one scan's checked counts, mask, held-out pixels and coherence.
The classical engine's fused loops, the simulator, the metrics and every
optimisation-based stage use these definitions.
"""

from ._coherence import (
    blur,
    gaussian_kernel,
    kernel_coherence,
    kernel_width,
    richardson_lucy_kernel,
)
from ._farfield import (
    centred_farfield,
    centred_inverse_farfield,
    farfield,
    inverse_farfield,
    spatial_dims,
)
from ._likelihood import (
    NLL,
    euclidean_nll,
    free_llk,
    gaussian_nll,
    normalised_llk,
    poisson_nll,
)
from ._measurement import (
    Measurement,
    checked_counts,
    free_pixel_mask,
    measurement_coherence,
    warn_zero_frames,
)
from ._model import FarField, gaussian_coherence, gaussian_transfer
from ._modes import UnmeasuredModes, unmeasured_modes
from ._noise import NoiseModel, noise_model, point_mirror, symmetric_share

__all__ = [
    "NLL",
    "FarField",
    "Measurement",
    "NoiseModel",
    "UnmeasuredModes",
    "blur",
    "centred_farfield",
    "centred_inverse_farfield",
    "checked_counts",
    "euclidean_nll",
    "farfield",
    "free_llk",
    "free_pixel_mask",
    "gaussian_coherence",
    "gaussian_kernel",
    "gaussian_nll",
    "gaussian_transfer",
    "inverse_farfield",
    "kernel_coherence",
    "kernel_width",
    "measurement_coherence",
    "noise_model",
    "normalised_llk",
    "point_mirror",
    "poisson_nll",
    "richardson_lucy_kernel",
    "spatial_dims",
    "symmetric_share",
    "unmeasured_modes",
    "warn_zero_frames",
]
