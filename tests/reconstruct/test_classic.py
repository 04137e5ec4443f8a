"""phase.classic recovers known objects from simulated data (error modulo ambiguities).

Bounds are relative complex errors after removing global phase, sub-pixel translation
and twin (docs/design.md), for the run the stage selects (best free LLK of 4). RAAR
converges more slowly to the exact solution than HIO on noiseless data, hence its
looser bound. A failure means the algorithm, the support update or the ranking broke.
"""

from __future__ import annotations

import numpy as np
import pytest

import sipflow
from sipflow.errors import PipelineError, ReconstructionError
from sipflow.pipeline import Pipeline
from sipflow.reconstruct import Classic
from sipflow.runset import align_to
from sipflow.testing import simulated_dataset

BOUND = {"HIO": 0.05, "RAAR": 0.1}
RECIPE = "(sup * ER**5 * {A}**40)**12 * ER**100"


def _run(ds, prep=True, **params):
    pipe = {"stages": [{"use": "phase.classic", "with": params}, "analyse.metrics"]}
    if prep:
        pipe["stages"].insert(0, "prep.standard")
    return sipflow.run_pipeline(pipe, ds, seed=0)


#: seeds tried and how many must pass. HIO solved 12 of 12 seeds (5-16) when this was
#: written; RAAR stagnates on about one seed in four (8 and 9 of 12), so it gets more
#: seeds and a majority rule rather than a luckier subset
SEEDS = {"HIO": (range(5, 9), 3), "RAAR": (range(5, 13), 5)}


@pytest.mark.parametrize("algorithm", ["HIO", "RAAR"])
def test_noiseless_2d_most_seeds(algorithm):
    errors = []
    seeds, need = SEEDS[algorithm]
    for seed in seeds:
        out = _run(simulated_dataset((64, 64), photons=None, seed=seed),
                   schedule=RECIPE.format(A=algorithm))
        errors.append(out.attrs["metrics"]["error"])
    assert out["obj"].dims == ("y", "x") and out["obj_runs"].dims == ("run", "y", "x")
    assert out["llk"].dims == ("run", "iter") and out["llk_free"].dims == ("run", "iter")
    assert sum(e < BOUND[algorithm] for e in errors) >= need, errors


@pytest.mark.parametrize("algorithm", ["HIO", "RAAR"])
def test_noiseless_3d(algorithm):
    out = _run(simulated_dataset((32, 32, 32), kind="blob", photons=None, seed=6),
               schedule=RECIPE.format(A=algorithm))
    assert out["obj"].dims == ("z", "y", "x")
    assert out.attrs["metrics"]["error"] < BOUND[algorithm], out.attrs["metrics"]


def test_er_and_ml_with_a_known_support():
    ds = simulated_dataset((64, 64), photons=None, seed=5)
    ds = ds.assign(support=ds["support_true"])
    out = _run(ds, prep=False, schedule="ER**300", initial_support="input", runs=2)
    assert out.attrs["metrics"]["error"] < 0.05, out.attrs["metrics"]
    # noiseless values are not counts: the Poisson LLK that ML descends is asked for
    out = _run(ds, prep=False, schedule="ER**100 * ML**100", initial_support="input", runs=2,
               llk_every=1, likelihood="poisson")
    assert out.attrs["metrics"]["error"] < 0.05, out.attrs["metrics"]
    best = out.attrs["phase_classic"]["best_run"]
    ml = out["llk"].values[best, 100:]
    assert ml[-1] < ml[0], "ML steps lower the Poisson LLK"


def test_shrinkwrap_finds_the_support():
    out = _run(simulated_dataset((64, 64), photons=None, seed=6), schedule=RECIPE.format(A="HIO"))
    _, support = align_to(out["obj_true"].values, out["obj"].values[None],
                          out["support"].values[None])
    truth = out["support_true"].values
    iou = (support[0] & truth).sum() / (support[0] | truth).sum()
    assert iou >= 0.8, iou


