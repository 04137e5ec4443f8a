"""``prep.standard``: dark, flat, threshold, mask, centre, crop and bin (2-D and 3-D)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr
from pydantic import Field, field_validator

from .. import schema
from ..contracts import Context, Stage, StageParams
from ..errors import DataError
from ..hookspecs import hookimpl
from ..physics import centred_farfield, centred_inverse_farfield, checked_counts


class StandardParams(StageParams):
    """Parameters of ``prep.standard``."""

    dark: bool = Field(True, description="Subtract the dark frame when the input has one.")
    flat: bool = Field(False, description="Divide by the flat field (white field, normalised to "
                                          "mean 1) when present; pixels below mean - 3 std of "
                                          "it are masked.")
    threshold: float = Field(0.0, ge=0, description="Counts below this are set to 0 [photons].")
    on_invalid: Literal["error", "mask"] = Field(
        "error", description="NaN/Inf/negative raw counts on valid pixels: stop with an error, "
                             "or mask them.")
    sum_frames: bool = Field(False, description="Sum a stack of frames into one 2-D pattern.")
    centre: Literal["auto", "file", "max", "friedel", "com", "symmetry", "none"] = Field(
        "auto", description="Point moved to index n//2: 'file' the beam centre the input "
                            "file records (NXdetector/Eiger beam_center_x|y, a CBF or EDF "
                            "header), to the nearest pixel; 'max' the maximum of the 3-pixel "
                            "smoothed pattern; 'friedel' the point about which the measured "
                            "pixels are most nearly centro-symmetric (Friedel's law; finds q = 0 "
                            "behind a beamstop); 'auto' = 'file' for 2-D patterns whose file "
                            "records the beam centre, else 'friedel', and 'max' for 3-D "
                            "(Bragg) stacks, whose peak is not the beam; 'com' the centre of "
                            "mass; "
                            "'symmetry' the centre of symmetry of the 1-D projections; 'none' no "
                            "shift.")
    size: int | list[int] | None = Field(
        None, description="Output size per axis after binning [pixels]; one int for all axes; "
                          "None keeps the full (centred) array.")
    bin: int | list[int] = Field(1, description="Sum blocks of this many pixels per axis.")

    @field_validator("size")
    @classmethod
    def _size_positive(cls, v):
        vals = v if isinstance(v, list) else [v] if v is not None else []
        if any(s < 8 for s in vals):
            raise ValueError("each size must be at least 8 pixels")
        return v

    @field_validator("bin")
    @classmethod
    def _bin_positive(cls, v):
        vals = v if isinstance(v, list) else [v]
        if any(b < 1 for b in vals):
            raise ValueError("bin factors must be at least 1")
        return v


def _per_axis(value, ndim: int, name: str) -> list:
    if isinstance(value, list):
        if len(value) != ndim:
            raise DataError(f"prep.standard: {name} has {len(value)} values but the data "
                            f"are {ndim}-D")
        return list(value)
    return [value] * ndim


def _friedel_centre(counts: np.ndarray, mask: np.ndarray) -> list[int]:
    """Centre about which the measured amplitudes are most nearly centro-symmetric.

    Maximises the (Pearson) correlation of ``a(q)`` with ``a(s - q)`` over the pixel
    pairs measured in both (``a = log(1 + counts)``), over all shifts ``s``; the centre
    is ``s / 2``. Masked pixels (a beamstop, gaps) take no part, so a hidden q = 0 is
    found from the pattern around it. Exact for real objects (Friedel's law), a good
    estimate for weak-phase ones.
    """
    # log counts: the comparison weighs the whole pattern, not its few brightest streaks
    a = np.log1p(np.clip(counts, 0, None)) * mask
    m = mask.astype(np.float64)
    shape = [2 * n for n in counts.shape]

    def conv(u, v):
        axes = tuple(range(len(shape)))
        return np.fft.irfftn(np.fft.rfftn(u, shape, axes) * np.fft.rfftn(v, shape, axes), shape,
                             axes)

    pairs = conv(m, m)
    # Pearson correlation of a(q) with a(s - q) over the pairs measured in both; the
    # sums over either side are equal (convolution is symmetric)
    total, power, cross = conv(a, m), conv(a**2, m), conv(a, a)
    enough = pairs > 0.5 * pairs.max()
    n = np.where(enough, pairs, 1)
    var = power - total**2 / n
    score = np.where(enough & (var > 0), (cross - total**2 / n) / np.where(var > 0, var, 1),
                     -np.inf)
    best = np.unravel_index(int(np.argmax(score)), score.shape)
    return [round(float(b) / 2) for b in best]


def _peak(counts: np.ndarray, how: str, mask: np.ndarray | None = None) -> list[int]:
    if mask is None:
        mask = np.ones(counts.shape, bool)
    if how == "friedel":
        return _friedel_centre(counts, mask)
    if how == "auto":  # 2-D (forward CDI): Friedel; 3-D (Bragg, strained): the maximum
        return _friedel_centre(counts, mask) if counts.ndim == 2 else _peak(counts, "max")
    if how == "max":
        # maximum of the pattern smoothed over 3 pixels: robust to shot noise and single
        # hot pixels, and exact for a centro-symmetric (Friedel) pattern
        from scipy.ndimage import uniform_filter

        smooth = uniform_filter(counts.astype(np.float64), size=3, mode="constant")
        return [int(i) for i in np.unravel_index(np.argmax(smooth), counts.shape)]
    if how == "symmetry":
        return [_symmetry_centre(counts.sum(axis=tuple(a for a in range(counts.ndim) if a != ax),
                                            dtype=np.float64)) for ax in range(counts.ndim)]
    total = counts.sum(dtype=np.float64)
    out = []
    for axis in range(counts.ndim):
        other = tuple(a for a in range(counts.ndim) if a != axis)
        profile = counts.sum(axis=other, dtype=np.float64)
        out.append(round(float((profile * np.arange(profile.size)).sum() / total)))
    return out


def _symmetry_centre(profile: np.ndarray) -> int:
    """Index about which a 1-D profile is most nearly symmetric (Friedel centre).

    The correlation of the profile with its mirror image peaks at twice the centre;
    a beamstop or a masked centre does not move it.
    """
    n = profile.size
    p = profile - profile.mean()
    corr = np.fft.irfft(np.fft.rfft(p, 2 * n) ** 2, 2 * n)  # sum_k p[k] p[m-k]
    return round(float(np.argmax(corr[: 2 * n - 1])) / 2)


def _window(a: np.ndarray, centre: list[int], shape: list[int], fill) -> np.ndarray:
    """Extract `shape` around `centre` (centre lands at n//2), padding with `fill`."""
    out = np.full(shape, fill, dtype=a.dtype)
    src, dst = [], []
    for c, n, N in zip(centre, shape, a.shape, strict=True):
        start = c - n // 2
        lo, hi = max(start, 0), min(start + n, N)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = a[tuple(src)]
    return out


def truth_on_grid(truth: np.ndarray, centre: list[int], window: list[int]) -> np.ndarray:
    """A ground-truth object as seen through a q-space window of the detector.

    Cropping the diffraction pattern to `window` around `centre` is, in real
    space, an exact Fourier resampling (plus a phase ramp when the centre is
    moved). Applying it to the truth keeps ``|F truth|^2 == intensity``.

    Parameters
    ----------
    truth : ndarray, complex, detector shape
    centre, window : list of int
        Window centre and shape in detector pixels (``attrs["prep_window"]``).
    """
    f = _window(centred_farfield(truth), list(centre), list(window), np.complex64(0))
    return centred_inverse_farfield(f).astype(np.complex64)


def _bin(a: np.ndarray, factors: list[int], reduce=np.sum) -> np.ndarray:
    shape = []
    for n, b in zip(a.shape, factors, strict=True):
        shape += [n // b, b]
    trimmed = a[tuple(slice(0, (n // b) * b) for n, b in zip(a.shape, factors, strict=True))]
    return reduce(trimmed.reshape(shape), axis=tuple(range(1, 2 * a.ndim, 2)))


class Standard(Stage):
    """Standard detector preprocessing: dark, flat, threshold, mask, centre, crop, bin.

    Order: validate raw counts -> subtract dark -> divide by flat -> zero counts
    below `threshold` -> zero masked pixels -> (sum frames) -> crop a window of
    ``size * bin`` centred on the peak -> bin. The result is centred: q = 0 at
    index n//2. A ground truth in the input is carried along for q-space crops
    (an exact Fourier crop); it is dropped when binning (not a linear map of the
    object), with a note in attrs.
    """

    name = "prep.standard"
    version = "1.1"
    Params = StandardParams
    requires = (schema.INTENSITY,)

    def run(self, ds: xr.Dataset, params: StandardParams, context: Context) -> xr.Dataset:
        counts, mask = checked_counts(ds, stage=self.name, on_invalid=params.on_invalid)
        notes: list[str] = []
        if params.dark and schema.DARK in ds:
            counts = counts - np.asarray(ds[schema.DARK].values, dtype=np.float32)
            counts[counts < 0] = 0
            notes.append("dark subtracted")
        if params.flat and schema.FLAT in ds:
            flat = np.asarray(ds[schema.FLAT].values, np.float64)
            positive = flat[flat > 0]
            if positive.size == 0:
                raise DataError(f"{ds.attrs.get('source', 'input')}: the flat field is <= 0 "
                                "everywhere; set flat: false")
            # pixels far below the typical response are dead or seams (cohere: mean - 3 std)
            good = flat > max(positive.mean() - 3 * positive.std(), 0)
            flat = flat / flat[good].mean()  # keep the photon scale
            good = np.broadcast_to(good, counts.shape)
            mask &= good
            counts = np.where(good, counts / np.where(good, flat, 1), 0).astype(np.float32)
            notes.append(f"flat-field corrected ({int((~good).sum())} pixels masked)")
        if params.threshold > 0:
            counts[counts < params.threshold] = 0
        counts[~mask] = 0
        if params.sum_frames and counts.ndim == 3:
            mask = mask.all(axis=0)
            counts = counts.sum(axis=0) * mask
        ndim = counts.ndim
        bins = _per_axis(params.bin, ndim, "bin")
        sizes = _per_axis(params.size, ndim, "size")
        centre, centre_from = self._centre(ds, counts, mask, params.centre)
        notes.append(f"centre {centre} ({centre_from})")
        raw_shape = [int(n) for n in counts.shape]
        window = [counts.shape[a] if s is None else s * b
                  for a, (s, b) in enumerate(zip(sizes, bins, strict=True))]
        if params.size is None:
            # keep the detector's size; pixels moved in from beyond its edge are masked
            window = [n - n % (2 * b) for n, b in zip(counts.shape, bins, strict=True)]
        counts = _window(counts, centre, window, np.float32(0))
        mask = _window(mask, centre, window, False)
        if any(b > 1 for b in bins):
            counts = _bin(counts, bins)
            mask = _bin(mask, bins, reduce=np.all)
            counts[~mask] = 0

        dims = schema.detector_dims(ndim)
        out = xr.Dataset(
            {schema.INTENSITY: (dims, counts.astype(np.float32)), schema.MASK: (dims, mask)},
            attrs=dict(ds.attrs),
        )
        out.attrs["prep_peak_index"] = centre
        out.attrs["prep_window"] = {"centre": centre, "shape": window, "bin": bins,
                                    "detector_shape": raw_shape, "centre_from": centre_from}
        if params.threshold > 0:
            notes.append(f"counts < {params.threshold} zeroed")
        if schema.OBJ_TRUE in ds:
            truth = np.asarray(ds[schema.OBJ_TRUE].values)
            if any(b > 1 for b in bins) or params.sum_frames or truth.ndim != ndim:
                notes.append("ground truth dropped (binning/summing changes the sampling)")
            else:
                new_truth = truth_on_grid(truth, centre, window)
                rdims = schema.real_dims(ndim)
                out[schema.OBJ_TRUE] = (rdims, new_truth)
                if schema.SUPPORT_TRUE in ds and new_truth.shape == truth.shape:
                    out[schema.SUPPORT_TRUE] = ds[schema.SUPPORT_TRUE]
                elif schema.SUPPORT_TRUE in ds:
                    amp = np.abs(new_truth)
                    out[schema.SUPPORT_TRUE] = (rdims, amp > 0.1 * amp.max())
        out.attrs["prep_notes"] = notes
        context.logger.info("prep.standard: %s -> %s, %s", tuple(ds[schema.INTENSITY].shape),
                            counts.shape, ", ".join(notes) or "no corrections")
        return out


    @staticmethod
    def _centre(ds: xr.Dataset, counts: np.ndarray, mask: np.ndarray, how: str
                ) -> tuple[list[int], str]:
        """The index moved to n//2 and where it came from (``file ...``, ``friedel``...)."""
        beam = ds.attrs.get("beam_centre_px")
        if how == "none":
            return [n // 2 for n in counts.shape], "none: not moved"
        if how == "file" or (how == "auto" and counts.ndim == 2 and beam is not None):
            if beam is None:
                raise DataError(f"{ds.attrs.get('source', 'input')}: centre: file, but the "
                                "input records no beam centre (beam_center_x/y); use centre: "
                                "auto or friedel")
            row, col = (float(v) for v in beam)
            where = (ds.attrs.get("geometry_sources") or {}).get("beam_centre_px", "file")
            centre = [round(row), round(col)]
            if counts.ndim == 3:
                centre = [_peak(counts, "max", mask)[0], *centre]
            return centre, f"beam centre ({row:g}, {col:g}) px from {where}"
        return _peak(counts, how, mask), how if how != "auto" else (
            "auto: friedel" if counts.ndim == 2 else "auto: max")


@hookimpl
def sipflow_stages():
    return [Standard]
