"""Scoring modulo global phase, sub-pixel translation and twin."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sipflow.analyse import Metrics, align, fourier_shift, subpixel_shift, twin
from sipflow.simulate import make_object


@pytest.mark.parametrize("shape, kind", [((64, 64), "blob"), ((32, 32, 32), "crystal")])
def test_subpixel_shift_is_found(shape, kind):
    obj = make_object(shape, kind, rng=np.random.default_rng(0))
    t = np.array([2.35, -1.6, 0.75][: len(shape)])
    moved = fourier_shift(obj, -t)
    est = subpixel_shift(obj, moved)
    np.testing.assert_allclose(est, t, atol=0.06)


@pytest.mark.parametrize("use_twin", [False, True])
def test_align_undoes_every_trivial_ambiguity(use_twin):
    obj = make_object((64, 64), "hexagon", rng=np.random.default_rng(1))
    rec = fourier_shift(obj, np.array([3.4, -2.2])) * np.exp(1.3j)
    if use_twin:
        rec = twin(rec)
    a = align(obj, rec)
    assert a.twin == use_twin
    assert a.error < 0.02, a.error


def test_align_reports_a_real_difference():
    rng = np.random.default_rng(2)
    obj = make_object((48, 48), "blob", rng=rng)
    other = make_object((48, 48), "ellipse", rng=rng)
    assert align(obj, other).error > 0.3


def test_metrics_need_only_obj():
    obj = make_object((32, 32), "ellipse", rng=np.random.default_rng(3)).astype(np.complex64)
    ds = xr.Dataset({"obj": (("y", "x"), obj)})
    out = Metrics()(ds)
    assert out.attrs["metrics"] == {}
    ds = ds.assign(obj_true=(("y", "x"), np.roll(obj, 3, axis=0) * np.exp(0.5j)))
    m = Metrics()(ds).attrs["metrics"]
    assert m["error"] < 1e-3 and m["shift_px"] == pytest.approx([3.0, 0.0], abs=0.05)
