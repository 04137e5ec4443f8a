"""Parameters of ``phase.classic`` (the engine reads its defaults from them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import PipelineError
from ..runset import PhaseParams
from ._plan import parse


class RunVariant(BaseModel):
    """Parameters one run of ``phase.classic`` overrides (unset: the stage's)."""

    model_config = ConfigDict(extra="forbid")

    positivity: bool | None = Field(None, description="Keep max(Re, 0) inside the support.")
    shrinkwrap_threshold: float | tuple[float, float] | None = Field(
        None, description="The run's shrinkwrap threshold, or a range to draw it from.")

    @field_validator("shrinkwrap_threshold")
    @classmethod
    def _valid_threshold(cls, v):
        return None if v is None else valid_threshold(v)


def valid_threshold(v: float | tuple[float, float]) -> float | tuple[float, float]:
    """A shrinkwrap threshold in (0, 10), or a range [low, high] of such values."""
    values = v if isinstance(v, tuple | list) else (v,)
    if not all(0 < float(t) < 10 for t in values):
        raise ValueError(f"must be in (0, 10), got {v}")
    if len(values) == 2 and values[0] > values[1]:
        raise ValueError(f"a range [low, high] needs low <= high, got {list(v)}")
    return v


class ClassicParams(PhaseParams):
    """Parameters of ``phase.classic``."""

    schedule: str = Field(
        "(sup * ER**5 * HIO**40)**20 * ER**100",
        description="Plan expression, read left to right: '*' = then, '**n' = repeat n times; "
                    "operators ER, HIO, RAAR, ML (Poisson gradient step), sup (shrinkwrap "
                    "update) and detwin (halve the support).")
    runs: int = Field(4, ge=1, le=1024, description="Independent random starts, computed as "
                                                    "one batched tensor.")
    keep_best: int = Field(1, ge=1, description="Average this many best-ranked runs after "
                                                "aligning them (1: the best run alone).")
    average_within: float | None = Field(
        None, gt=0, description="Of the keep_best best-ranked runs, average only those whose "
        "free LLK is at most this much above the best run's, relative to the best's where "
        "that is above 1 (scale-free on processed data; None: all keep_best, which "
        "must not exceed runs; set: keep_best is an upper bound). The runs "
        "that fit the held-out pixels as well as the best differ from it mostly by noise, "
        "which their average reduces; a run that found a worse solution is left out.")
    generations: int = Field(1, ge=1, le=50, description="Generations of runs; each later one "
                             "starts from the runs of the previous one bred with its best "
                             "(cohere's sqrt_ab).")
    generation_schedules: list[str] | None = Field(
        None, description="Schedule of generations 2, 3, ... (default: 'schedule' again).")
    generation_start: Literal["bred", "support"] = Field(
        "bred", description="How generations 2, 3, ... start. 'bred': every run bred with "
        "the best (cohere's sqrt_ab). 'support': the best run is kept as it is (not "
        "iterated again; its LLK rows repeat its final values); the others start "
        "at random inside its support, closed by generation_closing pixels and with enclosed "
        "holes filled. A hidden centre (beamstop) dims the interior of a filled object, and "
        "shrinkwrap cuts it away; a fresh start in the repaired support fills it.")
    first_threshold_factor: float = Field(
        1.0, gt=0, le=1, description="With several generations: generation 1's shrinkwrap "
        "thresholds (every run's, run_variants included) times this. A looser first support "
        "keeps every part of an object of many parts (a logo, particles): under partial "
        "coherence a threshold of 0.1 cut the dimmer parts in the first updates and no run "
        "got them back, while 0.05 kept them in a support too large, which generation 2 "
        "(at the full threshold, started in that support) tightens.")
    generation_closing: int = Field(
        4, ge=0, le=64, description="'support' generations: morphological closing radius "
                                    "of the best support [pixels, one-pixel steps].")
    set_retries: int = Field(
        0, ge=0, le=10, description="When a run set is not solved (see set_agreement and "
        "set_retry_llk_free), compute the whole run set again (every generation) from "
        "fresh random starts, up to this many more times; the set with the lowest free LLK "
        "is kept. Behind a large beamstop a set of random starts can miss the object "
        "entirely.")
    set_agreement: float = Field(
        0.3, ge=0, le=2, description="Data whose photon scale is unknown (processed, see "
        "likelihood): a run set is solved when the two best accepted runs "
        "of its first generation, independent random starts, found the same object: their "
        "relative difference after alignment (global phase, translation, twin) is at most "
        "this. A test of the set's own runs, valid whatever the noise, its scale and the "
        "model's mismatch (processed data, partial coherence); 0: not used.")
    set_retry_llk_free: float | None = Field(
        3.0, gt=0, description="Data whose photon scale is known (counts or scaled counts, "
        "see likelihood): a run set is solved when its best free LLK is at most this (about "
        "1 means the held-out pixels are predicted to the noise); None: never.")
    max_seconds: float | None = Field(
        None, gt=0, description="Time budget of the stage [s]: no further run set is "
        "started once it is spent (a started set finishes); the best set so far is "
        "returned and the record says so (time_limited). None: no limit.")
    likelihood: Literal["auto", "poisson", "gaussian"] = Field(
        "auto", description="The likelihood of the LLKs that rank and judge the runs. "
        "'auto': recognised from the data (sipflow.physics.noise_model): Poisson for counts, "
        "Poisson on I / quantum for scaled counts (whole multiples of one value, e.g. a "
        "gain, or a symmetrised pattern), Gaussian for processed data whose photon scale "
        "is unknown. The summary says which.")
    photon_scale: float | None = Field(
        None, gt=0, description="The intensity of one photon, when the user knows it: the "
        "data are scored as counts of this size (None: recognised from the data).")
    beta: float = Field(0.9, gt=0, lt=1, description="Feedback parameter of HIO and RAAR.")
    positivity: bool = Field(False, description="Keep max(Re, 0) inside the support (for "
                                                "real, non-negative objects).")
    run_variants: list[RunVariant] = Field(
        [], description="Per-run overrides, cycled over the runs: run r uses "
        "run_variants[r % len(run_variants)], in every generation. E.g. [{positivity: true, "
        "shrinkwrap_threshold: 0.1}, {}]: every other run assumes a real, non-negative "
        "object, the free LLK ranks them all, so the held-out data decide between the two "
        "hypotheses ([]: every run uses the stage's parameters).")
    initial_support: Literal["auto", "circle", "box", "input"] = Field(
        "auto", description="'auto': autocorrelation thresholded per run in support_threshold "
                            "(see support_radius when q = 0 is hidden); 'circle'/'box' "
                            "of support_size; 'input': the dataset's support.")
    initial_object: Literal["random", "input"] = Field(
        "random", description="'input': every run starts from the dataset's obj (an earlier "
        "stage's result, e.g. phase.learned), runs after the first with 10 % complex noise "
        "added, supports from a shrinkwrap of it (or the dataset's support with "
        "initial_support 'input'); runs that fail from it restart at random; 'random': "
        "random starts.")
    support_radius: tuple[float, float] = Field(
        (0.1, 0.25), description="'auto' when q = 0 is hidden (a beamstop) and the "
                                 "autocorrelation support is smaller than twice a circle of "
                                 "radius 'low': a circle of radius drawn per run in [low, high] "
                                 "instead [fraction of each axis].")
    restarts: int = Field(2, ge=0, le=10, description="Rounds in which runs whose support "
                          "collapsed or exploded, or that were rejected, start again from a "
                          "fresh random start (new seed); 0: failed runs stay failed.")
    support_threshold: tuple[float, float] = Field(
        (0.09, 0.11), description="Initial support: autocorrelation above this fraction of its "
                                  "maximum, drawn uniformly per run in [low, high].")
    shrinkwrap_threshold: float | tuple[float, float] = Field(
        0.2, description="Shrinkwrap threshold, relative to the reference of "
                         "shrinkwrap_method; a range [low, high]: one drawn per run (the runs "
                         "try several, the free LLK ranks them).")
    shrinkwrap_method: Literal["max", "rms", "average"] = Field(
        "max", description="Reference of the threshold: the blurred amplitude's maximum "
                           "(Marchesini), its RMS or its mean inside the support (PyNX).")
    sigma_start: float = Field(2.0, gt=0, description="Shrinkwrap Gaussian width at the first "
                                                      "update [pixels].")
    sigma_end: float = Field(0.7, gt=0, description="Width at the last update [pixels]; "
                                                    "shrinks geometrically in between.")
    force_shrink: bool = Field(False, description="A shrinkwrap update may only remove pixels.")
    post_expand: list[int] = Field([], description="Dilate (+n) / erode (-n) the support by n "
                                   "pixels after each shrinkwrap, in order, e.g. [-1, 1].")
    psf_sigma: float = Field(1.0, ge=0, description="Partial coherence ('psf' in the "
                             "schedule): width of the Gaussian kernel the first update starts "
                             "from [detector pixels].")
    psf_iterations: int = Field(20, ge=1, le=200, description="Richardson-Lucy steps of the "
                                "coherence kernel per 'psf' in the schedule.")
    detwin_axis: int = Field(0, ge=0, le=2, description="Axis along which 'detwin' halves the "
                                                        "support.")
    max_outside: float = Field(0.1, gt=0, le=1, description="Reject runs with more than this "
                               "share of |P_M x|^2 outside their support.")
    @field_validator("shrinkwrap_threshold")
    @classmethod
    def _valid_threshold(cls, v: float | tuple[float, float]) -> float | tuple[float, float]:
        return valid_threshold(v)

    @field_validator("schedule")
    @classmethod
    def _valid_plan(cls, v: str) -> str:
        try:
            parse(v)
        except PipelineError as exc:  # reported by pydantic with the parameter's name
            raise ValueError(str(exc)) from None
        return v

    @field_validator("generation_schedules")
    @classmethod
    def _valid_plans(cls, v: list[str] | None) -> list[str] | None:
        for text in v or ():
            try:
                parse(text)
            except PipelineError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _consistent(self):
        lo, hi = self.support_threshold
        if not 0 < lo <= hi < 1:
            raise ValueError("support_threshold must satisfy 0 < low <= high < 1")
        lo, hi = self.support_radius
        if not 0 < lo <= hi <= 0.5:
            raise ValueError("support_radius must satisfy 0 < low <= high <= 0.5")
        if self.keep_best > self.runs and self.average_within is None:
            # with average_within, keep_best is an upper bound (a template's value stays
            # valid when a user asks for fewer runs)
            raise ValueError(f"keep_best ({self.keep_best}) cannot exceed runs ({self.runs})")
        return self

    def per_run(self) -> tuple[list[bool], list[float | tuple[float, float]]]:
        """Each run's positivity and shrinkwrap threshold (with ``run_variants`` applied)."""
        variants = self.run_variants or [RunVariant()]
        chosen = [variants[r % len(variants)] for r in range(self.runs)]
        return ([self.positivity if v.positivity is None else v.positivity for v in chosen],
                [self.shrinkwrap_threshold if v.shrinkwrap_threshold is None
                 else v.shrinkwrap_threshold for v in chosen])


#: The classical recipe of the ``default`` template's ``phase.classic`` (HIO then ER with a
#: tight shrinkwrap, half the runs assuming a real non-negative object, a second generation
#: in the best run's support, set retries, the near-best runs averaged), as a constant:
#: ``phase.double_dip``'s classical start uses it, and a test keeps ``default.yaml`` equal
#: to it. Why each value: the comments of ``templates/default.yaml``.
DEFAULT_RECIPE: dict = {
    "schedule": "(sup * HIO**50)**12 * (sup * ER**50)**4",
    "runs": 8,
    "shrinkwrap_threshold": [0.15, 0.3],
    "run_variants": [{"positivity": True, "shrinkwrap_threshold": 0.1}, {}],
    "sigma_end": 0.4,
    "support_threshold": [0.1, 0.5],
    "generations": 2,
    "generation_start": "support",
    "generation_schedules": ["HIO**200 * (sup * HIO**50)**8 * (sup * ER**50)**4"],
    "set_retries": 2,
    "set_retry_llk_free": 1.8,
    "max_seconds": 540,
    "keep_best": 4,
    "average_within": 0.1,
}
