"""Deep priors: generator networks, their inputs and early stopping.

No data, no physics and no stage here: :class:`SkipNet` is the untrained generator
of the deep image prior (2-D and 3-D), :func:`noise_input` its fixed random input,
:class:`WindowedVariance` / :class:`ExponentialVariance` the early-stopping rules
(ES-WMV / EMV); :func:`total_variation` the deep priors' penalty and refinement's
constraint; :class:`MLP` the regressor of low-dimensional learned inversions.
``phase.dip``, ``phase.double_dip`` and any learned stage build on
them.
"""

from ._nets import MLP, SkipNet, noise_input, parameter_count, seeded
from ._stopping import ExponentialVariance, WindowedVariance
from ._tv import total_variation

__all__ = ["MLP", "ExponentialVariance", "SkipNet", "WindowedVariance", "noise_input",
           "parameter_count", "seeded", "total_variation"]