def test_free_llk_of_a_correct_reconstruction_is_about_one():
    out = _run(simulated_dataset((64, 64), photons=1e8, seed=8))
    pc = out.attrs["phase_classic"]
    assert out.attrs["metrics"]["error"] < 0.05
    assert pc["ranked_by"] == "llk_free" and pc["free_pixels"] > 0.03 * 64 * 64
    # a correct run predicts the held-out pixels almost as well as it fits the others;
    # stagnated runs score 5-500 here
    assert 0.8 < pc["final_llk_free"][pc["best_run"]] < 2.0, pc
    assert 0.7 < pc["final_llk"][pc["best_run"]] < 1.3, pc
    free = out["free_mask"].values
    yy, xx = np.indices(free.shape) - 32
    assert np.hypot(yy, xx)[free].min() >= 3.0, "no free pixels at the centre"


def test_free_pixels_stay_off_the_central_speckle_of_a_small_array():
    """At 32 x 32 the old rule (10 % of the half-size, 1.6 px) let an island reach q = 0.

    Pipeline seed 1511553084 held out 25 % of all counts that way, and every run and
    every restart exploded at the first shrinkwrap (seen in CI).
    """
    import torch

    from sipflow.physics import free_pixel_mask

    ds = simulated_dataset((32, 32), photons=1e7)
    counts = ds["intensity"].values
    valid = torch.as_tensor(ds["mask"].values)
    yy, xx = np.indices(counts.shape) - 16
    for seed in range(200):
        free = free_pixel_mask(valid, 0.05, 1.0, torch.Generator().manual_seed(seed)).numpy()
        assert free.sum() > 0.03 * valid.sum().item(), seed
        assert np.hypot(yy, xx)[free].min() >= 3.0, seed
        assert counts[free].sum() < 0.05 * counts.sum(), seed  # measured at most 4.4 %
    pipe = {"stages": ["prep.standard",
                       {"use": "phase.classic",
                        "with": {"schedule": "(sup * ER**5 * HIO**40)**6 * ER**50", "runs": 3}},
                       "analyse.metrics"]}
    out = sipflow.run_pipeline(pipe, ds, seed=1511553084)
    assert out.attrs["metrics"]["error"] < 0.05, out.attrs["metrics"]


def test_batched_runs_equal_the_same_runs_one_by_one():
    import torch

    from sipflow.reconstruct import EngineSettings, iterate, parse
    from sipflow.runset import run_seeds

    ds = simulated_dataset((48, 48), photons=1e8, seed=2)
    i = torch.as_tensor(ds["intensity"].values)
    m = torch.as_tensor(ds["mask"].values)
    plan = parse("(sup * HIO**20)**3 * ER**20")
    seeds = run_seeds(3, 0, 3)

    def result(s):
        gen = iterate(i, m, plan, s, EngineSettings.from_params(ndim=2))
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    batch = result(seeds)
    for r, s in enumerate(seeds):
        alone = result([s])
        np.testing.assert_allclose(batch.x[r].numpy(), alone.x[0].numpy(), rtol=0,
                                   atol=1e-4 * float(alone.x.abs().max()))
        assert (batch.support[r] == alone.support[0]).all()


def test_run_variants_give_each_run_its_own_positivity_and_threshold():
    """A batch whose runs alternate between two variants computes each run as it would
    be computed alone with that variant's settings (mixed batches take another code
    path than uniform ones)."""
    import dataclasses

    import torch

    from sipflow.reconstruct import ClassicParams, EngineSettings, iterate, parse
    from sipflow.runset import run_seeds

    ds = simulated_dataset((48, 48), photons=1e8, seed=2, phase_amplitude=0.0)
    i = torch.as_tensor(ds["intensity"].values)
    m = torch.as_tensor(ds["mask"].values)
    plan = parse("(sup * HIO**20)**3 * ER**20")
    params = ClassicParams(runs=4, shrinkwrap_threshold=(0.15, 0.3), run_variants=[
        {"positivity": True, "shrinkwrap_threshold": 0.1}, {}])
    positive, thresholds = params.per_run()
    assert positive == [True, False, True, False]
    assert thresholds == [0.1, (0.15, 0.3), 0.1, (0.15, 0.3)]
    seeds = run_seeds(3, 0, 4)
    base = EngineSettings.from_params(params, ndim=2)

    def result(s, settings, **per_run):
        gen = iterate(i, m, plan, s, settings, **per_run)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    batch = result(seeds, base, positive=positive, shrink_thresholds=thresholds)
    for r, s in enumerate(seeds):
        alone = result([s], dataclasses.replace(base, positivity=positive[r],
                                                shrinkwrap_threshold=thresholds[r]))
        np.testing.assert_allclose(batch.x[r].numpy(), alone.x[0].numpy(), rtol=0,
                                   atol=1e-4 * float(alone.x.abs().max()))
        assert (batch.support[r] == alone.support[0]).all()
        if positive[r]:  # real and non-negative inside the support
            inside = batch.x[r][batch.support[r]]
            assert float(inside.imag.abs().max()) == 0 and float(inside.real.min()) >= 0


