"""Realistic forward CDI: a beamstop hiding several speckles, gaps, dead pixels, q = 0 off
the array centre, Poisson noise (``sipflow.simulate``), through the shipped templates.

Bounds are the selected run's relative error modulo global phase, translation and twin
(``sipflow.symmetry.align``) and its support's overlap (IoU) with the true support. The
seeds are the first ones of ``benchmarks/bench_robustness.py``; the share that must pass
follows what that benchmark measured (benchmarks/README.md), so a failure means the
support update, the restarts or the ranking got worse.
"""

from __future__ import annotations

import numpy as np
import pytest

import sipflow
from sipflow import schema
from sipflow.errors import PipelineError
from sipflow.pipeline import Pipeline
from sipflow.reconstruct import Classic
from sipflow.reconstruct._support import closed_support
from sipflow.report import summary_rows
from sipflow.symmetry import align
from sipflow.templates import stage_params
from sipflow.testing import simulated_dataset

#: the geometry of the benchmark: 256², q = 0 at (+3, -4) px, 3-px gaps, 2 % dead pixels
REALISTIC = {"photons": 1e8, "gaps": 3, "dead_pixels": 0.02, "centre_offset": (3, -4)}


def _lithograph(seed: int, beamstop: float):
    return simulated_dataset((256, 256), kind="lithograph", extent=0.28, phase_amplitude=0.0,
                             beamstop=beamstop, seed=seed, **REALISTIC)


def _score(out) -> tuple[float, float]:
    truth = out[schema.OBJ_TRUE].values.astype(np.complex128)
    a = align(truth, out[schema.OBJ].values.astype(np.complex128))
    st = np.abs(truth) > 0.1 * np.abs(truth).max()
    sr = np.abs(a.aligned) > 0.1 * np.abs(a.aligned).max()
    return a.error, float((st & sr).sum() / (st | sr).sum())


@pytest.mark.slow
def test_cdi_template_recovers_a_lithograph_behind_a_three_speckle_beamstop():
    """The case of the real-CDI report: a beamstop of radius 10 px (about three speckles)
    over a sharp, non-convex lithographed object. Before the positivity projection and
    the circular first supports, every run of every seed collapsed or was wrong."""
    results = [_score(sipflow.run_pipeline("cdi", _lithograph(seed, 10.0), seed=seed,
                                           device="cpu")) for seed in (1, 2)]
    # the benchmark solves 10 of 10 seeds at these 1e8 photons
    assert all(e < 0.1 and iou > 0.9 for e, iou in results), results


@pytest.mark.slow
def test_cdi_template_recovers_a_filled_hexagon_behind_a_one_speckle_beamstop():
    """A filled convex object sends ~80 % of its power into the central lobe that a
    3-px beamstop hides; from its loose autocorrelation support shrinkwrap collapsed in
    every start of this seed (9 starts, restarts included) and in most starts of the
    others; the template's first supports now include circles."""
    ds = simulated_dataset((256, 256), kind="hexagon", extent=0.3, phase_amplitude=0.0,
                           beamstop=3.0, seed=2, **REALISTIC)
    error, iou = _score(sipflow.run_pipeline("cdi", ds, seed=2, device="cpu"))
    assert error < 0.1 and iou > 0.9, (error, iou)


@pytest.mark.slow
def test_default_template_recovers_a_lithograph_behind_a_one_speckle_beamstop():
    """Radius 3 px: the filled autocorrelation kept ~3 % of the array for an object whose
    autocorrelation covers 12 %, and no run survived; half the runs now start from
    circles."""
    error, iou = _score(sipflow.run_pipeline("default", _lithograph(1, 3.0), seed=1,
                                             device="cpu"))
    assert error < 0.1 and iou > 0.9, (error, iou)


