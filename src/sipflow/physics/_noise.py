"""What the measured values are: photon counts, scaled counts, or processed intensities.

Poisson statistics hold for photon counts. A provider's processed pattern is not
counts: it may be rescaled (a gain, a flux normalisation), centro-symmetrised (the mean
of I(q) and I(-q)), background-subtracted or interpolated. A normalised LLK then is
not about 1 for a good fit, so no threshold tied to Poisson statistics can judge a
run on such data. :func:`noise_model` recognises which case the data are:

- ``counts``: whole numbers (>= 99 % of the measured positive values): Poisson on
  the values as they are;
- ``scaled counts``: whole multiples of one value, the *quantum* (the smallest
  positive value, e.g. a gain times 1/2 after symmetrisation): Poisson on
  ``I / quantum``. After symmetrisation a value is ``quantum * (a + b)`` for two
  Poisson counts a, b, whose sum is again Poisson: the rescaled data are counts;
- ``processed``: neither; the photon scale is unknown, a Gaussian likelihood on the
  values as given ranks runs, and only relative tests judge them.

The recognition also reports whether the pattern is centro-symmetrised (I(q) = I(-q)
on at least 90 % of the measured pixel pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["counts", "scaled counts", "processed"]

#: share of measured positive values that must be whole (multiples) to call data counts
WHOLE_SHARE = 0.99
#: share of measured pixel pairs with I(q) = I(-q) to call a pattern symmetrised
SYMMETRIC_SHARE = 0.9


@dataclass(frozen=True)
class NoiseModel:
    """What the measured values are, and the likelihood that fits them.

    Attributes
    ----------
    kind : {"counts", "scaled counts", "processed"}
    quantum : float or None
        The intensity of one count (1 for counts; None when unknown).
    whole_share : float
        Share of measured positive values that are whole multiples of `quantum`
        (of 1 when `quantum` is None).
    symmetric_share : float
        Share of measured pixels whose point mirror about the centre (n // 2) is
        measured and equal to them (1e-5 relative); NaN without such pairs.
    likelihood : {"poisson", "gaussian"}
        Poisson on ``I / quantum`` when the scale is known, else Gaussian on I.
    source : {"data", "user"}
        Recognised from the data, or said by the user (``likelihood``/``photon_scale``).
    """

    kind: Kind
    quantum: float | None
    whole_share: float
    symmetric_share: float
    likelihood: Literal["poisson", "gaussian"]
    source: str = "data"

    @property
    def symmetrised(self) -> bool:
        """True when the pattern is centro-symmetrised (a provider's processing)."""
        return bool(self.symmetric_share >= SYMMETRIC_SHARE)

    @property
    def scale(self) -> float:
        """What the values are divided by before the likelihood (1 when unknown)."""
        return 1.0 if self.quantum is None else float(self.quantum)

    def describe(self) -> str:
        """One line for summaries, e.g. ``scaled counts (1 count = 18.6), symmetrised;
        Poisson on I / 18.6``."""
        what = self.kind
        if self.kind == "scaled counts":
            what += f" (1 count = {self.quantum:.4g})"
        elif self.kind == "processed":
            what += f" (not whole multiples of one value: {self.whole_share:.0%} are)"
        if self.symmetrised:
            what += ", centro-symmetrised"
        how = ("Poisson" if self.likelihood == "poisson" else "Gaussian") + (
            f" on I / {self.scale:.4g}" if self.likelihood == "poisson" and self.scale != 1
            else "")
        return f"{what}; {how}" + (" (as set)" if self.source == "user" else "")

    def to_attrs(self) -> dict:
        """JSON-ready fields for a stage record."""
        return {"kind": self.kind, "quantum": self.quantum, "whole_share": self.whole_share,
                "symmetric_share": self.symmetric_share, "symmetrised": self.symmetrised,
                "likelihood": self.likelihood, "source": self.source,
                "description": self.describe()}


def _whole(values: np.ndarray, quantum: float) -> float:
    """Share of `values` within 1 % of a whole multiple of `quantum` (float32 rounding of
    large multiples aside: multiples above 1e4 are not judged)."""
    ratio = values / quantum
    judged = ratio < 1e4
    if not judged.any():
        return 0.0
    r = ratio[judged]
    return float(np.mean(np.abs(r - np.round(r)) <= 0.01))


def point_mirror(values: np.ndarray, centre: list[int], axes: tuple[int, ...]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`values` reflected through `centre` along `axes` (index i -> 2 c - i).

    Returns
    -------
    mirror : ndarray, shape of `values`
        The value at each pixel's mirror (edge values where the mirror is off the array).
    inside : ndarray, bool, broadcastable to `values`
        Where the mirror lies on the array.
    """
    mirror = values
    inside = np.ones((1,) * values.ndim, bool)
    for axis, c in zip(axes, centre, strict=True):
        n = values.shape[axis]
        j = 2 * c - np.arange(n)
        mirror = np.take(mirror, np.clip(j, 0, n - 1), axis=axis)
        shape = [1] * values.ndim
        shape[axis] = n
        inside = inside & ((j >= 0) & (j < n)).reshape(shape)
    return mirror, inside


def symmetric_share(intensity: np.ndarray, mask: np.ndarray) -> float:
    """Share of measured pixels whose point mirror about n // 2 is measured and equal.

    Parameters
    ----------
    intensity, mask : ndarray, (*spatial), centred (q = 0 at n // 2)
    """
    axes = tuple(range(intensity.ndim))
    centre = [n // 2 for n in intensity.shape]
    mirror, inside = point_mirror(intensity, centre, axes)
    mirror_mask, _ = point_mirror(mask, centre, axes)
    pairs = mask & mirror_mask & inside & (intensity > 0)
    if not pairs.any():
        return float("nan")
    a, b = intensity[pairs].astype(np.float64), mirror[pairs].astype(np.float64)
    return float(np.mean(np.abs(a - b) <= 1e-5 * np.maximum(np.abs(a), np.abs(b))))


def noise_model(intensity: np.ndarray, mask: np.ndarray, *, likelihood: str = "auto",
                photon_scale: float | None = None) -> NoiseModel:
    """Recognise what the values of a centred pattern are (see the module's text).

    Parameters
    ----------
    intensity : ndarray, real, (*spatial)
        Centred measured intensity (any unit), zero on unmeasured pixels.
    mask : ndarray, bool, (*spatial)
        Measured pixels.
    likelihood : {"auto", "poisson", "gaussian"}
        ``auto``: from the recognition; otherwise the user's choice.
    photon_scale : float, optional
        The intensity of one photon, as the user knows it: the data are then scaled
        counts with this quantum, whatever the recognition says.

    Returns
    -------
    NoiseModel
    """
    values = np.asarray(intensity, np.float64)[np.asarray(mask, bool)]
    positive = values[values > 0]
    sym = symmetric_share(np.asarray(intensity), np.asarray(mask, bool))
    if photon_scale is not None:
        whole = _whole(positive, photon_scale) if positive.size else 0.0
        return NoiseModel("scaled counts" if photon_scale != 1 else "counts",
                          float(photon_scale), whole, sym,
                          "gaussian" if likelihood == "gaussian" else "poisson", "user")
    kind: Kind
    quantum: float | None
    if not positive.size:
        kind, quantum, whole = "processed", None, 0.0
    elif (whole := _whole(positive, 1.0)) >= WHOLE_SHARE:
        kind, quantum = "counts", 1.0
    else:
        smallest = float(positive.min())
        scaled = _whole(positive, smallest)
        if scaled >= WHOLE_SHARE - 0.04:  # float32 values of a scale: a little rounding
            kind, quantum, whole = "scaled counts", smallest, scaled
        else:
            kind, quantum = "processed", None
    chosen = likelihood if likelihood != "auto" else (
        "poisson" if quantum is not None else "gaussian")
    return NoiseModel(kind, quantum, whole, sym, chosen,  # type: ignore[arg-type]
                      "data" if likelihood == "auto" else "user")
