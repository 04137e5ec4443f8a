"""The ambiguity group of far-field phase retrieval: global phase × translation × twin.

``|F x|^2`` cannot tell ``x`` from ``exp(i phi) x`` (global phase), ``x(r - t)``
(translation) or ``conj(x(-r))`` (the twin, or conjugate-flip). A group element
``g = (phi, t, twin)`` acts as

.. math:: g \\cdot x = e^{i\\phi}\\, T_t\\, W^{twin} x,

twin first, then the (sub-pixel, periodic) translation, then the phase. Arrays are
centred (origin at index ``n // 2`` of every axis), so ``W`` maps index ``i`` to
``2 (n // 2) - i`` (mod n) exactly and ``W^2`` is the identity.

Everything is torch first and batched over leading axes (runs); every public
function also takes numpy arrays and then returns numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: below this |third-moment| score the twin choice of :func:`canonical` is a guess
TWIN_CONFIDENCE_THRESHOLD = 0.05


def _as_torch(x: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x)), True
    return x, False


def _back(x: torch.Tensor, numpy_in: bool):
    return x.detach().cpu().numpy() if numpy_in else x


def _complex(x: torch.Tensor) -> torch.Tensor:
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


def _dims(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


@dataclass(frozen=True)
class FarFieldElement:
    """One element ``(phase, shift, twin)`` of the far-field group.

    Attributes
    ----------
    phase : float
        Global phase [rad].
    shift : tuple of float
        Translation [pixels] per spatial axis (applied after the twin).
    twin : bool
        Whether the conjugate-flip is applied (first).
    """

    phase: float = 0.0
    shift: tuple[float, ...] = ()
    twin: bool = False

    def inverse(self) -> FarFieldElement:
        """The element that undoes this one (a twin element is its own inverse)."""
        if self.twin:
            return self
        return FarFieldElement(-self.phase, tuple(-t for t in self.shift), False)

    def apply(self, x, ndim: int | None = None):
        """``g · x`` for a complex array (torch or numpy), batched over leading axes."""
        return apply(x, self, ndim)


def twin(x, ndim: int | None = None):
    """``conj(x(-r))`` about the centre ``n // 2`` of every axis (exact, an involution)."""
    t, numpy_in = _as_torch(x)
    ndim = ndim or t.ndim
    dims = _dims(ndim)
    out = torch.flip(t, dims=dims)
    shifts = tuple(1 - n % 2 for n in t.shape[-ndim:])
    out = torch.roll(out, shifts=shifts, dims=dims)
    return _back(torch.conj_physical(out) if out.is_complex() else out, numpy_in)


def _freqs(n: int, device, dtype) -> torch.Tensor:
    return torch.fft.fftfreq(n, device=device, dtype=dtype) * n


def translate(x, shift, ndim: int | None = None):
    """``x(r - shift)`` by a Fourier phase ramp (periodic, sub-pixel).

    Parameters
    ----------
    x : complex or real, (..., *spatial)
    shift : sequence or tensor, (ndim,) or (..., ndim)
        Pixels per axis; a batch of shifts broadcasts over the leading axes.
    """
    t, numpy_in = _as_torch(x)
    ndim = ndim or t.ndim
    real_in = not t.is_complex()
    c = _complex(t)
    rdtype = torch.float64 if c.dtype == torch.complex128 else torch.float32
    s = torch.as_tensor(np.asarray(shift, dtype=np.float64) if not isinstance(
        shift, torch.Tensor) else shift, device=c.device).to(rdtype)
    f = torch.fft.fftn(c, dim=_dims(ndim))
    batch = s.shape[:-1]
    for axis, n in enumerate(c.shape[-ndim:]):
        view = [1] * ndim
        view[axis] = n
        k = _freqs(n, c.device, rdtype).reshape(view)
        ts = s[..., axis].reshape(*batch, *([1] * ndim))
        f = f * torch.exp(-2j * math.pi * k * ts / n)
    out = torch.fft.ifftn(f, dim=_dims(ndim))
    return _back(out.real if real_in else out, numpy_in)


def apply(x, g: FarFieldElement, ndim: int | None = None):
    """``g · x = exp(i phase) T_shift W^twin x``."""
    t, numpy_in = _as_torch(x)
    ndim = ndim or t.ndim
    out = twin(t, ndim) if g.twin else t
    if g.shift and any(v != 0 for v in g.shift):
        out = translate(out, g.shift, ndim)
    if g.phase:
        out = _complex(out) * complex(math.cos(g.phase), math.sin(g.phase))
    return _back(out, numpy_in)