@pytest.mark.slow
def test_default_template_recovers_a_complex_object_behind_a_one_speckle_beamstop():
    """A compact blob with a 1-rad phase: nothing but its support pins it (no positivity)."""
    ds = simulated_dataset((256, 256), kind="blob", extent=0.3, phase_amplitude=1.0,
                           beamstop=3.0, seed=1, **REALISTIC)
    error, iou = _score(sipflow.run_pipeline("default", ds, seed=1, device="cpu"))
    assert error < 0.1 and iou > 0.9, (error, iou)


@pytest.mark.slow
def test_default_template_finds_the_exact_support_of_a_lithograph_behind_three_speckles():
    """The reported case, without assuming a real object. With a complex object the
    support is the only constraint on the hidden low frequencies: the true support grown
    by one pixel leaves an error of 0.08-0.13, and a blur of 0.7 px with a threshold of 0.1-0.2
    of the maximum found exactly that support in every run (error 0.09-0.17; the earlier
    `default` recipe collapsed every run to 40 % of the object, error > 1). The final
    blur of 0.4 px and thresholds of 0.15-0.3 find the exact support. (`default`'s
    positivity runs are left out: positivity pins the object with a looser support.)"""
    complex_only = {"stages": ["prep.standard", {"use": "phase.classic", "with": {
        **stage_params("default", "phase.classic"), "run_variants": []}}]}
    out = sipflow.run_pipeline(complex_only, _lithograph(1, 10.0), seed=1, device="cpu")
    error, iou = _score(out)
    assert error < 0.06 and iou > 0.95, (error, iou)
    true = out[schema.SUPPORT_TRUE].values.sum()
    assert abs(int(out[schema.SUPPORT].values.sum()) - true) < 0.02 * true


@pytest.mark.parametrize(("kind", "phase", "beamstop", "seed", "positive"),
                         [("cells", 0.0, 10.0, 3, True), ("blob", 1.0, 3.0, 1, False)])
@pytest.mark.slow
def test_default_template_lets_the_free_llk_choose_positivity(kind, phase, beamstop, seed,
                                                             positive):
    """`default`'s runs alternate between a real, non-negative object (positivity) and a
    complex one (`run_variants`); the free LLK picks the hypothesis. Real cells behind
    three speckles (86 % of their power hidden): with complex runs only, shrinkwrap
    carved every run of this seed's three run sets to 40-80 % of the object (error 0.97,
    free LLK 18-29); a positivity run solves it. A complex blob (1-rad phase) behind one
    speckle: a complex run wins."""
    ds = simulated_dataset((256, 256), kind=kind, extent=0.3, phase_amplitude=phase,
                           beamstop=beamstop, seed=seed, **REALISTIC)
    out = sipflow.run_pipeline("default", ds, seed=seed, device="cpu")
    error, iou = _score(out)
    assert error < 0.1 and iou > 0.9, (error, iou)
    pc = out.attrs["phase_classic"]
    assert pc["run_positivity"] == [True, False] * 4
    assert pc["best_run_positivity"] is positive
    model = dict(summary_rows(out))["object model"]
    assert model.startswith("real" if positive else "complex"), model


@pytest.mark.parametrize(("seed", "what"), [(2, "averaged"), (7, "run sets")])
@pytest.mark.slow
def test_default_template_solves_a_complex_blob_at_low_counts(seed, what):
    """A complex blob at 1e7 photons behind one speckle: the two seeds of ten that the
    `default` template missed. Seed 2: its best run ended at error 0.125 (free LLK 1.38)
    beside a run at 0.08 (1.42): both fit the held-out pixels to the noise, and their
    average (`average_within`) reaches 0.08. Seed 7: every run of the set stalled at error
    0.21-0.28 with the right support (free LLK 2.0-2.7); a set above 1.8 is computed again
    and the second one solves it (free LLK 1.31)."""
    ds = simulated_dataset((256, 256), kind="blob", extent=0.3, phase_amplitude=1.0,
                           beamstop=3.0, seed=seed, **{**REALISTIC, "photons": 1e7})
    out = sipflow.run_pipeline("default", ds, seed=seed, device="cpu")
    error, iou = _score(out)
    assert error < 0.1 and iou > 0.9, (error, iou)
    pc = out.attrs["phase_classic"]
    free = pc["final_llk_free"]
    assert all(free[r] <= free[pc["best_run"]] + 0.1 for r in pc["averaged_runs"])
    assert what in dict(summary_rows(out))


