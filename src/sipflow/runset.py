"""A phase stage's runs: rank, select, average, and write them in the phase schema.

Every phase method starts several independent runs and must then say which is best,
which are averaged, and record it so that summaries, ``sipflow batch`` and the viewer
can show it. :class:`RunSet` does that once for all of them::

    runs = RunSet(objects, supports, llk, iterations, llk_free=llk_free, status=status)
    out = runs.to_dataset(ds, stage="phase.mine", keep_best=4, within=0.1)

``out`` has ``obj``/``support`` (the best run, or the aligned average of the chosen
ones), ``obj_runs``/``support_runs``, the ``llk``/``llk_free`` curves and the
:class:`~sipflow.contracts.PhaseRecord` in ``attrs["phase"]``. The built-in stages use
the same functions (:func:`rank_runs`, :func:`select_runs`, :func:`average_runs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from pydantic import Field

from . import schema
from .contracts import PHASE_ATTR, PhaseRecord, StageParams
from .errors import ReconstructionError
from .symmetry import align, apply


class PhaseParams(StageParams):
    """Parameters every phase stage with independent runs shares (a base class).

    Held-out pixels, what is stored and recorded, and the size of a shaped support mean
    the same in ``phase.classic``, the deep priors and a plugin's phase stage.
    """

    free_fraction: float = Field(0.05, ge=0, le=0.2, description="Share of valid pixels held "
                                 "out in small islands for the free LLK that ranks the runs "
                                 "(0: none).")
    free_radius: float = Field(1.0, gt=0, description="Radius of a free-pixel island [pixels]. "
                               "Small islands keep the free LLK of a correct reconstruction "
                               "near 1 (PyNX uses 3 for ranking only).")
    llk_every: int = Field(10, ge=1, description="Record the LLK curves every this many "
                           "iterations.")
    preview_every: int = Field(0, ge=0, description="Attach a low-resolution preview of the "
                               "best run to progress records every this many iterations "
                               "(0: never).")
    keep_runs: bool = Field(True, description="Store every run as obj_runs/support_runs.")
    support_size: float = Field(0.25, gt=0, le=0.5, description="Radius (circle) or "
                                "half-width (box) of a shaped support [fraction of each "
                                "axis].")


def align_to(reference: np.ndarray, runs: np.ndarray, supports: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Align every run (and its support) to `reference` over twin, translation and phase.

    Parameters
    ----------
    reference : ndarray, complex, (*spatial)
    runs : ndarray, complex, (k, *spatial)
    supports : ndarray, bool, (k, *spatial)

    Returns
    -------
    aligned : ndarray, complex, (k, *spatial)
    aligned_supports : ndarray, bool, (k, *spatial)
    """
    objs, sups = [], []
    alignments = align(np.asarray(reference, np.complex128), np.asarray(runs, np.complex128))
    for a, sup in zip(alignments, supports, strict=True):
        # the support follows its object's twin and translation (not the phase)
        moved = apply(sup.astype(np.complex128), type(a.element)(0.0, a.element.shift,
                                                                 a.element.twin))
        objs.append(a.aligned)
        sups.append(moved.real > 0.5)
    return np.stack(objs).astype(runs.dtype), np.stack(sups)