def circular_centroid(weights, ndim: int | None = None):
    """Centroid of non-negative `weights` on the periodic grid, (..., ndim) [pixels].

    The circular mean per axis: the angle of the first Fourier coefficient of the
    projected profile, so a translation by ``t`` moves it by exactly ``t``.
    """
    w, numpy_in = _as_torch(weights)
    ndim = ndim or w.ndim
    w = w.to(torch.float64)
    out = []
    for axis in range(ndim):
        n = w.shape[-ndim + axis]
        other = tuple(d for d in range(-ndim, 0) if d != -ndim + axis)
        profile = w.sum(dim=other) if other else w
        phase = torch.exp(2j * math.pi * torch.arange(n, device=w.device) / n)
        angle = torch.angle((profile * phase).sum(dim=-1))
        out.append((angle / (2 * math.pi) * n) % n)
    return _back(torch.stack(out, dim=-1), numpy_in)


def _refine(prod: torch.Tensor, centre: torch.Tensor, half_width: float, step: float
            ) -> torch.Tensor:
    """Maximise |cross-correlation| on a fine grid around `centre` (separable matrix DFT)."""
    k = round(half_width / step)
    offsets = torch.arange(-k, k + 1, device=prod.device, dtype=torch.float64) * step
    out = prod
    for axis, n in enumerate(prod.shape):
        s = centre[axis] + offsets
        kernel = torch.exp(2j * math.pi * torch.outer(s, _freqs(n, prod.device, torch.float64))
                           / n).to(prod.dtype)
        out = torch.movedim(torch.tensordot(kernel, out, dims=([1], [axis])), 0, axis)
    flat = int(torch.argmax(out.abs()))
    fine = np.unravel_index(flat, tuple(out.shape))
    return torch.stack([centre[a] + offsets[fine[a]] for a in range(prod.ndim)])