def test_restarts_replace_failed_runs_and_keep_the_good_ones():
    """Runs that fail are computed again from new seeds; the runs that were accepted at
    their first start are the same runs (same seed, same result) with or without restarts."""
    ds = sipflow.run_pipeline({"stages": ["prep.standard"]}, _lithograph(0, 10.0), seed=0,
                              device="cpu")
    # a strict max_outside rejects some of these runs (12-18 % of their power outside)
    params = {"runs": 6, "schedule": "(sup * ER**5 * HIO**40)**8 * ER**50",
              "shrinkwrap_threshold": 0.3, "max_outside": 0.14}
    once = Classic()(ds, {**params, "restarts": 0}, sipflow.Context(seed=3, device="cpu"))
    again = Classic()(ds, {**params, "restarts": 2}, sipflow.Context(seed=3, device="cpu"))
    first, second = once.attrs["phase_classic"], again.attrs["phase_classic"]
    failed = [r for r, s in enumerate(first["run_status"]) if s != "ok"]
    assert failed, "this case must fail some runs at their first start"
    assert first["run_attempts"] == [1] * 6
    for r in range(6):
        if r in failed:
            assert second["run_attempts"][r] > 1
        else:
            assert second["run_attempts"][r] == 1
            np.testing.assert_array_equal(once[schema.OBJ_RUNS].values[r],
                                          again[schema.OBJ_RUNS].values[r])
    assert (sum(s == "ok" for s in second["run_status"])
            > sum(s == "ok" for s in first["run_status"]))
    assert second["success_rate"] == pytest.approx(
        second["runs_accepted"] / sum(second["run_attempts"]))


def test_a_hidden_centre_starts_runs_from_circles_when_the_autocorrelation_is_too_small():
    """With q = 0 masked behind a three-speckle beamstop, the filled autocorrelation keeps
    about 1 % of the array, less than the smallest circle of support_radius (pi (0.1 *
    256)^2 = 2059 pixels): every run starts from a circle of its own radius. With q = 0
    measured, every run starts from the autocorrelation."""
    import torch

    from sipflow.reconstruct._engine import iterate
    from sipflow.reconstruct._plan import parse
    from sipflow.reconstruct._settings import EngineSettings

    ds = sipflow.run_pipeline({"stages": ["prep.standard"]}, _lithograph(0, 10.0), seed=0,
                              device="cpu")
    counts = torch.as_tensor(ds[schema.INTENSITY].values)
    settings = EngineSettings.from_params(ndim=2)

    def first_support_sizes(mask: torch.Tensor) -> list[int]:
        gen = iterate(counts, mask, parse("ER"), list(range(8)), settings)  # no shrinkwrap
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value.support.reshape(8, -1).sum(dim=1).tolist()

    hidden = first_support_sizes(torch.as_tensor(ds[schema.MASK].values))
    assert all(2059 <= n <= 3.15 * (0.25 * 256) ** 2 for n in hidden), hidden
    assert len(set(hidden)) == 8, "each circle's radius is drawn per run"
    measured = first_support_sizes(torch.ones_like(torch.as_tensor(ds[schema.MASK].values)))
    assert all(n < 2059 for n in measured), measured


