"""What every phase stage records about its runs: ``attrs["phase"]``, one typed record.

Reports (``sipflow run``/``evaluate``), ``sipflow batch``'s table and the napari Result
widget read this record and nothing stage-specific, so a plugin's phase stage shows up
there as soon as it writes one (:meth:`sipflow.runset.RunSet.to_dataset` does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: the attrs key of the record
PHASE_ATTR = "phase"


def _number(value: Any) -> float | None:
    """A finite float, or None (NaN, inf and None alike: JSON has no NaN)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class PhaseRecord:
    """The runs of the last phase stage, as stored in ``attrs["phase"]``.

    Attributes
    ----------
    stage : str
        Registered name of the stage that wrote it (``phase.classic``, a plugin's).
    best_run : int
        Index of the run the result is (or is aligned to, when averaged).
    ranked_by : str
        What ranked the runs: ``"llk_free"`` (held-out pixels), ``"llk"``, ``"loss"``.
    run_status : list of str
        Per run: ``"ok"`` or why it was rejected.
    run_rank : list of int or None
        Per run: its place in the ranking (0 = best), None when not ranked.
    final_llk, final_llk_free : list of float or None
        Per run: the normalised LLK of the fitted and the held-out pixels at the end
        (None where undefined); an ideal fit of Poisson counts is ~1.
    averaged_runs : list of int
        The runs averaged into the result (one run: not averaged).
    """

    stage: str
    best_run: int
    ranked_by: str
    run_status: list[str]
    run_rank: list[int | None]
    final_llk: list[float | None]
    final_llk_free: list[float | None] = field(default_factory=list)
    averaged_runs: list[int] = field(default_factory=list)

    @property
    def runs(self) -> int:
        """Number of runs."""
        return len(self.run_status)

    @property
    def runs_ok(self) -> int:
        """Number of accepted runs."""
        return sum(s == "ok" for s in self.run_status)

    @property
    def best_llk(self) -> float | None:
        """Final LLK of the best run."""
        return self.final_llk[self.best_run] if self.final_llk else None

    @property
    def best_llk_free(self) -> float | None:
        """Final free LLK of the best run (None without held-out pixels)."""
        return self.final_llk_free[self.best_run] if self.final_llk_free else None

    def to_attrs(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become None)."""
        out = asdict(self)
        for key in ("final_llk", "final_llk_free"):
            out[key] = [_number(v) for v in out[key]]
        return out

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> PhaseRecord | None:
        """The record of a result's ``attrs`` (None when no phase stage wrote one)."""
        raw = attrs.get(PHASE_ATTR)
        if not isinstance(raw, dict):
            return None
        try:
            return cls(stage=str(raw["stage"]), best_run=int(raw["best_run"]),
                       ranked_by=str(raw.get("ranked_by", "llk")),
                       run_status=[str(s) for s in raw["run_status"]],
                       run_rank=[None if r is None else int(r) for r in raw.get("run_rank", [])],
                       final_llk=[_number(v) for v in raw.get("final_llk", [])],
                       final_llk_free=[_number(v) for v in raw.get("final_llk_free", [])],
                       averaged_runs=[int(r) for r in raw.get("averaged_runs", [])])
        except (KeyError, TypeError, ValueError):  # written by something else: not a record
            return None

    def summary_rows(self) -> list[tuple[str, str]]:
        """The rows every phase stage gets in a summary: runs accepted and the best's LLKs."""
        rows = [(f"{self.stage} runs ok", f"{self.runs_ok}/{self.runs} (best: run "
                                          f"{self.best_run}, ranked by {self.ranked_by})")]
        if len(self.averaged_runs) > 1:
            rows.append((f"{self.stage} averaged",
                         f"runs {', '.join(map(str, self.averaged_runs))} (aligned to the best)"))
        for name, value in (("LLK", self.best_llk), ("free LLK", self.best_llk_free)):
            if value is not None:
                rows.append((f"{self.stage} {name}", f"{value:.4g}"))
        return rows
