"""refine.constrained: refines under declared constraints and certifies, in pipelines too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from sipflow import Context, open_result
from sipflow.errors import DataError, PipelineError
from sipflow.pipeline import Pipeline
from sipflow.plugins import get_registry
from sipflow.refine import total_variation
from sipflow.symmetry import align


@pytest.fixture(scope="module")
def perturbed(result_stores):
    """A solved 64 × 64 result whose object is perturbed inside its support (5 % noise)."""
    ds = open_result(result_stores[0], load=True)
    rng = np.random.default_rng(0)
    obj, sup = ds.obj.values, ds.support.values
    noise = rng.normal(size=obj.shape) + 1j * rng.normal(size=obj.shape)
    out = ds.copy()
    out["obj"] = (ds.obj.dims, (obj + 0.05 * np.abs(obj).max() * noise * sup).astype(np.complex64))
    return out


def _error(ds, x) -> float:
    return float(align(ds.obj_true.values, x).error)


def _refine(ds, **params):
    return get_registry().stage("refine.constrained")()(ds, params, Context(seed=0))


def test_refinement_lowers_the_llk_and_the_error_and_keeps_the_constraints(perturbed):
    out = _refine(perturbed)
    cert, record = out.attrs["refine_certificate"], out.attrs["refine_constrained"]
    assert cert["certified"] and cert["status"] == "certified"
    assert cert["max_violation"] <= 1e-6 and cert["kkt_residual"] <= 1e-5
    assert record["objective_end"] < 0.01 * record["objective_start"]
    assert record["amplitude_first"]  # the default: the amplitude form solved first
    assert record["llk_free_end"] < record["llk_free_start"]
    before, after = _error(perturbed, perturbed.obj.values), _error(perturbed, out.obj.values)
    assert after < 0.5 * before  # 0.080 -> 0.017 measured
    x, sup = out.obj.values, perturbed.support.values
    assert np.all(x[~sup] == 0)  # the support is exact
    amax = 1.5 * np.abs(perturbed.obj.values).max()  # the default amplitude bound
    assert np.abs(x[sup]).max() <= amax * (1 + 1e-6)


@pytest.mark.slow
def test_tv_budget_and_energy_equality_hold_exactly(perturbed):
    tv0 = float(total_variation(torch.as_tensor(perturbed.obj.values, dtype=torch.complex128)))
    # amplitude_first off: constraints are the test here (the continuation doubles the time
    # of this solve and ends at the same objective; test_optim tests the continuation)
    out = _refine(perturbed, amplitude_first=False,
                  constraints=["support", "amplitude",
                               {"use": "tv", "with": {"relative": 0.7}}, "energy"])
    cert = out.attrs["refine_certificate"]
    assert cert["certified"], cert["reason"]
    x = torch.as_tensor(out.obj.values, dtype=torch.complex128)
    assert float(total_variation(x)) <= 0.7 * tv0 * (1 + 1e-5)
    from sipflow.physics import FarField

    valid = perturbed.mask.values & ~perturbed.free_mask.values
    calc = FarField(ndim=2).intensity(out.obj.values.astype(np.complex128))
    measured = perturbed.intensity.values[valid].sum()
    assert calc[valid].sum() == pytest.approx(measured, rel=1e-5)
    assert cert["multipliers"]["tv"] > 0  # the budget is active


def test_penalty_baseline_reports_the_same_certificate(perturbed):
    out = _refine(perturbed, method="penalty_adam", adam_steps=200,
                  constraints=["support", {"use": "tv", "with": {"relative": 0.5}}])
    cert = out.attrs["refine_certificate"]
    assert set(cert) >= {"certified", "max_violation", "kkt_residual", "objective", "status"}
    assert not cert["certified"]  # 200 Adam steps with a penalty: infeasible or not stationary
    assert cert["status"] in ("infeasible", "not_stationary")


@pytest.mark.slow
def test_an_impossible_set_of_constraints_is_reported_not_hidden(perturbed):
    out = _refine(perturbed, max_outer=4, max_inner=200, amplitude_first=False, constraints=[
        "support", {"use": "amplitude", "with": {"max": 1e-3}}, "energy"])
    cert = out.attrs["refine_certificate"]
    assert not cert["certified"] and cert["status"] == "infeasible"
    assert cert["max_violation"] > 1e-3 and "violation" in cert["reason"]


def test_bad_constraint_specs_fail_before_any_work(perturbed):
    def pipeline(constraints):
        return Pipeline.load({"stages": [{"use": "refine.constrained",
                                          "with": {"constraints": constraints}}]})

    with pytest.raises(PipelineError, match=r"unknown constraint 'tvv'.*Did you mean 'tv'"):
        pipeline(["support", "tvv"])
    with pytest.raises(PipelineError, match=r"constraint 'tv'.*budget"):
        pipeline([{"use": "tv", "with": {"budget": -1}}])
    with pytest.raises(PipelineError, match="constraint 3 must be a name"):
        pipeline(["support", "amplitude", {"name": "tv"}])
    with pytest.raises(PipelineError, match=r"min 5 is not below max 1"):  # at load now
        pipeline([{"use": "amplitude", "with": {"min": 5, "max": 1}}])
    wrong = perturbed.copy()
    wrong["support"] = (("a", "b"), np.ones((32, 32), bool))
    with pytest.raises(DataError, match="support"):
        _refine(wrong)


def test_the_example_plugin_adds_a_constraint(perturbed):
    assert "zero_mean_phase" in get_registry().constraints
    out = _refine(perturbed, constraints=["support", "amplitude", "zero_mean_phase"])
    assert out.attrs["refine_certificate"]["certified"]
    x = out.obj.values.astype(np.complex128)[perturbed.support.values]
    assert abs(x.sum().imag) <= 1e-5 * np.abs(x).sum()


@pytest.mark.prefect
@pytest.mark.parametrize("deep", [False, True], ids=["after-classic", "after-double-dip"])
def test_refine_through_the_prefect_flow(viewer_scan, tmp_path, prefect_server, capsys, deep):
    from sipflow.cli import main

    phase = [{"use": "phase.classic",
              "with": {"schedule": "(sup * ER**5 * HIO**40)**8 * ER**50", "runs": 2}}]
    if deep:  # the deep prior warm-started from the classical object, then refined
        phase.append({"use": "phase.double_dip",
                      "with": {"init": "previous", "iterations": 30, "warm_iterations": 10,
                               "window": 10, "patience": 10}})
    spec = {"stages": [{"use": "prep.standard"}, *phase,
                       {"use": "refine.constrained",
                        "with": {"constraints": ["support", "amplitude", "energy"]}},
                       {"use": "analyse.metrics"}]}
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "refined.zarr"
    assert main(["run", str(path), str(viewer_scan), "-o", str(out), "--engine", "prefect",
                 "--seed", "4"]) == 0
    ds = open_result(out, verify=True)
    assert ds.attrs["refine_certificate"]["certified"]
    assert [s["use"] for s in ds.attrs["provenance"]["stages"]][-2] == "refine.constrained"
    if deep:
        assert "phase_double_dip" in ds.attrs
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "refine certificate" in shown and "certified (certified)" in shown


def test_total_variation_of_a_step_is_its_edge_length_and_runs_add_up():
    """The one TV (sipflow.priors): the constraint's and the deep priors' penalty."""
    import torch

    from sipflow.priors import total_variation

    x = torch.zeros(8, 8, dtype=torch.float64)
    x[:, 4:] = 2.0  # a vertical edge of height 2 along 7 cropped rows
    assert float(total_variation(x)) == pytest.approx(14.0)
    runs = torch.stack([x, 3 * x])
    assert float(total_variation(runs, ndim=2)) == pytest.approx(14.0 * 4)
    where = torch.zeros(8, 8, dtype=torch.bool)
    where[:2, :] = True
    assert float(total_variation(x, where=where)) == pytest.approx(4.0)
