"""Partial coherence: the kernel model, its Richardson–Lucy estimate, and phasing with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sipflow import run_pipeline, schema
from sipflow.physics import (
    FarField,
    blur,
    gaussian_kernel,
    kernel_coherence,
    kernel_width,
    richardson_lucy_kernel,
)
from sipflow.pipeline import Pipeline
from sipflow.preprocess import measurement_coherence
from sipflow.simulate import Simulation, simulate
from sipflow.symmetry import get_group
from sipflow.testing import simulated_dataset


def test_gaussian_kernel_is_normalised_and_has_its_width():
    k = gaussian_kernel((64, 48), 1.5)
    assert float(k.sum()) == pytest.approx(1.0)
    assert kernel_width(k) == pytest.approx([1.5, 1.5], rel=1e-3)
    delta = gaussian_kernel((8, 8), 0.0)
    assert float(delta[0, 0]) == 1.0 and float(delta.sum()) == 1.0
    i = torch.rand(8, 8, dtype=torch.float64)
    torch.testing.assert_close(blur(i, torch.fft.fftn(delta), 2), i)


def test_richardson_lucy_recovers_a_known_kernel():
    """From the coherent pattern and its blurred measurement, the kernel's width comes back."""
    data = simulate(Simulation(shape=(64, 64), kind="cells", photons=None, seed=3))
    coherent = torch.as_tensor(FarField(2).intensity(data["obj"].astype(np.complex128)))
    truth = gaussian_kernel((64, 64), 1.2)
    measured = blur(coherent, torch.fft.fftn(truth), 2)
    valid = torch.ones(64, 64, dtype=torch.bool)
    k = richardson_lucy_kernel(gaussian_kernel((64, 64), 0.5), coherent, measured, valid, 200)
    assert kernel_width(k) == pytest.approx([1.2, 1.2], rel=0.05)
    assert float(k.sum()) == pytest.approx(1.0) and float(k.min()) >= 0


def test_the_simulator_and_the_forward_model_agree_on_the_blur():
    sim = Simulation(shape=(32, 32), photons=None, coherence_sigma=1.0, seed=1)
    data = simulate(sim)
    model = FarField(2, coherence=kernel_coherence(gaussian_kernel((32, 32), 1.0)))
    expected = model.intensity(torch.as_tensor(data["obj"].astype(np.complex128))).numpy()
    np.testing.assert_allclose(data["intensity"], expected, rtol=1e-6,
                               atol=1e-9 * expected.max())


SCHEDULE = ("(sup * ER**5 * HIO**40)**4 * (sup * psf * ER**5 * HIO**40)**16 * "
            "(psf * ER**20)**5")
COHERENT = "(sup * ER**5 * HIO**40)**20 * ER**100"


def _phase(ds, schedule):
    pipe = Pipeline.load({"stages": [{"use": "phase.classic",
                                      "with": {"schedule": schedule, "runs": 4}}]})
    return run_pipeline(pipe, ds, seed=0)


def test_coherence_aware_phasing_beats_the_coherent_model_on_blurred_data():
    """A 1-px incoherent blur: the coherent model cannot fit (free LLK in the thousands),
    the psf schedule estimates the kernel and reconstructs far better."""
    group = get_group("farfield")
    ds = simulated_dataset((64, 64), photons=1e8, kind="cells", seed=0, coherence_sigma=1.0,
                           extent=0.4)
    coherent, aware = _phase(ds, COHERENT), _phase(ds, SCHEDULE)

    def score(out):
        pc = out.attrs["phase_classic"]
        return (pc["final_llk_free"][pc["best_run"]],
                group.error(out[schema.OBJ].values, out[schema.OBJ_TRUE].values))

    (free_c, err_c), (free_a, err_a) = score(coherent), score(aware)
    assert free_a < free_c / 10, (free_a, free_c)
    assert err_a < 0.6 * err_c, (err_a, err_c)
    kernel = aware[schema.COHERENCE_KERNEL]
    assert kernel.dims == ds[schema.INTENSITY].dims
    assert float(kernel.sum()) == pytest.approx(1.0, rel=1e-4)
    assert aware.attrs["phase_classic"]["coherence_kernel_rms_px"] == pytest.approx(
        [1.0, 1.0], rel=0.15)
    assert schema.COHERENCE_KERNEL not in coherent
    # the next stages fit the same blurred model
    model = measurement_coherence(aware, tuple(ds[schema.INTENSITY].shape))
    assert model is not None


def test_the_psf_schedule_does_no_harm_on_coherent_data():
    group = get_group("farfield")
    ds = simulated_dataset((64, 64), photons=1e8, kind="cells", seed=0, extent=0.4)
    out = _phase(ds, SCHEDULE)
    assert group.error(out[schema.OBJ].values, out[schema.OBJ_TRUE].values) < 0.02
    assert max(out.attrs["phase_classic"]["coherence_kernel_rms_px"]) < 0.2
