"""The modes of a support that unmeasured pixels (a beamstop) hide: values, modes, warning."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import sipflow
from sipflow import schema
from sipflow.physics import centred_farfield, unmeasured_modes
from sipflow.report import summary_rows


def _disc(n: int, radius: float, centre=(0.0, 0.0)) -> np.ndarray:
    y, x = np.mgrid[:n, :n] - n // 2
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2


def _measured(n: int, beamstop: float, dead: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ~_disc(n, beamstop) & (rng.random((n, n)) >= dead)


def _dense_fractions(support: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Reference: the matrix of P_S F^-1 P_U F P_S from the kernel F^-1(unmeasured)."""
    # h(r) = sum over unmeasured q of exp(2 pi i q.r / n) / N (unitary transforms)
    h = np.fft.ifftn(np.fft.ifftshift(~measured).astype(complex))
    idx = np.nonzero(support)
    a = h[tuple((i[:, None] - i[None, :]) % n for i, n in zip(idx, support.shape,
                                                              strict=True))]
    return np.sort(np.linalg.eigvalsh(a))[::-1]


def test_one_pixel_support_hides_the_unmeasured_share():
    """A point has a flat spectrum: its one mode puts (unmeasured / all) of its power there."""
    support = np.zeros((32, 32), bool)
    support[16, 16] = True
    measured = _measured(32, 3.0, 0.1)
    modes = unmeasured_modes(support, measured)
    assert modes.fractions.shape == (1,)
    assert modes.fractions[0] == pytest.approx((~measured).mean(), abs=1e-12)


@pytest.mark.parametrize(("radius", "beamstop", "dead"), [
    (18.0, 6.0, 0.10),  # support (~1000 px) larger than the unmeasured set (~520 px)
    (13.0, 14.0, 0.10),  # unmeasured set (~960 px) larger than the support (~530 px)
    (5.0, 3.0, 0.02),  # small enough for the dense path
])
def test_lanczos_matches_the_dense_operator(radius, beamstop, dead):
    support = _disc(64, radius, centre=(3.0, -2.0))
    measured = _measured(64, beamstop, dead)
    modes = unmeasured_modes(support, measured, k=6)
    reference = _dense_fractions(support, measured)[:6]
    np.testing.assert_allclose(modes.fractions, reference, atol=1e-3)
    # each mode lies in the support, has unit norm and hides exactly its fraction
    for f, m in zip(modes.fractions, modes.modes, strict=True):
        assert np.abs(m[~support]).max() == 0
        assert np.linalg.norm(m) == pytest.approx(1.0, abs=1e-9)
        hidden = (np.abs(centred_farfield(m)[~measured]) ** 2).sum()
        assert hidden == pytest.approx(f, abs=1e-3)


def test_three_dimensional_volumes():
    z, y, x = np.mgrid[:24, :24, :24] - 12
    support = (z**2 + y**2 + x**2) <= 25  # 515 voxels: the iterative path
    measured = (z**2 + y**2 + x**2) > 4  # a beamstop of radius 2 voxels around q = 0
    measured &= np.random.default_rng(1).random(measured.shape) >= 0.05
    modes = unmeasured_modes(support, measured, k=4)
    np.testing.assert_allclose(modes.fractions, _dense_fractions(support, measured)[:4],
                               atol=1e-3)


def test_a_large_beamstop_over_a_compact_object_leaves_modes_undetermined():
    """Three speckles' worth of beamstop over a filled disc: several modes >= 99 % hidden;
    one speckle: none."""
    support = _disc(128, 20.0)  # speckle ~ 128 / 40 ~ 3 px
    large = unmeasured_modes(support, _measured(128, 10.0, 0.0), k=8, with_modes=False)
    assert large.modes is None
    small = unmeasured_modes(support, _measured(128, 2.0, 0.0), k=8)
    assert large.count(0.99) >= 3
    assert small.count(0.99) == 0
    assert small.fractions[0] < 0.9


def test_a_complete_detector_hides_nothing():
    modes = unmeasured_modes(_disc(32, 5.0), np.ones((32, 32), bool))
    assert modes.fractions.size == 0 and modes.count() == 0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        unmeasured_modes(np.ones((8, 8), bool), np.ones((8, 9), bool))


def _result(beamstop: float) -> xr.Dataset:
    """A 'reconstruction' equal to the truth, with its data and a beamstop of `beamstop` px."""
    n = 128
    support = _disc(n, 20.0)
    obj = support.astype(np.complex64)
    intensity = (np.abs(centred_farfield(obj.astype(np.complex128))) ** 2 * 1e4).astype(
        np.float32)
    dims, rdims = schema.detector_dims(2), schema.real_dims(2)
    return xr.Dataset({schema.OBJ: (rdims, obj), schema.SUPPORT: (rdims, support),
                       schema.INTENSITY: (dims, intensity),
                       schema.MASK: (dims, _measured(n, beamstop, 0.0))})


def test_metrics_count_them_and_the_summary_warns():
    template = {"name": "m", "stages": [{"use": "analyse.metrics"}]}
    hidden = sipflow.run_pipeline(template, _result(10.0), device="cpu")
    metrics = hidden.attrs["metrics"]
    assert metrics["undetermined_modes"] >= 3
    assert len(metrics["unmeasured_mode_power"]) == 8
    warning = dict(summary_rows(hidden)).get("mode warning", "")
    assert "not unique" in warning and "beamstop" in warning
    seen = sipflow.run_pipeline(template, _result(2.0), device="cpu")
    assert seen.attrs["metrics"]["undetermined_modes"] == 0
    assert "mode warning" not in dict(summary_rows(seen))
    off = sipflow.run_pipeline({"name": "m", "stages": [{"use": "analyse.metrics", "with": {
        "unmeasured_modes": 0}}]}, _result(10.0), device="cpu")
    assert "undetermined_modes" not in off.attrs["metrics"]