def test_run_variants_are_checked_when_the_pipeline_loads():
    for bad, word in (({"positivty": True}, "positivty"),
                      ({"shrinkwrap_threshold": 12}, "shrinkwrap_threshold")):
        with pytest.raises(PipelineError, match=word):
            Pipeline.load({"stages": [{"use": "phase.classic",
                                       "with": {"run_variants": [bad]}}]})


def test_positivity_for_a_real_object():
    out = _run(simulated_dataset((64, 64), photons=None, seed=9, phase_amplitude=0.0),
               schedule=RECIPE.format(A="HIO"), positivity=True)
    assert out.attrs["metrics"]["error"] < 0.05


def test_best_runs_averaged_and_prtf():
    out = _run(simulated_dataset((64, 64), photons=1e8, seed=8), keep_best=3)
    pc = out.attrs["phase_classic"]
    assert len(pc["averaged_runs"]) == 3
    assert out.attrs["metrics"]["error"] < 0.05
    prtf = out["prtf"].values
    assert out["prtf"].dims == ("q_shell",) and prtf.shape == (32,)
    assert np.nanmax(prtf) == pytest.approx(1.0) and np.nanmin(prtf[:20]) > 0.5


def test_failed_runs_leave_the_ranking_on_the_free_llk():
    """A restart batch whose runs all fail again stops early, so those runs have no final
    LLK (NaN). The free LLK must still rank the accepted runs and be the set's score:
    when runs of `default` failed that way (its positivity runs on a complex object), the
    ranking fell back to the LLK of the fitted pixels, and a stalled set (error 0.21,
    free LLK 2.0) scored 1.43 and escaped set_retries."""
    ds = simulated_dataset((64, 64), photons=1e8, seed=8)
    params = {"runs": 4, "restarts": 1, "schedule": "(sup * HIO**40)**6 * ER**50",
              # every other run collapses at its first shrinkwrap (threshold 9 x the maximum)
              "run_variants": [{"shrinkwrap_threshold": 9.0}, {}]}
    out = Classic()(ds, params, sipflow.Context(seed=0))
    pc = out.attrs["phase_classic"]
    assert [s.startswith("support collapsed") for s in pc["run_status"]] == [True, False] * 2
    assert np.isnan([pc["final_llk_free"][r] for r in (0, 2)]).all()  # the case at hand
    assert pc["ranked_by"] == "llk_free"
    free = pc["final_llk_free"]
    assert pc["best_run"] == min((1, 3), key=lambda r: free[r])
    assert pc["run_set_llk_free"] == [pytest.approx(free[pc["best_run"]])]
    assert [pc["run_rank"][r] for r in (0, 2)] == [None, None]


def test_average_within_keeps_only_the_runs_that_fit_as_well_as_the_best():
    ds = simulated_dataset((64, 64), photons=1e8, seed=8)
    params = {"runs": 4, "keep_best": 4, "schedule": "(sup * HIO**40)**6 * ER**50"}
    ctx = {"seed": 0}
    pc = Classic()(ds, params, sipflow.Context(**ctx)).attrs["phase_classic"]
    final, best = pc["final_llk_free"], pc["best_run"]
    for within in (1e-9, 0.02, 100.0):
        out = Classic()(ds, {**params, "average_within": within}, sipflow.Context(**ctx))
        chosen = out.attrs["phase_classic"]["averaged_runs"]
        expected = [r for r in np.argsort(final) if final[r] <= final[best] + within]
        assert chosen == expected, (within, final)
    with pytest.raises(PipelineError, match="average_within"):
        Pipeline.load({"stages": [{"use": "phase.classic", "with": {"average_within": 0}}]})
    # with average_within, keep_best is an upper bound: a template's keep_best stays valid
    # when a user asks for fewer runs
    Pipeline.load({"stages": [{"use": "phase.classic", "with": {
        "runs": 2, "keep_best": 4, "average_within": 0.1}}]})


