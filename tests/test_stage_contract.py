"""Every registered stage (built-in or installed plugin) honours the stage contract."""

from __future__ import annotations

import pytest

from sipflow.plugins import get_registry
from sipflow.testing import assert_outputs, assert_stage_contract

# Small, fast parameters for stages whose defaults are production-sized.
FAST = {"phase.classic": {"schedule": "(sup * HIO**10)**2 * ER**5", "runs": 2},
        "phase.dip": {"iterations": 20, "window": 5, "width": 8},
        "phase.double_dip": {"iterations": 20, "window": 5, "width": 8}}


@pytest.mark.parametrize("name", sorted(get_registry().stages))
def test_stage_contract(name):
    stage = get_registry().stages[name]
    assert_stage_contract(stage, params=FAST.get(name))


@pytest.mark.parametrize("name", sorted(get_registry().stages))
def test_stage_works_on_3d(name, sipflow_dataset_3d):
    stage = get_registry().stages[name]
    ds = sipflow_dataset_3d
    if "obj" in stage.requires:
        ds = ds.assign(obj=ds["obj_true"], support=ds["support_true"])
    out = stage()(ds, FAST.get(name))
    assert_outputs(stage, out, 3)
    if stage.kind() == "phase":
        assert stage.produces, f"{name}: a phase stage declares what it produces"
        assert out["obj"].dims == ("z", "y", "x") and out["obj"].dtype.kind == "c"