def test_closed_support_bridges_notches_and_fills_holes():
    """The repair of a 'support' generation: a ring becomes a disc, a notch narrower than
    twice the radius closes, a wider one stays open, nothing is removed, in 2-D and 3-D."""
    y, x = np.mgrid[-32:32, -32:32]
    r = np.hypot(y, x)
    ring = (r <= 20) & (r >= 8)
    np.testing.assert_array_equal(closed_support(ring, 0), r <= 20)
    narrow = ring & ~((np.abs(y) <= 2) & (x > 0))  # a 5-px notch from the hole outwards
    wide = ring & ~((np.abs(y) <= 7) & (x > 0))  # 15 px
    closed = closed_support(narrow, 3)
    assert closed[r <= 16].all() and (closed >= narrow).all()  # the mouth stays rounded
    assert not closed_support(wide, 3)[0 + 32, 14 + 32], "a 15-px notch stays open at r = 3"
    z, y3, x3 = np.mgrid[-16:16, -16:16, -16:16]
    shell = (np.sqrt(z**2 + y3**2 + x3**2) <= 12) & (np.sqrt(z**2 + y3**2 + x3**2) >= 5)
    assert closed_support(shell, 2)[16, 16, 16]


@pytest.mark.slow
def test_a_support_generation_fills_the_centre_a_beamstop_hid():
    """Overlapping cells behind a three-speckle beamstop (the benchmark's seed 3): the
    missing low frequencies dim the object's middle and shrinkwrap carves a hole there
    in every run of the first generation (error 0.52, free LLK 7.7). The cdi template's
    second generation restarts the runs at random in the best support closed and
    filled, and the free LLK selects a run that filled it."""
    import yaml

    from sipflow.plugins import get_registry

    ds = simulated_dataset((256, 256), kind="cells", extent=0.3, phase_amplitude=0.0,
                           beamstop=10.0, seed=3, **REALISTIC)
    # generation 1 at the full threshold (the template's looser first generation finds
    # these cells already): the repair by the second generation is what is tested here
    cdi = yaml.safe_load(get_registry().templates["cdi"].read_text())
    cdi["stages"][1]["with"]["first_threshold_factor"] = 1.0
    out = sipflow.run_pipeline(cdi, ds, seed=3, device="cpu")
    pc = out.attrs["phase_classic"]
    truth = out[schema.OBJ_TRUE].values.astype(np.complex128)
    carried = pc["generation_best"][0]  # the first generation's best, kept as it was
    first = align(truth, out[schema.OBJ_RUNS].values[carried].astype(np.complex128)).error
    error, iou = _score(out)
    assert first > 0.3, first
    assert error < 0.1 and iou > 0.9, (error, iou)
    assert pc["best_run"] != carried
    assert pc["final_llk_free"][pc["best_run"]] < 0.5 * pc["final_llk_free"][carried]


def test_a_support_generation_keeps_the_best_run_as_it_was():
    """The first generation's best run is not iterated again (more HIO with wide
    shrinkwraps made a solved set worse): it comes out bit for bit, with constant LLK
    rows; the other runs are new starts inside its closed support."""
    ds = sipflow.run_pipeline({"stages": ["prep.standard"]},
                              simulated_dataset((64, 64), photons=1e8, seed=0), seed=0,
                              device="cpu")
    params = {"runs": 3, "schedule": "(sup * HIO**20)**3 * ER**20", "restarts": 0}
    one = Classic()(ds, params, sipflow.Context(seed=1, device="cpu"))
    two = Classic()(ds, {**params, "generations": 2, "generation_start": "support",
                         "generation_schedules": ["HIO**30 * ER**20"]},
                    sipflow.Context(seed=1, device="cpu"))
    best = one.attrs["phase_classic"]["best_run"]
    assert two.attrs["phase_classic"]["generation_best"][0] == best
    np.testing.assert_array_equal(two[schema.OBJ_RUNS].values[best],
                                  one[schema.OBJ_RUNS].values[best])
    np.testing.assert_array_equal(two[schema.SUPPORT_RUNS].values[best],
                                  one[schema.SUPPORT_RUNS].values[best])
    row = two[schema.LLK_FREE].values[best]
    assert np.all(row == one[schema.LLK_FREE].values[best, -1])
    repaired = closed_support(one[schema.SUPPORT_RUNS].values[best], 4)
    for r in set(range(3)) - {best}:
        assert not np.array_equal(two[schema.OBJ_RUNS].values[r], one[schema.OBJ_RUNS].values[r])
        # a new start inside the repaired support: HIO 30 + ER 20 with no shrinkwrap
        assert (two[schema.SUPPORT_RUNS].values[r] == repaired).all()


