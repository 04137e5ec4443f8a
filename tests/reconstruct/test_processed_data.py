"""Real forward-CDI data as providers hand them out: processed values, many parts, a budget.

Each test is one mechanism of ``phase.classic`` and fails when it is disabled:
recognising values that are not counts, judging a run set of processed data by its own
runs, keeping the parts of a many-part object, and the time budget.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sipflow
from sipflow.cli import main
from sipflow.io import open_result
from sipflow.report import summary_rows
from sipflow.simulate import Simulation, write_scan
from sipflow.symmetry import align
from sipflow.testing import simulated_dataset

#: a 128² logo (29 parts) as a provider processes it: symmetrised, times a gain, float,
#: behind a rectangular beamstop and small masked squares
LOGO = {"kind": "logo", "extent": 0.3, "phase_amplitude": 0.0, "photons": 1e8,
        "beamstop_size": (6, 4), "masked_squares": 3, "processed": True}
#: the cdi recipe, small: 4 runs, one generation
QUICK = {"schedule": "(sup * HIO**50)**8 * (sup * ER**50)**2", "runs": 4, "positivity": True,
         "shrinkwrap_threshold": 0.1, "support_threshold": [0.1, 0.5], "set_retries": 1}
#: a plan that cannot solve anything (20 ER steps from random phases)
HOPELESS = {**QUICK, "schedule": "ER**20", "restarts": 0}


def _logo(seed: int = 0, background: float = 0.0):
    ds = simulated_dataset((128, 128), seed=seed, **LOGO)
    if background:  # the provider subtracted a background: no photon scale is left
        i = ds["intensity"].values
        ds["intensity"] = (ds["intensity"].dims,
                           np.where(ds["mask"].values, np.clip(i - background, 0, None), 0)
                           .astype(np.float32))
    return ds


def _phase(ds, seed: int = 0, **params):
    return sipflow.run_pipeline({"stages": [{"use": "prep.standard"},
                                            {"use": "phase.classic", "with": params}]},
                                ds, seed=seed, device="cpu")


def _error(out) -> float:
    truth = out["obj_true"].values.astype(np.complex128)
    return float(align(truth, out["obj"].values.astype(np.complex128)).error)


def test_scaled_counts_are_scored_as_counts_and_solve_in_one_set():
    """Symmetrised counts times a gain of about 37: recognised as scaled counts, their
    free LLK is about 1 and the first set counts as solved. Scored as the values are
    (Poisson on I, as before the recognition), the same solved set has a free LLK near
    the gain / 2 and is computed again."""
    out = _phase(_logo(), **QUICK)
    pc = out.attrs["phase_classic"]
    assert pc["noise"]["kind"] == "scaled counts" and pc["noise"]["symmetrised"]
    assert 0.5 < pc["final_llk_free"][pc["best_run"]] < 3
    assert pc["run_sets"] == 1 and pc["run_set_solved"].startswith("noise level")
    assert _error(out) < 0.05
    rows = dict(summary_rows(out))
    assert "scaled counts" in rows["data"] and "centro-symmetrised" in rows["data"]

    as_given = _phase(_logo(), **QUICK, photon_scale=1.0)
    pc = as_given.attrs["phase_classic"]
    assert pc["final_llk_free"][pc["best_run"]] > 5
    assert pc["run_sets"] == 2 and pc["run_set_solved"] is None


def test_processed_data_are_judged_by_the_sets_own_runs():
    """Background-subtracted values have no photon scale: the Gaussian LLK ranks the runs
    and a set is solved when its two best independent starts found the same object.
    Without that test the solved set is computed again; a set that found nothing is."""
    ds = _logo(background=5.0)
    out = _phase(ds, **QUICK)
    pc = out.attrs["phase_classic"]
    assert pc["noise"]["kind"] == "processed" and pc["noise"]["likelihood"] == "gaussian"
    assert pc["run_sets"] == 1 and pc["run_set_solved"].startswith("agreement")
    assert pc["run_set_agreement"] < 0.3
    assert _error(out) < 0.1

    assert _phase(ds, **QUICK, set_agreement=0).attrs["phase_classic"]["run_sets"] == 2

    failed = _phase(ds, **HOPELESS)
    pc = failed.attrs["phase_classic"]
    assert pc["run_sets"] == 2 and pc["run_set_solved"] is None
    assert pc["run_set_agreement"] > 0.3
    assert "run set warning" in dict(summary_rows(failed))


def test_the_29_parts_of_a_logo_survive_shrinkwrap():
    """From a loose support (the true one grown by 4 px), every shrinkwrap update of the
    cdi recipe keeps all 29 parts: no largest component, no part lost to the threshold."""
    ds = simulated_dataset((256, 256), seed=1, **{**LOGO, "extent": 0.28,
                                                  "beamstop_size": (10, 6)})
    truth = ds["support_true"].values
    labels, parts = ndimage.label(truth)
    assert parts == 29
    prepared = sipflow.run_pipeline({"stages": ["prep.standard"]}, ds, seed=0, device="cpu")
    prepared["support"] = (prepared["support_true"].dims,
                           ndimage.binary_dilation(prepared["support_true"].values,
                                                   iterations=4))
    out = sipflow.run_pipeline({"stages": [{"use": "phase.classic", "with": {
        **QUICK, "initial_support": "input", "set_retries": 0}}]}, prepared, seed=0,
        device="cpu")
    assert _error(out) < 0.1
    a = align(out["obj_true"].values.astype(np.complex128),
              out["obj"].values.astype(np.complex128)).aligned
    found = np.abs(a) > 0.3 * np.abs(a).max()
    kept = [k for k in range(1, parts + 1) if (found & (labels == k)).sum()
            > 0.5 * (labels == k).sum()]
    assert len(kept) == 29
    # the support (parts 1-2 px apart are joined by the 0.7 px blur) covers every part
    # and stays tight
    support = out["support"].values
    moved = align(out["obj_true"].values.astype(np.complex128),
                  support.astype(np.complex128)).aligned
    assert (np.abs(moved) > 0.5)[truth].mean() > 0.95
    assert support.sum() < 2 * truth.sum()


def test_the_time_budget_stops_the_retries_and_says_so():
    ds = _logo(background=5.0)
    out = _phase(ds, **{**HOPELESS, "set_retries": 3}, max_seconds=0.01)
    pc = out.attrs["phase_classic"]
    assert pc["run_sets"] == 1 and pc["time_limited"]
    assert "not confirmed solved" in dict(summary_rows(out))["time limit"]
    unlimited = _phase(ds, **{**HOPELESS, "set_retries": 3})
    assert unlimited.attrs["phase_classic"]["run_sets"] == 4
    assert not unlimited.attrs["phase_classic"]["time_limited"]


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_run_time_limit_reaches_the_phase_stage(engine, tmp_path, prefect_server, capsys):
    scan = write_scan(tmp_path / "logo.h5", Simulation(shape=(128, 128), seed=0, **{
        **LOGO, "photons": 1e8}))
    bad = tmp_path / "hopeless.yaml"
    bad.write_text("stages:\n  - prep.standard\n  - use: phase.classic\n    with: {schedule: "
                   "'ER**20', runs: 4, set_retries: 3, set_retry_llk_free: 0.001, "
                   "restarts: 0}\n")
    out = tmp_path / "r.zarr"
    assert main(["run", str(bad), str(scan), "-o", str(out), "--engine", engine,
                 "--time-limit", "0.01"]) == 0
    pc = open_result(out).attrs["phase_classic"]
    assert pc["time_limited"] and pc["run_sets"] == 1
    assert "time limit" in capsys.readouterr().out
    prep_only = tmp_path / "prep.yaml"
    prep_only.write_text("stages: [prep.standard]\n")
    assert main(["run", str(prep_only), str(scan), "-o", str(tmp_path / "d.zarr"), "--engine",
                 engine, "--time-limit", "5"]) == 2
    assert "takes a time budget" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()
