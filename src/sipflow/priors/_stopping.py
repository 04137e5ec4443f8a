"""Early stopping of deep priors by the variance of their outputs (ES-WMV, Wang et al. 2023).

A deep prior first fits the structure of the data and later its noise. The outputs
of successive iterations vary little while the fit is in the structured phase and
more once noise is being fitted, so their running variance has a minimum near the
best iterate. :class:`WindowedVariance` keeps the last ``window`` outputs (exact
windowed variance); :class:`ExponentialVariance` keeps two running moments
(O(1) memory, for 3-D). Both remember the iterate at the variance minimum and say
when it has not improved for ``patience`` iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _align_phase(x: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """`x` times the global phase factor that brings it closest to `reference`.

    A constant phase is invisible to the data and drifts freely; it must not count
    as variation.
    """
    if reference is None or not x.is_complex():
        return x
    c = (torch.conj(x) * reference).sum()
    return x * (c / c.abs().clamp_min(1e-30))


@dataclass
class _Tracker:
    patience: int
    best_variance: float = float("inf")
    best_iteration: int = -1
    best: torch.Tensor | None = None
    last_improvement: int = 0
    keep_best: bool = True
    variances: list[float] = field(default_factory=list)

    def _record(self, iteration: int, variance: float, x: torch.Tensor) -> None:
        self.variances.append(variance)
        if variance < self.best_variance:
            self.best_variance = variance
            self.best_iteration = iteration
            if self.keep_best:  # False: only the variance curve is wanted
                self.best = x.detach().clone()
            self.last_improvement = iteration

    def should_stop(self, iteration: int) -> bool:
        """True when the variance has not reached a new minimum for `patience` iterations."""
        return self.best_iteration >= 0 and iteration - self.last_improvement >= self.patience


class WindowedVariance(_Tracker):
    """ES-WMV: variance of the last `window` outputs; stop after `patience` without a minimum.

    Parameters
    ----------
    window : int
        Outputs in the window (W; 100 in the paper).
    patience : int
        Iterations without a new variance minimum before stopping (P; 1000 in the paper).

    Call :meth:`update` with each iteration's output (any shape, real or complex; a
    constant phase factor is removed); the variance is ``mean_t ||x_t - mean||^2 /
    mean_t ||x_t||^2`` over the window, NaN until the window is full. Memory: `window`
    copies of the output.
    """

    def __init__(self, window: int = 100, patience: int = 1000) -> None:
        super().__init__(patience)
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.window = window
        self._buffer: torch.Tensor | None = None
        self._count = 0

    def update(self, iteration: int, x: torch.Tensor) -> float:
        """Add the output of `iteration`; return the windowed variance (NaN until full)."""
        x = x.detach()
        if self._buffer is None:
            self._buffer = torch.zeros((self.window, *x.shape), dtype=x.dtype, device=x.device)
        reference = self._buffer[(self._count - 1) % self.window] if self._count else None
        x = _align_phase(x, reference)
        self._buffer[self._count % self.window] = x
        self._count += 1
        if self._count < self.window:
            self.variances.append(float("nan"))
            return float("nan")
        mean = self._buffer.mean(dim=0)
        spread = (self._buffer - mean).abs().pow(2).sum() / self.window
        scale = self._buffer.abs().pow(2).sum() / self.window
        variance = float(spread / scale.clamp_min(1e-30))
        self._record(iteration, variance, x)
        return variance


class ExponentialVariance(_Tracker):
    """ES-EMV: exponential moving variance, O(1) memory (for 3-D volumes).

    Parameters
    ----------
    alpha : float
        Weight of the newest output in the moving mean and variance (0.1 in the paper).
    patience : int
    warmup : int
        Outputs before the variance counts (the moments need a few to settle).
    """

    def __init__(self, alpha: float = 0.1, patience: int = 1000, warmup: int = 20) -> None:
        super().__init__(patience)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.warmup = warmup
        self._mean: torch.Tensor | None = None
        self._var = 0.0
        self._count = 0

    def update(self, iteration: int, x: torch.Tensor) -> float:
        """Add the output of `iteration`; return the moving variance (NaN during warm-up)."""
        x = _align_phase(x.detach(), self._mean)
        self._count += 1
        if self._mean is None:
            self._mean = x.clone()
            self.variances.append(float("nan"))
            return float("nan")
        delta = x - self._mean
        scale = float(x.abs().pow(2).sum().clamp_min(1e-30))
        self._mean = self._mean + self.alpha * delta
        self._var = (1 - self.alpha) * (self._var + self.alpha * float(delta.abs().pow(2).sum())
                                        / scale)
        if self._count < self.warmup:
            self.variances.append(float("nan"))
            return float("nan")
        self._record(iteration, self._var, x)
        return self._var
