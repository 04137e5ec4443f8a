"""The HDF5 reader on real files of every supported layout, and on bad ones."""

from __future__ import annotations

import dask.array as da
import h5py
import numpy as np
import pytest

import sipflow
from sipflow.errors import DataError, InputError
from sipflow.simulate import Simulation, simulate, write_scan


def test_cxi_2d(scans):
    ds = sipflow.load(scans["2d"])
    assert ds["intensity"].dims == ("det_y", "det_x")
    assert ds["intensity"].shape == (64, 64)
    assert isinstance(ds["intensity"].data, da.Array), "frames are read lazily"
    assert ds.attrs["source_layout"] == "cxi"
    assert ds["mask"].dtype == bool and ds["mask"].values.all()
    assert ds.attrs["energy_eV"] == pytest.approx(8000.0)
    assert ds.attrs["wavelength_m"] == pytest.approx(1.5498e-10, rel=1e-4)
    assert ds.attrs["distance_m"] == 2.0 and ds.attrs["pixel_size_m"] == 75e-6
    assert ds["obj_true"].dtype == np.complex64
    expected = simulate(Simulation(shape=(64, 64), photons=None, seed=1))["intensity"]
    np.testing.assert_allclose(ds["intensity"].values, expected, rtol=1e-6)


def test_nexus_nxdata_signal_and_pixel_mask(scans):
    ds = sipflow.load(scans["2d_noisy"])
    assert ds.attrs["source_layout"] == "nexus"
    assert ds.attrs["source_dataset"] == "/entry/measurement/counts"
    mask = ds["mask"].values
    assert not mask.all() and mask.mean() > 0.9, "beamstop and gaps are masked"
    assert not mask[32, 32], "the beamstop centre is invalid"


def test_eiger_master_with_external_bitshuffle_files(scans):
    ds = sipflow.load(scans["eiger3d"])
    assert ds.attrs["source_layout"] == "eiger"
    assert ds["intensity"].dims == ("frame", "det_y", "det_x")
    assert ds["intensity"].shape == (40, 48, 48), "3 data files concatenated"
    with h5py.File(scans["eiger3d"].with_name("eiger3d_data_000001.h5")) as f:
        assert "32008" in str(f["/entry/data/data"]._filters), "bitshuffle filter in use"
    truth = simulate(Simulation(shape=(40, 48, 48), kind="crystal", photons=1e9, seed=4))
    np.testing.assert_array_equal(ds["intensity"].values, truth["intensity"].astype(np.uint32))
    assert ds["intensity"].data.chunksize[0] == 1, "one frame per chunk"


def test_explicit_dataset_overrides(scans):
    ds = sipflow.load(scans["2d"], dataset="/entry_1/instrument_1/detector_1/data")
    assert ds.attrs["source_layout"] == "explicit"


def test_real_gold_crystal_scan(real_scan):
    from conftest import REAL_SHA256

    ds = sipflow.load(real_scan)
    assert ds["intensity"].shape == (201, 256, 256)
    assert ds["intensity"].dtype == np.int32
    assert ds.attrs["source_sha256"] == REAL_SHA256
    assert ds.attrs["energy_eV"] == pytest.approx(9000.0)
    assert ds.attrs["wavelength_m"] == pytest.approx(1.3776e-10, rel=1e-4)
    assert ds.attrs["distance_m"] == pytest.approx(0.5)
    assert ds.attrs["pixel_size_m"] == pytest.approx(55e-6)
    assert ds["dark"].shape == (256, 256) and ds["flat"].shape == (256, 256)
    assert int((ds["dark"].values > 1).sum()) == 13
    frame = ds["intensity"][99].values
    assert frame.max() == 165297 and np.unravel_index(frame.argmax(), frame.shape) == (126, 127)


# --- bad input: each gets a clear error naming the file and what was expected ----------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        sipflow.load(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "scan.h5"
    p.write_text("this is not HDF5")
    with pytest.raises(InputError, match=r"scan\.h5.*no reader|not an HDF5"):
        sipflow.load(p)


def test_truncated_hdf5(scans, tmp_path):
    data = scans["2d"].read_bytes()
    p = tmp_path / "truncated.h5"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="truncated"):
        _ = sipflow.load(p).intensity.values


