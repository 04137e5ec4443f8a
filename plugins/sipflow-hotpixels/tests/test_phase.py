"""The example phase stage, tested only through sipflow's public API."""

import numpy as np
import pytest
from sipflow_hotpixels import ShrinkwrapHio

from sipflow.contracts import PhaseRecord
from sipflow.symmetry import get_group
from sipflow.testing import assert_stage_contract, simulated_dataset


def test_contract():
    assert_stage_contract(ShrinkwrapHio, simulated_dataset((32, 32), photons=1e8),
                          {"runs": 2, "hio": 40, "er": 10})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_real_object_and_the_free_llk_picks_the_best_run(seed):
    ds = simulated_dataset((64, 64), photons=1e8, seed=seed, phase_amplitude=0.0)
    out = ShrinkwrapHio()(ds, {"positivity": True})
    group = get_group("farfield")
    errors = [group.error(x, ds["obj_true"].values) for x in out["obj_runs"].values]
    record = PhaseRecord.from_attrs(out.attrs)
    assert record.stage == "phase.shrinkwrap_hio" and record.ranked_by == "llk_free"
    assert group.error(out["obj"].values, ds["obj_true"].values) < 0.01  # measured 0.002
    assert errors[record.best_run] <= min(errors) + 0.01


def test_keep_best_averages_the_aligned_runs():
    ds = simulated_dataset((64, 64), photons=1e6, seed=2, phase_amplitude=0.0)
    out = ShrinkwrapHio()(ds, {"positivity": True, "keep_best": 3})
    record = PhaseRecord.from_attrs(out.attrs)
    assert len(record.averaged_runs) == 3 and record.averaged_runs[0] == record.best_run
    assert not np.allclose(out["obj"].values, out["obj_runs"].values[record.best_run])
    assert get_group("farfield").error(out["obj"].values, ds["obj_true"].values) < 0.1