def average_runs(runs: np.ndarray, supports: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of runs aligned to the first, and the majority vote of their supports.

    Parameters
    ----------
    runs : ndarray, complex, (k, *spatial)
        The best run first.
    supports : ndarray, bool, (k, *spatial)
    """
    aligned, sups = align_to(runs[0], runs, supports)
    return aligned.mean(axis=0), sups.mean(axis=0) > 0.5


def rank_runs(final_llk: Sequence[float], final_llk_free: Sequence[float],
              status: Sequence[str]) -> tuple[list[int], list[float]]:
    """The accepted runs, best first, and every run's score.

    A run's score is its final free LLK where finite (held-out pixels judge), else its
    final LLK; failed runs (``status != "ok"``) are not ranked.

    Returns
    -------
    ranked : list of int
        Accepted runs, lowest score first.
    scores : list of float
        Per run (NaN for a run with neither value).
    """
    scores = [float(f) if np.isfinite(f) else float(v)
              for v, f in zip(final_llk, final_llk_free, strict=True)]
    good = [i for i, s in enumerate(status) if s == "ok"]
    return [good[i] for i in np.argsort([scores[i] for i in good])], scores


def select_runs(ranked: Sequence[int], scores: Sequence[float], keep_best: int = 1,
                within: float | None = None) -> list[int]:
    """The runs to average: the `keep_best` best, those within `within` of the best's score.

    Parameters
    ----------
    ranked : sequence of int
        Runs, best first.
    scores : sequence of float
        Per run, the score that ranked them (lower is better).
    keep_best : int
        At most this many.
    within : float, optional
        Keep only runs whose score is at most the best's plus this, relative to the best
        score where that is above 1 (``best + within * max(|best|, 1)``): absolute for a
        free LLK near the noise level of counts, relative for data whose LLK scale is
        unknown (processed patterns). An upper bound on the count then, so that fewer
        runs still qualify.
    """
    chosen = list(ranked[:keep_best])
    if within is not None:
        best = scores[chosen[0]]
        chosen = [r for r in chosen if scores[r] <= best + within * max(abs(best), 1.0)]
    return chosen


def run_seeds(seed: int, generation: int, runs: int, attempt: int = 0) -> list[int]:
    """Seed of each run of a generation (run r is the same run in any batch size).

    Every phase stage seeds its runs with it, so run r of a seed is reproducible.

    ``attempt`` > 0 gives the seeds of the restarts of failed runs.
    """
    return [(seed * 7919 + generation * 104729 + r * 15485863 + attempt * 32452843) % 2**31
            for r in range(runs)]


def _final(curves: np.ndarray) -> np.ndarray:
    """Last finite value of each row (NaN for a row with none)."""
    out = np.full(curves.shape[0], np.nan)
    for r, row in enumerate(np.asarray(curves, float)):
        finite = np.nonzero(np.isfinite(row))[0]
        if finite.size:
            out[r] = row[finite[-1]]
    return out


@dataclass
class RunSet:
    """The runs of one phase stage.

    Attributes
    ----------
    objects : ndarray, complex, (run, *spatial)
        Each run's final object (centred, as the schema stores it).
    supports : ndarray, bool, (run, *spatial)
    llk : ndarray, float, (run, iter)
        Normalised LLK of the fitted pixels along the iterations (NaN where not computed).
    iterations : ndarray, int, (iter,)
        The iteration of each column of the curves.
    llk_free : ndarray, float, (run, iter), optional
        The same for the held-out pixels; None without held-out pixels.
    status : list of str, optional
        ``"ok"`` or why the run was rejected (default: all ok).
    """

    objects: np.ndarray
    supports: np.ndarray
    llk: np.ndarray
    iterations: np.ndarray
    llk_free: np.ndarray | None = None
    status: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.objects.shape[0]
        if not self.status:
            self.status = ["ok"] * k
        for name, arr in (("supports", self.supports), ("llk", self.llk),
                          ("llk_free", self.llk_free)):
            if arr is not None and arr.shape[0] != k:
                raise ValueError(f"RunSet: {name} has {arr.shape[0]} runs, objects {k}")
        if self.supports.shape != self.objects.shape:
            raise ValueError(f"RunSet: supports {self.supports.shape} do not match objects "
                             f"{self.objects.shape}")
        if len(self.status) != k or self.llk.shape[1] != len(self.iterations):
            raise ValueError("RunSet: one status per run and one iteration per curve column")

    @property
    def final_llk(self) -> np.ndarray:
        """Each run's last LLK."""
        return _final(self.llk)

    @property
    def final_llk_free(self) -> np.ndarray:
        """Each run's last free LLK (NaN without held-out pixels)."""
        if self.llk_free is None:
            return np.full(len(self.status), np.nan)
        return _final(self.llk_free)

    @property
    def ranked_by(self) -> str:
        """``"llk_free"`` when the held-out pixels rank the runs, else ``"llk"``."""
        return "llk_free" if np.isfinite(self.final_llk_free).any() else "llk"

    def rank(self) -> tuple[list[int], list[float]]:
        """Accepted runs best first, and every run's score (see :func:`rank_runs`).

        Raises
        ------
        ReconstructionError
            When no run was accepted.
        """
        ranked, scores = rank_runs(self.final_llk, self.final_llk_free, self.status)
        if not ranked:
            raise ReconstructionError("every run failed: " + "; ".join(
                f"run {i}: {s}" for i, s in enumerate(self.status)))
        return ranked, scores

    def select(self, keep_best: int = 1, within: float | None = None) -> list[int]:
        """The runs the result is made of, best first (see :func:`select_runs`)."""
        ranked, scores = self.rank()
        return select_runs(ranked, scores, keep_best, within)

    def average(self, chosen: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The object and support of the `chosen` runs: the first's, or their aligned mean."""
        chosen = list(chosen)
        if len(chosen) == 1:
            return self.objects[chosen[0]], self.supports[chosen[0]]
        obj, sup = average_runs(self.objects[chosen], self.supports[chosen])
        return obj.astype(self.objects.dtype), sup

    def record(self, stage: str, chosen: Sequence[int]) -> PhaseRecord:
        """The :class:`~sipflow.contracts.PhaseRecord` of these runs with `chosen` kept."""
        ranked, _ = self.rank()
        rank_of = {r: i for i, r in enumerate(ranked)}
        return PhaseRecord(stage=stage, best_run=int(ranked[0]), ranked_by=self.ranked_by,
                           run_status=list(self.status),
                           run_rank=[rank_of.get(r) for r in range(len(self.status))],
                           final_llk=[float(v) for v in self.final_llk],
                           final_llk_free=[float(v) for v in self.final_llk_free],
                           averaged_runs=[int(r) for r in chosen])

    def to_dataset(self, ds: xr.Dataset, stage: str, *, keep_best: int = 1,
                   within: float | None = None, keep_runs: bool = True) -> xr.Dataset:
        """`ds` with these runs written in the phase schema and ``attrs["phase"]``.

        An earlier phase stage's per-run arrays and curves are replaced, not mixed.

        Parameters
        ----------
        ds : xarray.Dataset
            The stage's input.
        stage : str
            The stage's registered name (recorded).
        keep_best, within
            Which runs make the result (:meth:`select`).
        keep_runs : bool
            Also store ``obj_runs`` and ``support_runs``.
        """
        chosen = self.select(keep_best, within)
        obj, support = self.average(chosen)
        rdims = schema.real_dims(self.objects.ndim - 1)
        run_dims = (schema.RUN, schema.ITER)
        out = schema.without_phase_results(ds)
        out[schema.OBJ] = (rdims, obj)
        out[schema.SUPPORT] = (rdims, support)
        if keep_runs:
            out[schema.OBJ_RUNS] = ((schema.RUN, *rdims), self.objects)
            out[schema.SUPPORT_RUNS] = ((schema.RUN, *rdims), self.supports)
        out[schema.LLK] = (run_dims, np.asarray(self.llk, np.float32))
        if self.llk_free is not None:
            out[schema.LLK_FREE] = (run_dims, np.asarray(self.llk_free, np.float32))
        out = out.assign_coords({schema.ITER: np.asarray(self.iterations, np.int64),
                                 schema.RUN: np.arange(len(self.status))})
        out.attrs = dict(ds.attrs) | {PHASE_ATTR: self.record(stage, chosen).to_attrs()}
        return out
