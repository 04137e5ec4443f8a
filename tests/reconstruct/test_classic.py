"""phase.classic recovers known objects from simulated data (error modulo ambiguities)."""

from __future__ import annotations

import numpy as np
import pytest

import sipflow
from sipflow.errors import ReconstructionError
from sipflow.reconstruct import Classic
from sipflow.testing import simulated_dataset

# Bounds: relative complex error after removing global phase, translation and twin.
NOISELESS_2D = 0.05
NOISELESS_3D = 0.10


def _best_error(out):
    return min(out.attrs["metrics"]["error_runs"])


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_noiseless_2d(seed):
    schedule = "(sup * ER**5 * HIO**40)**12 * ER**100"
    ds = simulated_dataset((64, 64), photons=None, seed=seed)
    pipe = {"stages": ["prep.standard",
                       {"use": "phase.classic", "with": {"schedule": schedule, "runs": 4}},
                       "analyse.metrics"]}
    out = sipflow.run_pipeline(pipe, ds, seed=0)
    m = out.attrs["metrics"]
    assert m["error"] < NOISELESS_2D, m
    assert out["obj"].dims == ("y", "x") and out["obj_runs"].dims == ("run", "y", "x")
    assert out["llk"].dims == ("run", "iter")


def test_noiseless_3d_crystal():
    ds = simulated_dataset((32, 32, 32), photons=None, seed=6)
    pipe = {"stages": ["prep.standard",
                       {"use": "phase.classic",
                        "with": {"schedule": "(sup * ER**5 * HIO**40)**12 * ER**100",
                                 "runs": 4}},
                       "analyse.metrics"]}
    out = sipflow.run_pipeline(pipe, ds, seed=0)
    assert out["obj"].dims == ("z", "y", "x")
    assert out.attrs["metrics"]["error"] < NOISELESS_3D, out.attrs["metrics"]


def test_poisson_data_fit_is_close_to_ideal():
    ds = simulated_dataset((64, 64), photons=1e9, seed=7)
    out = sipflow.run_pipeline("default", ds, seed=0)
    m = out.attrs["metrics"]
    assert m["error"] < 0.05, m
    assert 0.7 < m["llk_poisson"] < 1.5, m


def test_same_seed_same_result_on_cpu():
    ds = simulated_dataset((32, 32), photons=1e7, seed=8)
    params = {"schedule": "(sup * HIO**20)**3 * ER**10", "runs": 3}
    a = Classic()(ds, params, sipflow.Context(seed=4))
    b = Classic()(ds, params, sipflow.Context(seed=4))
    np.testing.assert_array_equal(a["obj_runs"].values, b["obj_runs"].values)


def test_every_run_failing_is_a_clear_error():
    ds = simulated_dataset((32, 32), photons=None)
    with pytest.raises(ReconstructionError, match=r"every run failed: run 0: support collapsed"):
        Classic()(ds, {"schedule": "HIO * sup * ER", "runs": 2, "shrinkwrap_threshold": 5})