def test_generations_breed_the_best():
    out = _run(simulated_dataset((64, 64), photons=1e8, seed=7), generations=2,
               generation_schedules=["(sup * HIO**40)**4 * ER**100"])
    pc = out.attrs["phase_classic"]
    assert pc["generations"] == 2 and pc["plans"][1] == "(sup * HIO**40)**4 * ER**100"
    assert out.attrs["metrics"]["error"] < 0.05


@pytest.mark.parametrize("shape", ["circle", "box"])
def test_shaped_initial_supports(shape):
    out = _run(simulated_dataset((64, 64), photons=None, seed=5), initial_support=shape,
               support_size=0.3, schedule=RECIPE.format(A="HIO"))
    assert out.attrs["metrics"]["error"] < 0.05


def test_progress_records_with_previews():
    records = []
    ds = simulated_dataset((32, 32), photons=1e7)
    Classic()(ds, {"schedule": "(sup * HIO**20)**5", "runs": 2, "preview_every": 50},
              sipflow.Context(progress=records.append))
    assert [r.iteration for r in records] == [50, 100]
    assert records[-1].preview["amplitude"].shape == (32, 32)
    assert set(records[-1].metrics) >= {"llk", "llk_free", "alive"}


def test_same_seed_same_result_and_float64():
    ds = simulated_dataset((32, 32), photons=1e7, seed=8)
    params = {"schedule": "(sup * HIO**20)**3 * ER**10", "runs": 3}
    a = Classic()(ds, params, sipflow.Context(seed=4))
    b = Classic()(ds, params, sipflow.Context(seed=4))
    np.testing.assert_array_equal(a["obj_runs"].values, b["obj_runs"].values)
    c = Classic()(ds, params, sipflow.Context(seed=4, dtype="float64"))
    assert c["obj"].dtype == np.complex128


def test_every_run_failing_is_a_clear_error():
    ds = simulated_dataset((32, 32), photons=None)
    with pytest.raises(ReconstructionError,
                       match=r"every run failed \(after 2 restart round\(s\)\): run 0: "
                             r"support collapsed"):
        Classic()(ds, {"schedule": "HIO * sup * ER", "runs": 2, "shrinkwrap_threshold": 5})
    with pytest.raises(ReconstructionError, match=r"outside the support"):
        Classic()(ds, {"schedule": "HIO**5", "runs": 2, "max_outside": 1e-6})


@pytest.mark.parametrize("seed", [0, 1, 3])
@pytest.mark.slow
def test_default_template_accepts_nearly_every_run_on_demo_data(seed):
    """The demo's data (128², 1e9 photons, beamstop r = 2 px) through the `default`
    template: all or all but one of its 8 runs accepted, and the object recovered. Before
    the beamstop-aware initial support and Friedel centring, 2 of these 3 seeds failed
    every run (support exploded or power outside the support). The tighter shrinkwrap of
    the present template (thresholds up to 0.3) fails 1-3 of 8 first starts here, which
    the restarts replace (measured: 5, 7 and 5 of 8 at their first start)."""
    ds = simulated_dataset((128, 128), photons=1e9, beamstop=2, seed=seed)
    out = sipflow.run_pipeline("default", ds, seed=seed)
    pc = out.attrs["phase_classic"]
    assert len(pc["run_status"]) == 8
    assert sum(s == "ok" for s in pc["run_status"]) >= 7, pc["run_status"]
    # most are accepted at their first start, not only thanks to the restarts
    first = [s == "ok" and a == 1 for s, a in zip(pc["run_status"], pc["run_attempts"],
                                                   strict=True)]
    assert sum(first) >= 4, (pc["run_status"], pc["run_attempts"])
    assert out.attrs["metrics"]["error"] < 0.05