def subpixel_shift(reference, moving, ndim: int | None = None, precision: float = 0.01):
    """Translation ``t`` that best aligns ``moving(r - t)`` to `reference` [pixels].

    The integer peak of the FFT cross-correlation refined twice by upsampled matrix
    DFTs (Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008)): to 0.1 px in
    a 1.5-px window, then to `precision` in a 0.1-px window.

    Parameters
    ----------
    reference : (*spatial)
    moving : (..., *spatial), batched over leading axes

    Returns
    -------
    (..., ndim) float64
    """
    ref, numpy_in = _as_torch(reference)
    mov, _ = _as_torch(moving)
    ndim = ndim or ref.ndim
    ref_c = _complex(ref.to(torch.float64) if not ref.is_complex() else ref.to(torch.complex128))
    mov_c = _complex(mov.to(torch.float64) if not mov.is_complex() else mov.to(torch.complex128))
    dims = _dims(ndim)
    prod = torch.fft.fftn(ref_c, dim=dims) * torch.conj(torch.fft.fftn(mov_c, dim=dims))
    shape = prod.shape[-ndim:]
    batch = prod.shape[:-ndim]
    flat = prod.reshape(-1, *shape)
    out = []
    for p in flat:
        cc = torch.fft.ifftn(p).abs()
        peak = torch.tensor(np.unravel_index(int(torch.argmax(cc)), tuple(shape)),
                            dtype=torch.float64, device=p.device)
        n = torch.tensor(shape, dtype=torch.float64, device=p.device)
        peak = torch.where(peak > n // 2, peak - n, peak)
        peak = _refine(p, peak, 0.75, 0.1)
        out.append(_refine(p, peak, 0.1, precision))
    result = torch.stack(out).reshape(*batch, ndim)
    return _back(result, numpy_in)


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align` for one array.

    Attributes
    ----------
    aligned : array
        ``element · x``, the input brought onto the reference.
    element : FarFieldElement
    error : float
        ``||reference - aligned|| / ||reference||``.
    """

    aligned: Any
    element: FarFieldElement
    error: float

    # the fields of the former analyse.Alignment, kept for callers
    @property
    def twin(self) -> bool:
        return self.element.twin

    @property
    def shift(self) -> tuple[float, ...]:
        return self.element.shift

    @property
    def phase(self) -> float:
        return self.element.phase


def _align_one(ref: torch.Tensor, x: torch.Tensor, ndim: int, precision: float) -> Alignment:
    norm = torch.linalg.vector_norm(ref).item() or 1.0
    best: Alignment | None = None
    for is_twin in (False, True):
        cand = twin(x, ndim) if is_twin else x
        # translation from the amplitudes (insensitive to phase ramps)
        t = subpixel_shift(ref.abs(), cand.abs(), ndim, precision)
        moved = translate(cand, t, ndim)
        phase = float(torch.angle(torch.sum(torch.conj_physical(moved) * ref)))
        g = FarFieldElement(phase, tuple(float(v) for v in t), is_twin)
        aligned = moved * complex(math.cos(phase), math.sin(phase))
        err = torch.linalg.vector_norm(ref - aligned).item() / norm
        if best is None or err < best.error:
            best = Alignment(aligned, g, err)
    assert best is not None
    return best


def align(reference, x, ndim: int | None = None, precision: float = 0.01):
    """Bring `x` onto `reference` over twin, sub-pixel translation and global phase.

    Minimises ``||reference - g · x||`` over the group (both twin choices tried).

    Parameters
    ----------
    reference : complex, (*spatial)
    x : complex, (*spatial) or (runs, *spatial)
    ndim : int, optional
        Spatial dimensions (default ``reference.ndim``).
    precision : float
        Final step of the translation search [pixels].

    Returns
    -------
    Alignment, or a list of them (one per run) when `x` has a batch axis
    """
    ref, numpy_in = _as_torch(reference)
    xt, _ = _as_torch(x)
    ndim = ndim or ref.ndim
    ref = ref.to(torch.complex128)
    xt = xt.to(torch.complex128)
    if xt.ndim == ndim:
        a = _align_one(ref, xt, ndim, precision)
        return Alignment(_back(a.aligned, numpy_in), a.element, a.error)
    return [Alignment(_back(a.aligned, numpy_in), a.element, a.error)
            for a in (_align_one(ref, xi, ndim, precision) for xi in xt.reshape(-1, *ref.shape))]


@dataclass(frozen=True)
class Canonical:
    """Result of :func:`canonical`.

    Attributes
    ----------
    x : array
        The canonical representative ``element · input``.
    element : FarFieldElement
        The group element applied.
    twin_confidence : float
        Size of the amplitude's third-moment score that picked the twin; below
        :data:`TWIN_CONFIDENCE_THRESHOLD` the object is (near) centro-symmetric in
        amplitude and the twin choice is a guess (:attr:`ambiguous_twin`).
    """

    x: Any
    element: FarFieldElement
    twin_confidence: float

    @property
    def ambiguous_twin(self) -> bool:
        return self.twin_confidence < TWIN_CONFIDENCE_THRESHOLD


def _skew_score(x: torch.Tensor, ndim: int) -> tuple[float, float]:
    """A scalar that the twin negates, and how far it is from a tie.

    The normalised third moment (skewness) of the ``|x|^2`` profile along each axis;
    the score is the one largest in size, with its sign. The confidence is its size,
    reduced when another axis is almost as skewed the other way (a small change
    could then flip the choice).
    """
    w = (x.real**2 + x.imag**2).to(torch.float64)
    total = w.sum().clamp_min(1e-300)
    skews = []
    for axis in range(ndim):
        n = x.shape[-ndim + axis]
        r = torch.arange(n, device=x.device, dtype=torch.float64) - n // 2
        if n % 2 == 0:  # index 0 is its own mirror image: no odd moment can use it
            r[0] = 0
        other = tuple(d for d in range(-ndim, 0) if d != -ndim + axis)
        profile = w.sum(dim=other) if other else w
        var = (profile * r**2).sum() / total
        m3 = (profile * r**3).sum() / total
        skews.append(float(m3 / var.clamp_min(1e-12) ** 1.5))
    ranked = sorted(skews, key=abs, reverse=True)
    score = ranked[0]
    confidence = abs(score)
    for other_skew in ranked[1:]:
        if other_skew * score < 0:
            confidence = min(confidence, abs(score) - abs(other_skew))
    return score, confidence


def canonical(x, ndim: int | None = None) -> Canonical:
    """A canonical representative of the orbit of `x` under the far-field group.

    1. translation: the circular centroid of ``|x|^2`` goes to ``n // 2``;
    2. twin: of ``x`` and its twin, the one whose amplitude profile has a positive
       skewness along the axis where the skewness is largest in size (the twin
       negates every skewness);
    3. phase: ``sum(x |x|)`` is made real and positive.

    So ``canonical(g · x).x == canonical(x).x`` for every group element ``g``, up to
    the resampling of a sub-pixel translation.

    Parameters
    ----------
    x : complex, (*spatial) (torch or numpy), 2-D or 3-D
    ndim : int, optional
    """
    t, numpy_in = _as_torch(x)
    ndim = ndim or t.ndim
    t = _complex(t)
    centre = circular_centroid(t.real**2 + t.imag**2, ndim)
    n = torch.tensor(t.shape[-ndim:], dtype=torch.float64, device=t.device)
    shift = (n // 2 - centre + n / 2) % n - n / 2  # the shortest way round
    moved = translate(t, shift, ndim)
    # |x|^2 of a sub-pixel-shifted x is not exactly |x|^2 shifted (it has twice the
    # bandwidth): a few fixed-point corrections put the centroid on n // 2 to 1e-6 px,
    # so that the canonical form of a canonical form is itself
    for _ in range(4):
        m = moved.real**2 + moved.imag**2
        residual = (n // 2 - circular_centroid(m, ndim) + n / 2) % n - n / 2
        if float(residual.abs().max()) < 1e-6:
            break
        shift = shift + residual
        moved = translate(t, shift, ndim)
    score, confidence = _skew_score(moved, ndim)
    use_twin = score < 0
    if use_twin:
        moved = twin(moved, ndim)
    phase = -float(torch.angle(torch.sum(moved * moved.abs())))
    out = moved * complex(math.cos(phase), math.sin(phase))
    s = tuple(float(v) for v in shift)
    element = FarFieldElement(phase, tuple(-v for v in s) if use_twin else s, use_twin)
    return Canonical(_back(out, numpy_in), element, confidence)
