"""The shared physics: the far-field model and the likelihoods, in torch (autograd) and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sipflow.physics import (
    FarField,
    euclidean_nll,
    free_llk,
    gaussian_coherence,
    gaussian_nll,
    normalised_llk,
    poisson_nll,
)
from sipflow.reconstruct._projections import poisson_gradient


def _obj(shape, seed=0, dtype=np.complex128):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


@pytest.mark.parametrize("shape", [(16, 12), (8, 10, 6)])
@pytest.mark.parametrize("layout", ["centred", "unshifted"])
def test_propagation_is_unitary_and_torch_equals_numpy(shape, layout):
    model = FarField(ndim=len(shape), layout=layout)
    x = _obj(shape)
    f_np = model.propagate(x)
    f_t = model.propagate(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(f_t, f_np, atol=1e-12)
    assert np.isclose((np.abs(x) ** 2).sum(), (np.abs(f_np) ** 2).sum())  # Parseval
    np.testing.assert_allclose(model.backpropagate(f_np), x, atol=1e-12)
    np.testing.assert_allclose(model.intensity(x), np.abs(f_np) ** 2, atol=1e-10)


def test_centred_layout_puts_q0_at_the_middle():
    model = FarField(ndim=2)
    x = np.zeros((8, 8), complex)
    x[4, 4] = 1  # a point at the centre: flat field with zero phase
    f = model.propagate(x)
    np.testing.assert_allclose(f, np.full((8, 8), 1 / 8), atol=1e-12)
    const = model.propagate(np.ones((8, 8), complex))
    assert np.argmax(np.abs(const)) == 4 * 8 + 4


@pytest.mark.parametrize("layout", ["centred", "unshifted"])
def test_backpropagation_is_the_adjoint(layout):
    model = FarField(ndim=2, layout=layout)
    x, y = _obj((12, 10), 1), _obj((12, 10), 2)
    lhs = np.vdot(model.propagate(x), y)   # <F x, y>
    rhs = np.vdot(x, model.backpropagate(y))  # <x, F^H y>
    assert np.isclose(lhs, rhs, rtol=1e-12)


def test_intensity_gradient_by_gradcheck():
    model = FarField(ndim=2, mask=np.random.default_rng(0).random((6, 5)) > 0.2,
                     background=0.5, coherence=gaussian_coherence(0.7, 2))
    x = torch.from_numpy(_obj((2, 6, 5))).requires_grad_(True)
    obs = torch.from_numpy(np.random.default_rng(3).poisson(3, (6, 5)).astype(np.float64))

    def loss(x):
        return poisson_nll(model.intensity(x), obs, model.valid(x), 2)

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-5)
    for nll in (gaussian_nll, euclidean_nll):
        assert torch.autograd.gradcheck(lambda x, nll=nll: nll(model.intensity(x) + 1, obs),
                                        (x,), eps=1e-6, atol=1e-5)


def test_background_and_coherence_are_applied():
    x = _obj((16, 16))
    plain = FarField(ndim=2).intensity(x)
    blurred = FarField(ndim=2, coherence=gaussian_coherence(1.5, 2)).intensity(x)
    assert np.isclose(blurred.sum(), plain.sum())  # a blur keeps the photons
    assert blurred.std() < plain.std()
    np.testing.assert_allclose(FarField(ndim=2, background=2.0).intensity(x), plain + 2.0)


def test_likelihoods_vanish_at_the_data_and_grow_away_from_it():
    obs = torch.tensor([[0.0, 1.0], [4.0, 100.0]], dtype=torch.float64)
    for nll in (poisson_nll, gaussian_nll, euclidean_nll):
        assert float(nll(obs.clamp_min(1e-30), obs)) == pytest.approx(0, abs=1e-6)
        assert float(nll(obs * 1.5 + 0.1, obs)) > 0
    calc_np = (obs.numpy() + 1)[None].repeat(3, 0)
    assert poisson_nll(calc_np, obs.numpy()).shape == (3,), "numpy in, batched numpy out"


def test_normalised_and_free_llk_are_about_one_at_the_truth():
    rng = np.random.default_rng(5)
    model = FarField(ndim=2)
    x = np.zeros((64, 64), complex)
    x[20:44, 24:40] = np.exp(1j * rng.random((24, 16)))
    counts, scale = model.simulate(x, 1e7, rng)
    calc = model.intensity(x * np.sqrt(scale))
    free = rng.random((64, 64)) < 0.05
    valid = ~free
    for kind in ("poisson", "gaussian", "euclidean"):
        value = float(normalised_llk(calc, counts, valid, kind=kind))
        assert 0.8 < value < 1.25, (kind, value)
    assert 0.8 < float(free_llk(calc, counts, free)) < 1.25
    assert float(normalised_llk(calc * 1.3, counts, valid)) > 5, "a wrong fit scores badly"


def test_autograd_gradient_equals_the_engine_ml_gradient():
    g = torch.Generator().manual_seed(0)
    shape = (20, 18)
    x = torch.randn((2, *shape), dtype=torch.complex128, generator=g)
    obs = torch.poisson(5 * torch.rand(shape, dtype=torch.float64, generator=g), generator=g)
    mask = torch.rand(shape, generator=g) > 0.1
    support = torch.rand((2, *shape), generator=g) > 0.4
    model = FarField(ndim=2, layout="unshifted")
    xg = x.clone().requires_grad_(True)
    poisson_nll(model.intensity(xg), obs, mask, 2).sum().backward()
    hand, _, _ = poisson_gradient(x, obs, mask, support, 2)
    auto = torch.where(support, xg.grad, torch.zeros_like(x))
    torch.testing.assert_close(auto, 2 * hand, rtol=1e-9, atol=1e-9)


def test_simulate_scales_photons_and_masks():
    rng = np.random.default_rng(0)
    mask = np.ones((32, 32), bool)
    mask[14:18, 14:18] = False
    counts, _ = FarField(ndim=2, mask=mask).simulate(_obj((32, 32)), 1e6, rng)
    assert (counts[~mask] == 0).all()
    assert counts.sum() == pytest.approx(1e6 * mask.mean(), rel=0.1)
    noiseless, one = FarField(ndim=2).simulate(_obj((32, 32)), None, rng)
    assert one == 1.0 and np.allclose(noiseless, FarField(ndim=2).intensity(_obj((32, 32))))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_model_runs_on_cuda():
    x = torch.from_numpy(_obj((16, 16))).cuda()
    i = FarField(ndim=2).intensity(x)
    assert i.is_cuda
    np.testing.assert_allclose(i.cpu().numpy(), FarField(ndim=2).intensity(x.cpu().numpy()),
                               rtol=1e-10)


def test_measurement_from_a_dataset_checks_counts_and_keeps_held_out_pixels():
    import torch

    from sipflow import schema
    from sipflow.errors import DataError
    from sipflow.physics import Measurement
    from sipflow.testing import simulated_dataset

    ds = simulated_dataset((64, 64), photons=1e8, seed=1)
    meas = Measurement.from_dataset(ds, stage="test")
    assert meas.free_from == "none" and not meas.has_free and np.isnan(meas.free_llk(0))
    truth = ds[schema.OBJ_TRUE].values
    assert 0.9 < meas.llk(truth) < 1.1  # Poisson counts of the truth: ~1 per pixel
    drawn = meas.hold_out(0.05, 2.0, torch.Generator().manual_seed(3))
    again = meas.hold_out(0.05, 2.0, torch.Generator().manual_seed(3))
    assert drawn.free_from == "new" and np.array_equal(drawn.free, again.free)
    assert 0.02 < drawn.free.sum() / drawn.mask.sum() < 0.08
    assert not (drawn.valid & drawn.free).any() and (drawn.free <= drawn.mask).all()
    assert 0.8 < drawn.free_llk(truth) < 1.2
    # a later stage sees the same held-out pixels, restricted to measured ones
    later = ds.assign({schema.FREE_MASK: (ds[schema.INTENSITY].dims, drawn.free),
                       schema.MASK: (ds[schema.INTENSITY].dims, ~drawn.free | drawn.mask)})
    kept = Measurement.from_dataset(later, stage="test")
    assert kept.free_from == "dataset" and np.array_equal(kept.free, drawn.free)
    counts = ds[schema.INTENSITY].values.copy()
    counts[0, 0] = -5.0
    bad = ds.assign({schema.INTENSITY: (ds[schema.INTENSITY].dims, counts)})
    with pytest.raises(DataError, match="negative"):
        Measurement.from_dataset(bad, stage="test")
