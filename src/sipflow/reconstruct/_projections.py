"""Projections and the ER / HIO / RAAR updates, batched over runs (pure torch).

Shapes: ``x``, ``d`` are complex ``(runs, *spatial)``; ``support`` is bool
``(runs, *spatial)``; ``amplitude`` (the measured sqrt(I)) is real and ``mask``
bool, both ``(*spatial)`` and broadcast over runs. All arrays are unshifted
(origin at index 0).
"""

from __future__ import annotations

import math

import torch

from ..physics import blur, farfield, inverse_farfield, poisson_nll


def cwhere(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``torch.where`` for complex tensors, through a real view of the same element size.

    On CPU, ``torch.where`` on complex64 is several times slower than on float64; a
    complex64 element is reinterpreted as one float64 (bits unchanged).
    """
    if a.dtype == torch.complex64:
        other = b.view(torch.float64) if isinstance(b, torch.Tensor) else float(b)
        return torch.where(cond, a.view(torch.float64), other).view(torch.complex64)
    ar = torch.view_as_real(a)
    br = torch.view_as_real(b) if isinstance(b, torch.Tensor) else float(b)
    return torch.view_as_complex(torch.where(cond.unsqueeze(-1), ar, br).contiguous())


def modulus_projection(x: torch.Tensor, amplitude: torch.Tensor, mask: torch.Tensor, ndim: int,
                       eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace Fourier magnitudes by the measured ones on valid pixels (reference form).

    .. math:: P_M x = F^{-1}\\left[ F x \\cdot \\frac{\\sqrt{I}}{\\max(|F x|, \\epsilon)}
              \\right]_{\\text{mask}}

    Unmeasured pixels (``mask`` False) keep their current value. This is the plain
    formulation, kept as the definition that :class:`FourierModulus` (what the
    iteration loop runs) is tested against.

    Returns
    -------
    d : torch.Tensor
        The projected object, same shape as `x`.
    calc : torch.Tensor
        ``|F x|`` before projection (real, same shape), for figures of merit.
    """
    f = farfield(x, ndim)
    mag = f.abs()
    scale = torch.where(mask, amplitude / mag.clamp_min(eps), 1.0)
    return inverse_farfield(f * scale, ndim), mag


class FourierModulus:
    """The modulus projection as the iteration loop runs it: few passes, no complex ``abs``.

    Mathematically the same as :func:`modulus_projection`. It uses unnormalised FFTs
    (``|f| = sqrt(N) |F x|`` for N pixels) and folds sqrt(N) and the mask into two
    precomputed real arrays, so that one projection is: FFT, ``|f|^2`` from the real
    and imaginary parts (two fused multiply-adds), an in-place ``rsqrt``, one fused
    multiply-add for the scale into the same buffer, an in-place complex-by-real
    multiply, inverse FFT. On CPU torch, complex ``abs``
    and ``where`` each cost about as much as an FFT of the same array; these ops do
    not, and the in-place ones reuse memory that is already in cache.

    Parameters
    ----------
    amplitude : torch.Tensor, real, (*spatial)
        Measured ``sqrt(I)``, unshifted.
    valid : torch.Tensor, bool, (*spatial)
        Pixels projected on (measured and not held out), unshifted.
    """

    def __init__(self, amplitude: torch.Tensor, valid: torch.Tensor) -> None:
        self.ndim = amplitude.ndim
        self.dims = tuple(range(-self.ndim, 0))
        self.n = float(amplitude.numel())
        self.target = torch.where(valid, amplitude, 0.0) * self.n**0.5
        self.keep = (~valid).to(amplitude.dtype)
        self.tiny = torch.tensor(torch.finfo(amplitude.dtype).tiny, dtype=amplitude.dtype,
                                 device=amplitude.device)

    def __call__(self, x: torch.Tensor, with_calc: bool = False,
                 kernel_f: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Project `x` (complex, (runs, *spatial)) on the measured magnitudes.

        With `kernel_f` (the FFT of each run's partial-coherence kernel, origin at
        index 0, (runs, *spatial)), the model is ``K ⊛ |F x|^2``: every Fourier
        amplitude is scaled by ``sqrt(I / (K ⊛ |F x|^2))`` (PyNX's and cohere's
        partially coherent modulus constraint).

        Returns
        -------
        d : torch.Tensor
            The projected object, same shape as `x`.
        calc : torch.Tensor or None
            With `with_calc`, ``|F x|^2`` before projection (real, same shape, photons),
            for figures of merit.
        """
        f = torch.fft.fftn(x, dim=self.dims)
        # |f|^2 = N |F x|^2, plus the smallest normal number so that rsqrt stays finite
        power = torch.addcmul(self.tiny, f.real, f.real).addcmul_(f.imag, f.imag)
        if kernel_f is not None:
            power = blur(power, kernel_f, self.ndim).add_(self.tiny)
        calc = power / self.n if with_calc else None
        scale = torch.addcmul(self.keep, self.target, power.rsqrt_(), out=power)
        return torch.fft.ifftn(f.mul_(scale), dim=self.dims), calc


def update_factors(name: str, support: torch.Tensor, beta: float, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real factors ``a``, ``b`` that write an update as ``x' = a d + b x``.

    ER, HIO and RAAR (without positivity) are linear in (d, x) with coefficients that
    depend only on the support S: ``a = S + k (1 - S)``, ``b = c (1 - S)`` with
    (k, c) = (0, 0) for ER, (-beta, 1) for HIO and (1 - 2 beta, beta) for RAAR (see
    :func:`update`). Computed once per support, they turn the update into two fast
    multiply(-add)s instead of a ``where``.

    Returns
    -------
    a : torch.Tensor, real, shape of `support`
    b : torch.Tensor or None
        None for ER (``b = 0``).
    """
    coefficients = {"ER": (0.0, 0.0), "HIO": (-beta, 1.0), "RAAR": (1 - 2 * beta, beta)}
    if name not in coefficients:
        raise ValueError(f"unknown update {name!r}")
    k, c = coefficients[name]
    s = support.to(dtype)
    a = s * (1 - k) + k if k else s
    b = (1 - s) * c if c else None
    return a, b


def apply_update(d: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                 b: torch.Tensor | None) -> torch.Tensor:
    """``a d + b x`` (see :func:`update_factors`), computed in the buffer of `d`."""
    d.mul_(a)
    return d if b is None else d.addcmul_(x, b)


def update(name: str, x: torch.Tensor, d: torch.Tensor, support: torch.Tensor, beta: float,
           positivity: bool | torch.Tensor) -> torch.Tensor:
    """One ER / HIO / RAAR update from the current `x` and its projection `d`.

    ============  ==========  ==========================
    algorithm     inside S    outside S
    ============  ==========  ==========================
    ER            d           0
    HIO           d           x - beta d
    RAAR          d           (1 - 2 beta) d + beta x
    ============  ==========  ==========================

    With `positivity` the object is taken as real and non-negative: inside the support
    ``d`` is replaced by its projection on the non-negative reals, ``max(Re d, 0)``;
    outside, the algorithm's update is unchanged. (Fienup's variant, which treats
    in-support pixels with Re(d) < 0 as outside and feeds them back, is unstable when a
    beamstop hides q = 0: the low-frequency modes the data do not constrain make large
    parts of the object negative, their feedback grows without bound into bright spikes,
    and shrinkwrap collapses onto them — measured on every run of a simulated pattern
    with a 3-speckle beamstop.) Without `positivity` the loop runs the same update as
    :func:`update_factors` / :func:`apply_update`. `positivity` may also be a bool
    tensor of shape (runs,), one flag per run of a batch `x` (runs, *spatial).
    """
    if isinstance(positivity, torch.Tensor):  # per run: only those runs' supports
        inside = support & positivity.reshape((-1,) + (1,) * (support.ndim - 1))
    else:
        inside = support if positivity else None
    if inside is not None:
        d = cwhere(inside, torch.complex(d.real.clamp_min(0), torch.zeros_like(d.real)), d)
    if name == "ER":
        return cwhere(support, d, 0.0)
    if name == "HIO":
        return cwhere(support, d, torch.add(x, d, alpha=-beta))
    if name == "RAAR":
        return cwhere(support, d, torch.add(d * (1 - 2 * beta), x, alpha=beta))
    raise ValueError(f"unknown update {name!r}")


class PoissonScore:
    """Normalised LLK of every run on the projected and on the free pixels.

    The fused form of :func:`sipflow.physics.normalised_llk` (projected pixels, dof =
    pixels minus support size) and :func:`sipflow.physics.free_llk`, tested equal to
    them, in fewer passes: the data-only part ``o ln o - o`` of the Poisson deviance is
    computed once, and both sums are one matrix-vector product with the two pixel sets.

    Parameters
    ----------
    intensity : torch.Tensor, real, (*spatial)
        Observed intensity, unshifted.
    valid, held : torch.Tensor, bool, (*spatial)
        Projected pixels and held-out (free) pixels, unshifted.
    scale : float
        The intensity of one count (:class:`sipflow.physics.NoiseModel`): observed and
        calculated intensities are divided by it, so that scaled counts are scored as
        the counts they are.
    kind : {"poisson", "gaussian"}
        The likelihood (``gaussian``: data whose photon scale is unknown).
    """

    def __init__(self, intensity: torch.Tensor, valid: torch.Tensor, held: torch.Tensor,
                 scale: float = 1.0, kind: str = "poisson") -> None:
        if kind not in ("poisson", "gaussian"):
            raise ValueError(f"unknown likelihood {kind!r}; choose poisson or gaussian")
        self.scale, self.kind = float(scale), kind
        self.obs = intensity / self.scale if self.scale != 1 else intensity
        if kind == "poisson":
            self.data_part = torch.where(self.obs > 0, self.obs * torch.log(
                self.obs.clamp_min(1e-30)), 0.0) - self.obs
        else:
            self.weight = 0.5 / (self.obs + 1)
        # (2, pixels): multiplied from the left, MKL's fast layout for this product
        self.sets = torch.stack([valid.reshape(-1), held.reshape(-1)]).to(intensity.dtype)
        self.n_valid = valid.sum()
        self.n_free = held.sum()
        #: whether any pixel is held out (else the free LLK is NaN)
        self.has_free = bool(self.n_free > 0)

    def __call__(self, calc: torch.Tensor, support_size: torch.Tensor,
                 eps: float = 1e-24) -> tuple[torch.Tensor, torch.Tensor]:
        """LLKs from ``calc = |F x|^2`` (real, (runs, *spatial); overwritten) and support sizes.

        Returns
        -------
        llk, llk_free : torch.Tensor, real, (runs,)
            ``llk_free`` is NaN when no pixel is held out.
        """
        if self.scale != 1:
            calc.div_(self.scale)
        c = calc.clamp_min_(eps)
        if self.kind == "poisson":
            term = torch.addcmul(self.data_part, self.obs, torch.log(c), value=-1).add_(c)
        else:
            term = c.sub_(self.obs).square_().mul_(self.weight)
        sums = torch.mm(self.sets, term.reshape(term.shape[0], -1).T).T  # (runs, 2)
        dof = (self.n_valid - support_size).to(c.dtype).clamp_min(1)
        llk = 2 * sums[:, 0] / dof
        if self.has_free:
            free = 2 * sums[:, 1] / self.n_free.to(c.dtype)
        else:
            free = torch.full_like(llk, math.nan)
        return llk, free


def poisson_gradient(x: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor,
                     support: torch.Tensor, ndim: int, eps: float = 1e-12
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hand-written gradient of the Poisson NLL, restricted to the support.

    :math:`g = S \\cdot F^{-1}[(1 - I/|Fx|^2) F x]`, which is half the autograd gradient
    of :func:`sipflow.physics.poisson_nll` of ``|F x|^2`` (torch's convention for real
    functions of complex tensors); a test checks that.

    Returns
    -------
    g : torch.Tensor, complex, shape of `x`
    f : torch.Tensor
        ``F x``.
    calc : torch.Tensor
        ``|F x|^2`` (clamped at `eps`).
    """
    f = farfield(x, ndim)
    calc = (f.real**2 + f.imag**2).clamp_min(eps)
    resid = torch.where(mask, (1 - intensity / calc) * f, torch.zeros_like(f))
    g = torch.where(support, inverse_farfield(resid, ndim), torch.zeros_like(x))
    return g, f, calc


def ml_step(x: torch.Tensor, intensity: torch.Tensor, mask: torch.Tensor,
            support: torch.Tensor, ndim: int, eps: float = 1e-12
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Poisson maximum-likelihood gradient step inside the support.

    Minimises :math:`L(x) = \\sum_{mask} |Fx|^2 - I \\ln |Fx|^2` along the steepest
    descent direction restricted to the support,
    :math:`g = S \\cdot F^{-1}[(1 - I/|Fx|^2) F x]`, with the step from a quadratic
    fit of :math:`L` (one extra FFT). Steps are per run.

    Returns
    -------
    x : torch.Tensor
        Updated object.
    calc : torch.Tensor
        ``|F x|^2`` before the step, for figures of merit.
    """
    g, f, mag2 = poisson_gradient(x, intensity, mask, support, ndim, eps)
    direction = -g
    fd = farfield(direction, ndim)
    dims = tuple(range(-ndim, 0))
    view = (-1,) + (1,) * ndim
    l0 = poisson_nll(mag2, intensity, mask, ndim, eps)
    slope = -2 * (g.real**2 + g.imag**2).sum(dim=dims)  # dL/dgamma at 0
    trial = 1.0
    moved = f + trial * fd
    l1 = poisson_nll(moved.real**2 + moved.imag**2, intensity, mask, ndim, eps)
    curvature = 2 * (l1 - l0 - slope * trial) / trial**2
    step = torch.where(curvature > 0, -slope / curvature.clamp_min(1e-30),
                       torch.full_like(slope, trial))
    step = step.clamp(0, 4 * trial)
    return x + step.reshape(view).to(x.dtype) * direction, mag2
