"""prep.standard on 2-D and 3-D data: corrections, centring, cropping, bad counts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sipflow.errors import DataError
from sipflow.physics import centred_farfield
from sipflow.preprocess import Standard
from sipflow.testing import simulated_dataset


def _raw(counts, mask=None, **extra):
    dims = ("frame", "det_y", "det_x")[-counts.ndim:]
    data = {"intensity": (dims, counts)}
    if mask is not None:
        data["mask"] = (dims[-mask.ndim:], mask)
    data.update(extra)
    return xr.Dataset(data, attrs={"source": "raw.h5"})


def test_dark_threshold_and_mask():
    counts = np.full((16, 16), 10, np.int32)
    counts[8, 8] = 1000
    counts[0, 0] = 3
    mask = np.ones((16, 16), bool)
    mask[1, 1] = False
    dark = np.full((16, 16), 2.0, np.float32)
    out = Standard()(_raw(counts, mask, dark=(("det_y", "det_x"), dark)),
                     {"threshold": 5, "centre": "none"})
    i = out["intensity"].values
    assert i[8, 8] == 998 and i[2, 2] == 8, "dark subtracted"
    assert i[0, 0] == 0, "1 count after dark is below threshold"
    assert i[1, 1] == 0 and not out["mask"].values[1, 1], "masked pixel zeroed"


def test_saturated_integer_pixels_are_masked():
    counts = np.full((16, 16), 5, np.uint32)
    counts[3, 4] = np.iinfo(np.uint32).max
    out = Standard()(_raw(counts), {"centre": "none"})
    assert not out["mask"].values[3, 4] and out["intensity"].values[3, 4] == 0


@pytest.mark.parametrize("how", ["max", "com"])
def test_centring_moves_the_peak_to_the_middle(how):
    counts = np.zeros((32, 40), np.float32)
    counts[10:13, 20:23] = 1.0
    counts[11, 21] = 5.0
    out = Standard()(_raw(counts), {"centre": how})
    i = out["intensity"].values
    assert i.shape == (32, 40)
    assert np.unravel_index(i.argmax(), i.shape) == (16, 20)
    assert not out["mask"].values[0].any(), "rows moved in from beyond the detector are masked"


def test_crop_and_bin_3d():
    ds = simulated_dataset((24, 32, 32), photons=1e8)
    out = Standard()(ds, {"size": [12, 8, 8], "bin": [1, 2, 2]})
    assert out["intensity"].shape == (12, 8, 8)
    assert out["intensity"].dims == ("frame", "det_y", "det_x")
    total_window = ds["intensity"].values[6:18, 8:24, 8:24].sum()
    assert out["intensity"].values.sum() == pytest.approx(total_window, rel=1e-5)
    assert "obj_true" not in out, "truth dropped when binning"


def test_truth_follows_a_q_space_crop():
    ds = simulated_dataset((64, 64), photons=None)
    out = Standard()(ds, {"size": 48})
    model = np.abs(centred_farfield(out["obj_true"].values)) ** 2
    np.testing.assert_allclose(model, out["intensity"].values, rtol=1e-3,
                               atol=1e-4 * model.max())


@pytest.mark.parametrize("value, what", [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"),
                                         (-3.0, "negative")])
def test_invalid_counts_are_reported_with_count_and_place(value, what):
    counts = np.ones((3, 16, 16), np.float32)
    counts[1, 2, 3] = value
    counts[2, 5, 5] = value
    with pytest.raises(DataError, match=rf"raw\.h5: intensity has 2 {what} count\(s\).*"
                                        r"\(1, 2, 3\), \(2, 5, 5\)"):
        Standard()(_raw(counts))
    out = Standard()(_raw(counts), {"on_invalid": "mask", "centre": "none"})
    assert not out["mask"].values[1, 2, 3]


def test_invalid_counts_under_the_mask_are_fine():
    counts = np.ones((16, 16), np.float32)
    counts[2, 3] = np.nan
    mask = np.ones((16, 16), bool)
    mask[2, 3] = False
    assert np.isfinite(Standard()(_raw(counts, mask))["intensity"].values).all()


def test_all_zero_data():
    with pytest.raises(DataError, match="zero on every valid pixel"):
        Standard()(_raw(np.zeros((16, 16), np.float32)))


def test_mask_of_wrong_shape_in_a_dataset():
    ds = _raw(np.ones((16, 16), np.float32)).assign(mask=(("my", "mx"), np.ones((8, 8), bool)))
    with pytest.raises(DataError, match=r"mask has shape \(8, 8\); expected"):
        Standard()(ds)


def test_one_dimensional_intensity():
    ds = xr.Dataset({"intensity": (("q",), np.ones(16))}, attrs={"source": "line.h5"})
    with pytest.raises(DataError, match=r"line\.h5: intensity has shape \(16,\) \(1-D\)"):
        Standard()(ds)


@pytest.mark.parametrize("offset", [(3, -4), (-6, 5)])
def test_symmetry_centring_finds_an_offset_centre_behind_a_large_beamstop(offset):
    """A real forward-CDI pattern: q = 0 off the array centre, hidden by a beamstop that
    covers several speckles, with gaps and dead pixels. The Friedel centre of the valid
    pixels is found exactly, and the truth seen through the window fits the data."""
    from sipflow.physics import FarField

    ds = simulated_dataset((128, 128), kind="lithograph", extent=0.3, photons=None,
                           beamstop=8, gaps=2, dead_pixels=0.02, centre_offset=offset, seed=4,
                           phase_amplitude=0.0, with_obj=True)
    out = Standard()(ds, {"centre": "symmetry"})
    centre = out.attrs["prep_window"]["centre"]
    assert centre == [64 + offset[0], 64 + offset[1]]
    calc = FarField(ndim=2).intensity(out["obj_true"].values.astype(np.complex128))
    valid = out["mask"].values
    np.testing.assert_allclose(calc[valid], out["intensity"].values[valid], rtol=1e-3,
                               atol=1e-3 * calc.max())


def test_lithograph_object_is_real_sharp_and_asymmetric():
    from sipflow.simulate import make_object
    from sipflow.symmetry import canonical

    obj = make_object((128, 128), "lithograph", extent=0.3, rng=np.random.default_rng(0))
    assert np.isrealobj(obj) or np.all(obj.imag == 0)
    amp = np.abs(obj)
    assert set(np.unique(amp)) == {0.0, 1.0}, "binary: sharp edges"
    inside = amp > 0
    assert 0.02 < inside.mean() < 0.2
    assert not canonical(obj).ambiguous_twin, "the twin is distinguishable"


@pytest.mark.parametrize("seed", [0, 3])
def test_logo_object_has_29_parts_and_is_real(seed):
    from scipy import ndimage

    from sipflow.simulate import make_object
    from sipflow.symmetry import canonical

    obj = make_object((512, 512), "logo", extent=0.28, rng=np.random.default_rng(seed))
    assert np.all(obj.imag == 0) and obj.real.min() >= 0
    inside = np.abs(obj) > 0
    assert ndimage.label(inside)[1] == 29
    assert 0.02 < inside.mean() < 0.03
    rows, cols = np.nonzero(inside)
    assert 130 < np.ptp(rows) < 150 and 125 < np.ptp(cols) < 150
    assert not canonical(obj).ambiguous_twin


def test_a_processed_pattern_is_symmetrised_rescaled_and_masked_as_a_provider_does():
    from sipflow.physics import symmetric_share
    from sipflow.simulate import Simulation, simulate

    counts = simulate(Simulation(shape=(128, 128), kind="logo", photons=1e8, seed=2,
                                 beamstop_size=(8, 4), masked_squares=3))
    done = simulate(Simulation(shape=(128, 128), kind="logo", photons=1e8, seed=2,
                               beamstop_size=(8, 4), masked_squares=3, processed=True))
    mask = done["mask"]
    # the rectangle around q = 0 (64, 64) is unmeasured, the pixels beside it measured
    assert not mask[60:68, 62:66].any() and mask[64, 70] and mask[70, 64]
    assert (~mask).sum() >= 32 + 3 * 16  # the beamstop and the squares (and mirrors)
    assert not np.allclose(done["intensity"][mask], np.round(done["intensity"][mask]))
    assert symmetric_share(done["intensity"], mask) > 0.99
    assert symmetric_share(counts["intensity"], counts["mask"]) < 0.5
    assert np.all(done["intensity"][~mask] == 0)
    gain = done["intensity"].sum() / counts["intensity"][mask].sum()
    assert 30 < gain < 45
    # the truth is rescaled with the data: |F obj|^2 stays the expected intensity
    assert np.abs(done["obj"]).max() ** 2 == pytest.approx(
        gain * np.abs(counts["obj"]).max() ** 2, rel=0.2)


def test_simulate_command_writes_a_processed_logo(tmp_path, capsys):
    import h5py

    from sipflow.cli import main

    path = tmp_path / "logo.h5"
    assert main(["simulate", str(path), "--shape", "128", "128", "--object", "logo",
                 "--processed", "--beamstop-size", "6", "4", "--masked-squares", "2"]) == 0
    assert "processed" in capsys.readouterr().out
    with h5py.File(path) as f:
        data = f["/entry_1/instrument_1/detector_1/data"]
        assert data.dtype == np.float32
        assert f["/entry_1/instrument_1/detector_1/mask"][64, 64] != 0


def test_background_and_dead_pixels_are_simulated():
    from sipflow.simulate import Simulation, simulate

    quiet = simulate(Simulation(shape=(64, 64), photons=1e6, seed=1))
    noisy = simulate(Simulation(shape=(64, 64), photons=1e6, seed=1, background=2.0,
                                dead_pixels=0.05))
    far = np.zeros((64, 64), bool)
    far[:8, :8] = True  # high q: almost no signal, background dominates
    assert noisy["intensity"][far & noisy["mask"]].mean() > quiet["intensity"][far].mean() + 1
    assert 0.03 < 1 - noisy["mask"].mean() < 0.07
    assert (noisy["intensity"][~noisy["mask"]] == 0).all()


@pytest.mark.parametrize("kind, beamstop, offset", [("blob", 2, (0, 0)), ("blob", 3, (2, -3)),
                                                    ("lithograph", 8, (-5, 4))])
def test_default_centring_finds_q0_behind_the_beamstop(kind, beamstop, offset):
    """'auto' (Friedel symmetry of the measured pixels) is exact where the maximum of the
    smoothed pattern was 2-4 px off: the brightest pixels ring the beamstop."""
    ds = simulated_dataset((128, 128), kind=kind, photons=1e9, beamstop=beamstop, seed=1,
                           centre_offset=offset, gaps=2, dead_pixels=0.01)
    out = Standard()(ds)
    assert out.attrs["prep_window"]["centre"] == [64 + offset[0], 64 + offset[1]]
