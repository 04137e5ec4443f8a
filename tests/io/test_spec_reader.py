"""SPEC scans with their frame folders (silx + fabio), as APS 34-ID-C writes them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import sipflow
from sipflow.errors import DataError, InputError
from sipflow.testing import write_spec_scan

AU_111_NM = 0.4079990459 / np.sqrt(3)


@pytest.mark.realdata
def test_the_gold_scan_from_spec_and_tiff_equals_the_hdf5_copy(real_spec_tree, real_scan):
    spec = sipflow.load(real_spec_tree, scan=54)
    h5 = sipflow.load(real_scan)
    for name in ("intensity", "dark", "flat"):
        assert spec[name].dtype == h5[name].dtype, name
        np.testing.assert_array_equal(spec[name].values, h5[name].values, err_msg=name)
    assert spec["mask"].values.all()  # the SPEC tree has no mask file: every pixel valid
    for key in ("energy_eV", "wavelength_m", "distance_m", "pixel_size_m", "delta_deg",
                "gamma_deg", "rocking_step_deg"):
        assert spec.attrs[key] == pytest.approx(h5.attrs[key], rel=1e-12), key
    a = spec.attrs
    assert a["beamline"] == "aps-34idc" and a["rocking_motor"] == "theta"
    assert a["detector_roi"] == [0, 256, 0, 256] and a["detector_full_shape"] == [512, 512]
    assert a["positioners"]["Chi"] == 90 and len(a["positioners"]["Theta"]) == 201
    src = a["geometry_sources"]
    assert "motor camdist (mm, beamline aps-34idc)" in src["distance_m"]
    assert "motor Energy (keV, beamline aps-34idc)" in src["energy_eV"]
    assert a["dark_source"].endswith("dark.tif") and a["flat_source"].endswith("whitefield.tif")


@pytest.mark.realdata
@pytest.mark.slow
def test_bcdi_from_spec_gives_the_crystal_of_the_hdf5_copy(real_spec_tree, real_scan):
    from_spec = sipflow.run_pipeline("bcdi", sipflow.load(real_spec_tree, scan=54), seed=1)
    from_h5 = sipflow.run_pipeline("bcdi", real_scan, seed=1)
    voxel = from_h5.attrs["voxel_size_m"][0] * 1e9
    assert from_spec.attrs["voxel_size_m"][0] * 1e9 == pytest.approx(voxel, rel=1e-9)

    def size(ds):
        return np.array([np.ptp(ix) + 1 for ix in np.nonzero(ds["support"].values)]) * voxel

    assert np.all(np.abs(size(from_spec) - size(from_h5)) <= voxel), (size(from_spec),
                                                                      size(from_h5))
    d_spec, d_h5 = from_spec.attrs["bragg_d_spacing_nm"], from_h5.attrs["bragg_d_spacing_nm"]
    assert abs(d_spec - d_h5) < 1e-4 and d_spec == pytest.approx(AU_111_NM, rel=0.01)


def _tiny_spec(tmp_path, points=5, frames=None, number=7):
    rng = np.random.default_rng(0)
    data = rng.poisson(3, (points, 16, 16)).astype(np.int32) if frames is None else frames
    spec = tmp_path / "tiny.spec"
    write_spec_scan(spec, number, data, command=f"ascan  theta 0 1  {points - 1} 1",
                    motors={"Delta": 30.0, "Theta": 0.0, "Chi": 90.0, "Phi": 0.0,
                            "Gamma": 10.0, "Energy": 8.0, "camdist": 1000.0},
                    columns={"Theta": np.linspace(0, 1, points), "Detector": np.ones(points)},
                    header_lines=["#UIMR5  0 16 0 16 1"], frame_stem="tiny")
    return spec, data


def test_a_spec_scan_is_read_with_its_geometry_and_rocking_motor(tmp_path):
    spec, data = _tiny_spec(tmp_path)
    ds = sipflow.load(spec)  # one scan in the file: no --scan needed
    np.testing.assert_array_equal(ds["intensity"].values, data)
    assert ds.attrs["energy_eV"] == pytest.approx(8000.0)
    assert ds.attrs["distance_m"] == pytest.approx(1.0)  # camdist is in mm
    assert ds.attrs["rocking_step_deg"] == pytest.approx(0.25)
    assert ds.attrs["delta_deg"] == 30.0 and ds.attrs["gamma_deg"] == 10.0


def test_spec_bad_input_is_one_paragraph_naming_what_is_wrong(tmp_path):
    spec, data = _tiny_spec(tmp_path)
    write_spec_scan(spec, 9, data, command="ascan  theta 0 1  4 1",
                    motors={"Delta": 30.0, "Theta": 0.0}, columns={"Theta": np.arange(5.0)},
                    frame_stem="tiny")
    with pytest.raises(InputError, match=r"holds 2 scans \(7, 9\); choose one with --scan"):
        sipflow.load(spec)
    with pytest.raises(InputError, match=r"scan 8 is not in this SPEC file; its scans: 7, 9"):
        sipflow.load(spec, scan=8)
    (tmp_path / "tiny_S0009" / "tiny_S0009_00002.tif").unlink()
    with pytest.raises(DataError, match=r"5 points but .*tiny_S0009 holds 4 frame files; "
                                        r"missing frame numbers: 2"):
        sipflow.load(spec, scan=9)
    with pytest.raises(InputError, match=r"no folder of frames named \*_S0007"):
        sipflow.load(_moved(tmp_path, spec), scan=7)
    with pytest.raises(InputError, match=r"unknown beamline preset 'nope'"):
        sipflow.load(spec, scan=7, beamline="nope")


def _moved(tmp_path, spec):
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    target = lonely / spec.name
    target.write_bytes(spec.read_bytes())
    return target


def _few(tmp_path):
    import fabio.tifimage

    (tmp_path / "few").mkdir()
    for k in range(3):
        fabio.tifimage.TifImage(data=np.zeros((16, 16), np.int32)).write(
            str(tmp_path / "few" / f"f_{k}.tif"))
    return tmp_path / "few"


def test_cli_run_reads_a_spec_scan_and_bad_input_exits_2_writing_nothing(tmp_path):
    spec, _ = _tiny_spec(tmp_path, points=16, frames=None)
    out = tmp_path / "r.zarr"
    pipe = tmp_path / "p.yaml"
    pipe.write_text("stages:\n  - use: prep.standard\n    with: {sum_frames: true}\n")
    for engine in ("local", "prefect"):
        bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", str(pipe),
                              str(spec), "--scan", "99", "-o", str(out), "--engine", engine],
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2, bad.stderr
        assert "scan 99 is not in this SPEC file; its scans: 7" in bad.stderr
        assert "Traceback" not in bad.stderr and not out.exists()
    for extra, says in ((["--beamline", "nope"], "unknown beamline preset 'nope'. Valid "
                         "beamline presets: aps-34idc"),
                        (["--frames", str(_few(tmp_path))], "the scan has 16 points but "
                         f"{tmp_path / 'few'} holds 3 frame files")):
        bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", str(pipe),
                              str(spec), "--scan", "7", *extra, "-o", str(out), "--engine",
                              "local"],
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and not out.exists()
    for engine in ("local", "prefect"):
        store = tmp_path / f"r-{engine}.zarr"
        ok = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", str(pipe), str(spec),
                             "--scan", "7", "-o", str(store), "--engine", engine],
                            capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr
        zattrs = json.loads((store / "zarr.json").read_text())["attributes"]
        assert zattrs["source_layout"] == "spec" and zattrs["beamline"] == "aps-34idc"
        assert zattrs["source_dataset"] == "#S 7"
