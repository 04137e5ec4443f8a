"""What the engine is told (EngineSettings) and what it returns (EngineResult)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ._params import ClassicParams

#: plan steps that are not iterations (support updates, the coherence kernel's update)
SUPPORT_STEPS = ("sup", "detwin", "psf")


#: guard on the support size, as a fraction of the array (docs/design.md)
SUPPORT_FRACTION_RANGE = (1e-4, 0.7)


@dataclass(frozen=True)
class EngineSettings:
    """Numerical settings of :func:`iterate`.

    The fields that are also ``phase.classic`` parameters have no defaults of their
    own: build settings with :meth:`from_params`, which takes them (defaults, bounds
    and documentation) from :class:`~sipflow.reconstruct.ClassicParams`.
    """

    beta: float
    positivity: bool
    initial_support: str
    support_size: float
    support_threshold: tuple[float, float]
    support_radius: tuple[float, float]
    shrinkwrap_threshold: float | tuple[float, float]
    shrinkwrap_method: str
    sigma_start: float
    sigma_end: float
    force_shrink: bool
    post_expand: tuple[int, ...]
    detwin_axis: int
    psf_sigma: float
    psf_iterations: int
    llk_every: int
    preview_every: int
    progress_every: int = 50
    preview_size: int = 64
    #: runs computed together; 0: all on a GPU, on CPU groups of at most `chunk_bytes`
    #: per thread per complex array, each taken through the plan up to the next progress
    #: record before the next group (so its arrays stay in cache)
    batch_chunk: int = 0
    chunk_bytes: float = 2**20
    #: the likelihood of the LLKs and the intensity of one count it divides by
    #: (:class:`sipflow.physics.NoiseModel`)
    score_likelihood: str = "poisson"
    score_scale: float = 1.0

    @classmethod
    def from_params(cls, params: Any = None, ndim: int = 3, **engine_only: Any
                    ) -> EngineSettings:
        """Settings from a ``ClassicParams`` (default: its defaults) plus engine-only fields.

        Parameters
        ----------
        params : ClassicParams, optional
        ndim : int
            Spatial dimensions of the data (bounds ``detwin_axis``).
        **engine_only
            ``progress_every``, ``preview_size``, ``batch_chunk``, ``chunk_bytes``,
            ``score_likelihood``, ``score_scale``.
        """
        params = params if params is not None else ClassicParams()
        shared = {f.name for f in fields(cls)} & set(type(params).model_fields)
        values = {name: getattr(params, name) for name in shared}
        values["post_expand"] = tuple(values["post_expand"])
        values["support_threshold"] = tuple(values["support_threshold"])
        values["support_radius"] = tuple(values["support_radius"])
        if isinstance(values["shrinkwrap_threshold"], list | tuple):
            values["shrinkwrap_threshold"] = tuple(values["shrinkwrap_threshold"])
        values["detwin_axis"] = min(values["detwin_axis"], ndim - 1)
        return cls(**values, **engine_only)


@dataclass
class EngineResult:
    """What :func:`iterate` returns (torch tensors on the compute device, centred).

    Attributes
    ----------
    x : complex (runs, *spatial)
        Final objects, each rolled so that its support's centroid is at n//2.
    support : bool (runs, *spatial)
    llk_iterations : list of int
        Iteration numbers at which the LLKs were evaluated.
    llk : real (runs, len(llk_iterations))
        Normalised Poisson LLK on the projected (measured, not free) pixels.
    llk_free : real (runs, len(llk_iterations))
        The same on the held-out free pixels (NaN when there are none).
    outside_fraction : real (runs,)
        Share of ``|P_M x|^2`` outside the support at the end.
    status : list of str
        ``"ok"`` or why the run was stopped.
    kernel : real (runs, *spatial) or None
        Each run's partial-coherence kernel (centred: origin at n//2), when the plan
        has ``psf``.
    """

    x: torch.Tensor
    support: torch.Tensor
    llk_iterations: list[int]
    llk: torch.Tensor
    llk_free: torch.Tensor
    outside_fraction: torch.Tensor
    status: list[str] = field(default_factory=list)
    kernel: torch.Tensor | None = None
