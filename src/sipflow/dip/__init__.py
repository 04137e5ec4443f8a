"""Phase retrieval with deep priors: ``phase.dip`` and ``phase.double_dip``.

The generators and early stopping are :mod:`sipflow.priors`; the forward model and
likelihoods are :mod:`sipflow.physics`; this package fits one to the other
(:func:`fit_run`) and wraps it as stages.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "Dip": "._stage", "DipParams": "._stage", "DoubleDip": "._stage",
    "DoubleDipParams": "._stage", "FitSettings": "._fit", "Generated": "._fit",
    "NetSpec": "._fit", "Problem": "._fit", "RunResult": "._fit", "fit_run": "._fit",
    "previous_is_better": "._stage",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
