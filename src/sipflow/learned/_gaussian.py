"""Real Gaussian phase retrieval ``y = |A x|^2``: the smallest case where symmetry matters.

``x`` and ``-x`` give the same ``y``; a regressor trained on raw pairs learns the
average of the two answers (zero), one trained on pairs whose targets were moved
to the half-space ``x · v >= 0`` (:class:`sipflow.symmetry.SignGroup`) learns the
inverse. :func:`experiment` reproduces the DNN / K-NN comparison of SCIENCE.md §3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..priors import MLP, seeded
from ..symmetry import SignGroup


@dataclass(frozen=True)
class GaussianPR:
    """One instance of the problem: the sensing matrix and the signal distribution.

    Parameters
    ----------
    dim : int
        Length of the real signal ``x`` (entries i.i.d. N(0, 1)).
    measurements : int
        Rows of ``A`` (i.i.d. N(0, 1/m)); ``y = (A x)^2``.
    seed : int
        Seed of ``A``.
    """

    dim: int = 5
    measurements: int = 20
    seed: int = 0

    @property
    def matrix(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.normal(0, 1 / math.sqrt(self.measurements), (self.measurements, self.dim))

    def pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs ``(y, x)``: y (n, measurements), x (n, dim), float32."""
        rng = np.random.default_rng(seed + 1)
        x = rng.normal(size=(n, self.dim))
        y = (x @ self.matrix.T) ** 2
        return y.astype(np.float32), x.astype(np.float32)


def break_symmetry(targets: np.ndarray, group: SignGroup | None = None) -> np.ndarray:
    """Each target moved to its canonical representative (the half-space ``x · v >= 0``)."""
    return (group or SignGroup()).canonical(targets).x


def features(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Network input from the measurements: the amplitudes ``sqrt(y)`` (float32)."""
    return torch.as_tensor(y, dtype=torch.float32).clamp_min(0).sqrt()


def fit_mlp(y: np.ndarray, x: np.ndarray, *, steps: int = 20_000, batch_size: int = 512,
            lr: float = 1e-3, width: int = 256, layers: int = 3, seed: int = 0,
            progress: Callable[[int, int, float], None] | None = None) -> torch.nn.Module:
    """Train an :class:`~sipflow.priors.MLP` from ``y`` to ``x`` by Adam on the squared error.

    The learning rate decays by cosine annealing over `steps`; minibatches are drawn
    with replacement from the pairs (so the budget in steps is the same whatever
    the training-set size).

    Parameters
    ----------
    y : (n, m) measurements
    x : (n, dim) targets (raw or symmetry-broken)
    progress : callable(step, steps, loss), optional
    """
    inputs = features(y)
    targets = torch.as_tensor(x, dtype=torch.float32)
    with seeded(seed):
        net = MLP(inputs.shape[1], targets.shape[1], width, layers)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    n = inputs.shape[0]
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = torch.mean((net(inputs[idx]) - targets[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step % 500 == 0 or step == steps - 1):
            progress(step + 1, steps, float(loss))
    net.eval()
    return net


def predict_mlp(net: torch.nn.Module, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(features(y)).numpy()


def knn_predict(y_train: np.ndarray, x_train: np.ndarray, y_query: np.ndarray, k: int = 5,
                chunk: int = 2048) -> np.ndarray:
    """Mean target of the `k` nearest training measurements (Euclidean, on ``sqrt(y)``)."""
    train = features(y_train)
    targets = torch.as_tensor(x_train, dtype=torch.float32)
    query = features(y_query)
    out = []
    for start in range(0, query.shape[0], chunk):
        d = torch.cdist(query[start:start + chunk], train)
        idx = d.topk(k, largest=False).indices
        out.append(targets[idx].mean(dim=1))
    return torch.cat(out).numpy()


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over samples of ``min(||x̂ - x||, ||x̂ + x||) / ||x||`` (error modulo the sign)."""
    e = np.asarray(estimate, np.float64)
    t = np.asarray(truth, np.float64)
    norm = np.linalg.norm(t, axis=-1)
    err = np.minimum(np.linalg.norm(e - t, axis=-1), np.linalg.norm(e + t, axis=-1))
    return float(np.mean(err / norm))


@dataclass(frozen=True)
class ExperimentRow:
    """Errors [relative, modulo the sign] for one training-set size."""

    samples: int
    dnn_before: float
    knn_before: float
    dnn_after: float
    knn_after: float
    seconds: float


def experiment(samples: int, problem: GaussianPR | None = None, *, test: int = 5000,
               steps: int = 20_000, k: int = 5, seed: int = 0) -> ExperimentRow:
    """DNN and K-NN errors on a held-out set, trained before and after symmetry breaking."""
    problem = problem or GaussianPR()
    t0 = time.perf_counter()
    y, x = problem.pairs(samples, seed)
    y_test, x_test = problem.pairs(test, seed + 10_000)
    broken = break_symmetry(x)
    errors = []
    for targets in (x, broken):
        net = fit_mlp(y, targets, steps=steps, seed=seed)
        errors.append(relative_error(predict_mlp(net, y_test), x_test))
        errors.append(relative_error(knn_predict(y, targets, y_test, k), x_test))
    return ExperimentRow(samples, errors[0], errors[1], errors[2], errors[3],
                         time.perf_counter() - t0)
