"""Learned (end-to-end) phase retrieval, trained on symmetry-broken pairs.

A network trained on pairs (pattern, object) fails when the forward model has
symmetries, because symmetric copies of an object give the same pattern; training
on one canonical representative per orbit (:mod:`sipflow.symmetry`) fixes it.

- :class:`TrainConfig`, :func:`train`: simulate pairs, break the symmetry (or not),
  train the network of :mod:`._model` (a :class:`~sipflow.priors.SkipNet` on the
  pattern's autocorrelation), checkpoint every epoch, resume.
- :class:`LearnedModel`: load a checkpoint (``weights_only``), refuse one that does
  not fit the data, reconstruct; the ``phase.learned`` stage uses it.
- :mod:`sipflow.learned.gaussian`: the real Gaussian phase-retrieval experiment
  (``y = |A x|^2``, sign symmetry) of the benchmarks and tests.
"""

from . import _gaussian as gaussian
from ._checkpoint import LearnedModel
from ._format import CHECKPOINT_FORMAT, load_checkpoint
from ._model import LearnedInverse, features, object_scale
from ._train import (
    Pairs,
    TrainConfig,
    TrainResult,
    draw,
    evaluate,
    predict,
    simulate_pairs,
    train,
)

__all__ = ["CHECKPOINT_FORMAT", "LearnedInverse", "LearnedModel", "Pairs", "TrainConfig",
           "TrainResult", "draw", "evaluate", "features", "gaussian", "load_checkpoint",
           "object_scale", "predict", "simulate_pairs", "train"]
