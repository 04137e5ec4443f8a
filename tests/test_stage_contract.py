"""Every registered stage (built-in or installed plugin) honours the stage contract."""

from __future__ import annotations

import pytest

from sipflow.plugins import get_registry
from sipflow.testing import assert_outputs, assert_stage_contract

# Small, fast parameters for stages whose defaults are production-sized.
CLASSIC = {"schedule": "(sup * HIO**10)**2 * ER**5", "runs": 2}
FAST = {"phase.classic": CLASSIC,
        "phase.dip": {"iterations": 20, "window": 5, "width": 8, "classic_params": CLASSIC},
        "phase.double_dip": {"iterations": 20, "window": 5, "width": 8,
                             "classic_params": CLASSIC}}
# Bragg stages need what a rocking scan's file records (the gold scan's geometry) or, for
# strain on an object that was not orthogonalised, its voxel size and Bragg vector
BRAGG_GEOMETRY = {"wavelength_m": 1.3776e-10, "distance_m": 0.5, "pixel_size_m": 55e-6,
                  "delta_deg": 32.174, "gamma_deg": 12.6346, "rocking_step_deg": 0.02}
STRAIN = {"voxel_size_nm": 10.0, "d_spacing_nm": 0.2355}
FAST_BY_NDIM = {2: {**FAST, "bragg.strain": {**STRAIN, "g_direction": [0.6, 0.8]}},
                3: {**FAST, "bragg.strain": {**STRAIN, "g_direction": [0.0, 0.6, 0.8]}}}
ONLY_3D = {"bragg.orthogonalize"}  # a rocking scan's object
ONLY_2D = {"phase.learned"}  # its networks are trained on 2-D patterns


@pytest.fixture(scope="module")
def learned_model(tmp_path_factory) -> str:
    """A model for phase.learned, trained in a second on the contract's 32² patterns."""
    from sipflow.learned import TrainConfig, train

    config = TrainConfig(shape=(32, 32), samples=16, validation=8, epochs=1, width=4, depth=2)
    return str(train(config, tmp_path_factory.mktemp("learned")).path)


def _params(name: str, ndim: int, request) -> dict | None:
    if name == "phase.learned":
        return {"model": request.getfixturevalue("learned_model")}
    return FAST_BY_NDIM[ndim].get(name)


@pytest.mark.parametrize("name", sorted(get_registry().stages))
def test_stage_contract(name, request):
    from sipflow.testing import simulated_dataset

    stage = get_registry().stages[name]
    ds = None
    ndim = 2
    if name in ONLY_3D:
        ds = simulated_dataset((16, 16, 16), with_obj=True).assign_attrs(BRAGG_GEOMETRY)
        ndim = 3
    assert_stage_contract(stage, ds=ds, params=_params(name, ndim, request))


@pytest.mark.parametrize("name", sorted(get_registry().stages))
@pytest.mark.slow
def test_stage_works_on_3d(name, sipflow_dataset_3d, request):
    stage = get_registry().stages[name]
    ds = sipflow_dataset_3d.assign_attrs(BRAGG_GEOMETRY)
    if "obj" in stage.requires:
        ds = ds.assign(obj=ds["obj_true"], support=ds["support_true"])
    if name in ONLY_2D:  # refused with a reason, not a crash
        from sipflow.errors import DataError

        with pytest.raises(DataError, match="2-D"):
            stage()(ds, _params(name, 3, request))
        return
    out = stage()(ds, _params(name, 3, request))
    assert_outputs(stage, out, 3)
    if stage.kind() == "phase":
        assert stage.produces, f"{name}: a phase stage declares what it produces"
        assert out["obj"].dims == ("z", "y", "x") and out["obj"].dtype.kind == "c"