def test_a_run_set_above_the_free_llk_limit_is_computed_again():
    """set_retries: a set whose best free LLK stays above set_retry_llk_free is computed
    again from new seeds (every generation), and the set with the lowest free LLK is kept.
    A limit no set can reach makes every retry happen; a solved set is not retried and
    is the same, bit for bit, as with no retries."""
    ds = sipflow.run_pipeline({"stages": ["prep.standard"]},
                              simulated_dataset((48, 48), photons=1e8, seed=0), seed=0,
                              device="cpu")
    params = {"runs": 2, "schedule": "(sup * ER**5 * HIO**40)**12 * ER**100", "generations": 2,
              "generation_start": "support", "generation_schedules": ["HIO**20 * ER**10"]}
    ctx = sipflow.Context(seed=5, device="cpu")
    plain = Classic()(ds, params, ctx)
    solved = Classic()(ds, {**params, "set_retries": 2}, ctx)
    pc = solved.attrs["phase_classic"]
    assert pc["run_sets"] == 1 and pc["run_set_kept"] == 0
    assert pc["run_set_llk_free"][0] <= 3.0, pc["run_set_llk_free"]
    np.testing.assert_array_equal(solved[schema.OBJ_RUNS].values, plain[schema.OBJ_RUNS].values)

    every = Classic()(ds, {**params, "set_retries": 2, "set_retry_llk_free": 1e-3}, ctx)
    pc = every.attrs["phase_classic"]
    scores = pc["run_set_llk_free"]
    assert pc["run_sets"] == 3 and len(set(scores)) == 3, scores  # new starts each time
    assert pc["run_set_kept"] == int(np.argmin(scores))
    best = pc["best_run"]
    assert pc["final_llk_free"][best] == pytest.approx(min(scores))
    if pc["run_set_kept"] == 0:
        np.testing.assert_array_equal(every[schema.OBJ].values, plain[schema.OBJ].values)
    else:
        assert not np.array_equal(every[schema.OBJ].values, plain[schema.OBJ].values)
    with pytest.raises(PipelineError, match="set_retries"):
        Pipeline.load({"stages": [{"use": "phase.classic", "with": {"set_retries": -1}}]})


def test_a_retried_run_set_rescues_a_set_that_missed_the_object():
    """Measured when written: both runs of the first set stagnated (error 0.28, free LLK
    8.9 and 9.2); the second set's best run reached 0.009 (free LLK 1.83)."""
    ds = sipflow.run_pipeline({"stages": ["prep.standard"]},
                              simulated_dataset((48, 48), photons=1e7, seed=0), seed=0,
                              device="cpu")
    params = {"runs": 2, "schedule": "(sup * ER**5 * HIO**40)**12 * ER**100"}
    ctx = sipflow.Context(seed=5, device="cpu")
    truth = ds[schema.OBJ_TRUE].values.astype(np.complex128)
    once = Classic()(ds, params, ctx)
    again = Classic()(ds, {**params, "set_retries": 2}, ctx)
    pc = again.attrs["phase_classic"]
    assert pc["run_sets"] == 2 and pc["run_set_kept"] == 1, pc["run_set_llk_free"]
    assert pc["run_set_llk_free"][0] > 3.0 >= pc["run_set_llk_free"][1]
    assert align(truth, once[schema.OBJ].values.astype(np.complex128)).error > 0.2
    assert align(truth, again[schema.OBJ].values.astype(np.complex128)).error < 0.05
    rows = dict(summary_rows(again))
    assert rows["run sets"].startswith("2 computed, set 2 kept (best free LLK of each: 8.9"), rows
    assert "run sets" not in dict(summary_rows(once))
