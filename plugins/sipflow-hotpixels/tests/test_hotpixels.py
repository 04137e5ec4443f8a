"""Tests of the example plugin, written only against sipflow's public testing API."""

import numpy as np
import sipflow_hotpixels
from sipflow_hotpixels import HotPixels

import sipflow
from sipflow.simulate import Simulation, simulate
from sipflow.testing import assert_stage_contract, simulated_dataset


def test_contract():
    assert_stage_contract(HotPixels, simulated_dataset((32, 32), photons=1e7, hot_pixels=5))


def test_finds_the_hot_pixels_and_nothing_else():
    sim = Simulation(shape=(96, 96), photons=1e8, hot_pixels=12, seed=3)
    truth = simulate(sim)["hot"]
    ds = simulated_dataset((96, 96), photons=1e8, hot_pixels=12, seed=3)
    out = HotPixels()(ds)
    found = ~out["mask"].values & ds["mask"].values
    assert found[truth].all(), "every injected hot pixel is masked"
    assert (found & ~truth).sum() <= 2, "almost no false positives on a clean pattern"
    assert out.attrs["hot_pixels_masked"] == found.sum()


def test_registered_through_entry_point():
    from sipflow.plugins import get_registry

    reg = get_registry()
    assert reg.stages["prep.hot_pixels"] is HotPixels
    info = next(p for p in reg.plugins if p.name == "hotpixels")
    assert info.origin.startswith("entry point of sipflow-hotpixels") and info.error is None
    assert "hotpixels" in reg.templates


def test_pipeline_with_the_plugin_beats_the_one_without():
    ds = simulated_dataset((64, 64), photons=1e9, hot_pixels=8, seed=1)
    with_plugin = sipflow.run_pipeline("hotpixels", ds, seed=0)
    e_with = with_plugin.attrs["metrics"]["error"]
    assert e_with < 0.05, e_with
    assert np.isfinite(with_plugin["obj"].values).all()
    try:  # without the plugin the hot pixels wreck the support estimate
        without = sipflow.run_pipeline("default", ds, seed=0)
    except sipflow.ReconstructionError as exc:
        assert "every run failed" in str(exc)
    else:
        assert without.attrs["metrics"]["error"] > 4 * e_with


def test_isolated_registry_and_every_device(sipflow_plugins, sipflow_device):
    import sipflow_hotpixels

    reg = sipflow_plugins(sipflow_hotpixels)
    assert reg.stages["prep.hot_pixels"] is HotPixels
    assert reg.plugins[-1].origin == "registered in code", "only what the test registered"
    pipe = sipflow.Pipeline.load("stages:\n  - use: prep.hot_pixels\n", registry=reg)
    ds = simulated_dataset((48, 48), photons=1e8, hot_pixels=4, seed=1)
    out = sipflow.run_pipeline(pipe, ds, device=sipflow_device, seed=0)
    assert out.attrs["hot_pixels_masked"] >= 4


def test_mirror_group_canonical_form_is_invariant(sipflow_plugins):
    """The defining property of a group, for every element, and near-ties reported."""
    import sipflow_hotpixels

    reg = sipflow_plugins(sipflow_hotpixels)
    group = reg.groups["mirror_x"]
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = rng.random((16, 17)) * (np.arange(17) < rng.integers(4, 17))  # x-asymmetric
        c = group.canonical(x)
        for mirrored in (False, True):
            moved = group.apply(x, sipflow_hotpixels.Mirror(mirrored))
            np.testing.assert_allclose(group.canonical(moved).x, c.x)
        assert group.error(group.apply(x, sipflow_hotpixels.Mirror(True)), x) < 1e-12
    symmetric = np.ones((8, 9))
    assert group.canonical(symmetric).ambiguous


def test_group_and_constraint_contracts():
    from sipflow_hotpixels import MirrorX, ZeroMeanPhase

    from sipflow.testing import assert_constraint_contract, assert_group_contract

    assert_group_contract(MirrorX())
    assert_constraint_contract(ZeroMeanPhase)


def test_the_cristal_beamline_preset_is_registered_and_golden():
    from sipflow.plugins import get_registry
    from sipflow.testing import assert_beamline

    reg = get_registry()
    assert reg.beamline("cristal") is sipflow_hotpixels.CRISTAL
    assert "cristal" in next(p for p in reg.plugins if p.name == "hotpixels").beamlines
    assert_beamline(sipflow_hotpixels.CRISTAL)  # q of three pixels against xrayutilities