def test_no_frames_lists_what_was_found(tmp_path):
    p = tmp_path / "empty.h5"
    with h5py.File(p, "w") as f:
        f["/entry/sample/temperature"] = np.arange(5.0)
    with pytest.raises(InputError, match=r"no detector frames.*temperature \(5,\)"):
        sipflow.load(p)


def test_ambiguous_frames_ask_for_dataset(tmp_path):
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        for name in ("a", "b"):
            g = f.create_group(f"/entry/{name}")
            g.attrs["NX_class"] = "NXdata"
            g.attrs["signal"] = "data"
            g["data"] = np.ones((16, 16))
    with pytest.raises(InputError, match=r"several datasets.*/entry/a/data.*--dataset"):
        sipflow.load(p)
    assert sipflow.load(p, dataset="/entry/b/data")["intensity"].shape == (16, 16)


def test_missing_explicit_dataset(scans):
    with pytest.raises(InputError, match=r"dataset '/nope' not found.*Datasets in the file"):
        sipflow.load(scans["2d"], dataset="/nope")


@pytest.mark.parametrize("shape", [(64,), (2, 3, 16, 16)])
def test_wrong_dimensionality(tmp_path, shape):
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f["/entry_1/data_1/data"] = np.ones(shape)
    with pytest.raises(DataError, match=rf"{len(shape)}-D.*expected a 2-D"):
        sipflow.load(p)


def test_mask_of_wrong_shape(tmp_path):
    p = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32), photons=None))
    with h5py.File(p, "r+") as f:
        del f["/entry_1/instrument_1/detector_1/mask"]
        f["/entry_1/instrument_1/detector_1/mask"] = np.zeros((30, 32), np.uint32)
    with pytest.raises(DataError, match=r"mask.*\(30, 32\).*detector shape \(32, 32\)"):
        sipflow.load(p)


def test_eiger_missing_data_file(tmp_path):
    p = write_scan(tmp_path / "e.h5", Simulation(shape=(32, 32), photons=1e6), layout="eiger")
    p.with_name("e_data_000001.h5").unlink()
    with pytest.raises(InputError, match=r"e_data_000001\.h5.*cannot be opened"):
        sipflow.load(p)


def test_complex_frames_rejected(tmp_path):
    p = tmp_path / "c.h5"
    with h5py.File(p, "w") as f:
        f["/entry_1/data_1/data"] = np.ones((16, 16), np.complex64)
    with pytest.raises(DataError, match="expected real photon counts"):
        sipflow.load(p)


def test_nexus_transformations_give_the_angles_and_the_rocking_axis(tmp_path):
    """NXtransformations rotations (radians or degrees, with their vectors) become the
    geometry bragg.orthogonalize uses; the CXI layout keeps its fixed paths."""
    from sipflow.bragg._ortho_stage import GeometryBlock, scan_geometry
    from sipflow.simulate import Simulation, write_scan

    sim = Simulation(shape=(16, 32, 32), kind="crystal", photons=None, delta_deg=32.0,
                     gamma_deg=12.5, rocking_step_deg=0.01, rocking_axis="-x", seed=1)
    nexus = sipflow.load(write_scan(tmp_path / "nx.h5", sim, layout="nexus"))
    assert nexus.attrs["delta_deg"] == pytest.approx(32.0)
    assert nexus.attrs["gamma_deg"] == pytest.approx(12.5)
    assert nexus.attrs["rocking_step_deg"] == pytest.approx(0.01)
    assert nexus.attrs["rocking_axis"] == "-x" and nexus.attrs["rocking_motor"] == "theta"
    geo, info = scan_geometry(nexus, GeometryBlock(), "nx.h5")
    assert geo.rocking_axis == "-x" and info["rocking_axis_from"] == "file"
    geo, info = scan_geometry(nexus, GeometryBlock(rocking_axis="y"), "nx.h5")
    assert geo.rocking_axis == "y" and info["rocking_axis_from"] == "geometry block"
    cxi = sipflow.load(write_scan(tmp_path / "cxi.h5", sim, layout="cxi"))
    assert cxi.attrs["rocking_step_deg"] == pytest.approx(0.01)
    assert "rocking_axis" not in cxi.attrs
    assert scan_geometry(cxi, GeometryBlock(), "cxi.h5")[0].rocking_axis == "y"
