"""Each plan operator and engine option does what it says (each test fails when it is ignored)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sipflow.reconstruct import ClassicParams, EngineSettings, iterate, parse
from sipflow.reconstruct._operators import OPERATORS
from sipflow.reconstruct._plan import ITERATION_OPS, OTHER_OPS
from sipflow.testing import simulated_dataset


def _problem(shape=(48, 48), seed=3, **kw):
    ds = simulated_dataset(shape, photons=None, seed=seed, **kw)
    return (torch.as_tensor(ds["intensity"].values, dtype=torch.float32),
            torch.as_tensor(ds["mask"].values.astype(bool)))


def _run(plan: str, runs=2, **params):
    intensity, mask = _problem(**params.pop("problem", {}))
    settings = EngineSettings.from_params(ClassicParams(**params), ndim=intensity.ndim)
    gen = iterate(intensity, mask, parse(plan), list(range(runs)), settings)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_every_operator_of_the_grammar_has_an_entry():
    assert set(OPERATORS) == set(ITERATION_OPS + OTHER_OPS)


def test_settings_come_from_the_parameter_model():
    p = ClassicParams(beta=0.7, post_expand=[-1, 1], detwin_axis=2)
    s = EngineSettings.from_params(p, ndim=2)
    assert s.beta == 0.7 and s.post_expand == (-1, 1) and s.detwin_axis == 1
    default = EngineSettings.from_params()
    for name in ("beta", "shrinkwrap_threshold", "sigma_start", "llk_every"):
        assert getattr(default, name) == ClassicParams.model_fields[name].default


def test_positivity_keeps_the_object_real_and_non_negative():
    res = _run("HIO**20 * ER**5", positivity=True, initial_support="circle", support_size=0.3,
               problem={"phase_amplitude": 0.0})
    inside = res.x[res.support]
    assert inside.imag.abs().max() == 0, "positivity keeps only the real part"
    assert inside.real.min() >= 0
    free = _run("HIO**20 * ER**5", positivity=False, initial_support="circle",
                support_size=0.3, problem={"phase_amplitude": 0.0})
    assert free.x[free.support].imag.abs().max() > 1e-3, "without it the object is complex"


def test_detwin_halves_the_support_along_its_axis():
    for axis in (0, 1):
        res = _run("ER * detwin", initial_support="circle", support_size=0.3, detwin_axis=axis)
        full = _run("ER", initial_support="circle", support_size=0.3)
        kept = res.support.sum(dim=(1, 2)).float()
        before = full.support.sum(dim=(1, 2)).float()
        assert torch.all((kept / before - 0.5).abs() < 0.1), (kept, before)
        # the cut is across `axis`: half the extent along it, all of it along the other
        other = 1 - axis

        def extent(sup, ax):
            c = torch.nonzero(sup[0])[:, ax]
            return int(c.max() - c.min() + 1)

        assert abs(extent(res.support, axis) - extent(full.support, axis) / 2) <= 2
        assert extent(res.support, other) == extent(full.support, other)


def test_force_shrink_never_adds_pixels():
    kw = dict(initial_support="box", support_size=0.15, shrinkwrap_threshold=0.02)
    grown = _run("HIO**10 * sup * ER", **kw)
    shrunk = _run("HIO**10 * sup * ER", force_shrink=True, **kw)
    start = _run("ER", **kw).support
    assert (grown.support & ~start).any(), "a low threshold grows the support"
    assert not (shrunk.support & ~start).any(), "force_shrink keeps it inside"


def test_post_expand_dilates_after_each_shrinkwrap():
    kw = dict(initial_support="circle", support_size=0.3)
    plain = _run("HIO**10 * sup * ER", **kw).support.sum()
    grown = _run("HIO**10 * sup * ER", post_expand=[2], **kw).support.sum()
    eroded = _run("HIO**10 * sup * ER", post_expand=[-1], **kw).support.sum()
    assert eroded < plain < grown


def test_llk_every_sets_where_the_llks_are_recorded():
    res = _run("HIO**25", llk_every=5, initial_support="circle")
    assert res.llk_iterations == [5, 10, 15, 20, 25]
    assert torch.isfinite(res.llk).all()


@pytest.mark.parametrize("method", ["rms", "average"])
def test_shrinkwrap_reference_methods_differ_from_max(method):
    kw = dict(initial_support="circle", support_size=0.3)
    ref = _run("HIO**20 * sup * ER", **kw).support
    other = _run("HIO**20 * sup * ER", shrinkwrap_method=method, **kw).support
    assert not torch.equal(ref, other)


def test_beta_changes_hio():
    kw = dict(initial_support="circle", support_size=0.3)
    a = _run("HIO**5", beta=0.9, **kw).x
    b = _run("HIO**5", beta=0.5, **kw).x
    assert not np.allclose(a.numpy(), b.numpy())


def test_initial_support_survives_a_beamstop():
    """A beamstop hides the forward peak; the autocorrelation support must still be of
    the size it has with the full pattern (it used to take 60-90 % of the array)."""
    from sipflow.reconstruct._support import autocorrelation_support

    sizes = []
    for beamstop in (0, 2):
        ds = simulated_dataset((128, 128), photons=1e9, beamstop=beamstop, seed=3)
        i = torch.fft.ifftshift(torch.as_tensor(ds["intensity"].values, dtype=torch.float32))
        m = torch.fft.ifftshift(torch.as_tensor(ds["mask"].values.astype(bool)))
        sizes.append(float(autocorrelation_support(i, m, torch.tensor([0.1]), 2).float().mean()))
    full, hidden = sizes
    assert 0.6 * full < hidden < 1.4 * full, sizes


def test_a_shrinkwrap_threshold_range_draws_one_per_run_without_moving_the_runs_seeds():
    import pydantic

    from sipflow.reconstruct._operators import shrinkwrap_thresholds

    fixed = shrinkwrap_thresholds(0.2, [1, 2, 3], "cpu", torch.float64)
    assert fixed.tolist() == [0.2, 0.2, 0.2]
    drawn = shrinkwrap_thresholds((0.1, 0.25), [1, 2, 3, 4], "cpu", torch.float64)
    assert ((drawn >= 0.1) & (drawn <= 0.25)).all() and len(set(drawn.tolist())) == 4
    assert shrinkwrap_thresholds((0.1, 0.25), [3], "cpu", torch.float64).item() == drawn[2]
    s = EngineSettings.from_params(ClassicParams(shrinkwrap_threshold=[0.1, 0.25]), ndim=2)
    assert s.shrinkwrap_threshold == (0.1, 0.25)
    with pytest.raises(pydantic.ValidationError, match="low <= high"):
        ClassicParams(shrinkwrap_threshold=[0.3, 0.1])
    with pytest.raises(pydantic.ValidationError, match=r"\(0, 10\)"):
        ClassicParams(shrinkwrap_threshold=0)
