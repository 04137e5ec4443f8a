"""The file's beam centre (NXdetector / Eiger ``beam_center_x|y``, units honoured) wins
over the centre found in the pattern."""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest

import sipflow
from sipflow.analyse import truth_metrics
from sipflow.errors import DataError
from sipflow.preprocess import truth_on_grid
from sipflow.simulate import Simulation, write_scan

N = 160
PIPELINE = {"stages": [{"use": "prep.standard"},
                       {"use": "phase.classic",
                        "with": {"schedule": "(sup * ER**5 * HIO**40)**12 * ER**100",
                                 "runs": 4}}]}


def _tilted(path, unit: str, layout: str = "nexus"):
    """A complex 160² crystal whose phase ramps by one pixel of q along the rows: the
    pattern's Friedel centre is one pixel below q = 0 (the beam), which the file records
    at (82, 78)."""
    sim = Simulation(shape=(N, N), kind="hexagon", extent=0.35, photons=None,
                     centre_offset=(3, -2), beam_centre=unit, seed=3)
    write_scan(path, sim, layout=layout)
    with h5py.File(path, "r+") as f:
        y = f["/entry/instrument/detector/beam_center_y"]
        y[()] = y[()] - (1 if unit == "pixel" else sim.pixel_size_m)
        truth = f["/entry_1/sample_1/sipflow_truth/obj"][()]
    # the object as seen from the beam: its own phase ramp kept
    return truth_on_grid(truth, [N // 2 + 2, N // 2 - 2], [N, N])


@pytest.mark.parametrize("unit", ["pixel", "m"])
def test_the_files_beam_centre_keeps_the_objects_phase_ramp(tmp_path, unit):
    expected = _tilted(tmp_path / "tilted.h5", unit)
    ds = sipflow.load(tmp_path / "tilted.h5")
    assert ds.attrs["beam_centre_px"] == pytest.approx([82.0, 78.0])
    assert f"beam_center_y, /entry/instrument/detector/beam_center_x ({unit})" in \
        ds.attrs["geometry_sources"]["beam_centre_px"]
    out = sipflow.run_pipeline(PIPELINE, ds, seed=0)
    window = out.attrs["prep_window"]
    assert window["centre"] == [82, 78] and window["centre_from"].startswith("beam centre")
    assert truth_metrics(out["obj"].values, expected)["error"] < 0.05
    # what the pattern alone says: the Friedel centre, one pixel off, loses the ramp
    friedel = {"stages": [{"use": "prep.standard", "with": {"centre": "friedel"}},
                          PIPELINE["stages"][1]]}
    out = sipflow.run_pipeline(friedel, ds, seed=0)
    assert out.attrs["prep_window"]["centre"] == [83, 78]
    assert truth_metrics(out["obj"].values, expected)["error"] > 0.3


def test_a_beam_centre_in_an_unknown_unit_or_missing_is_refused(tmp_path):
    path = tmp_path / "bad.h5"
    _tilted(path, "pixel")
    with h5py.File(path, "r+") as f:
        f["/entry/instrument/detector/beam_center_x"].attrs["units"] = "furlong"
    with pytest.raises(DataError, match=r"beam_center_x: unit 'furlong' is not a known "
                                        r"length unit; expected one of"):
        sipflow.load(path)
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default", str(path),
                          "-o", str(tmp_path / "r.zarr"), "--engine", "local"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "furlong" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "r.zarr").exists()
    plain = tmp_path / "plain.h5"
    write_scan(plain, Simulation(shape=(64, 64), photons=None))
    with pytest.raises(DataError, match="centre: file, but the input records no beam centre"):
        sipflow.run_pipeline({"stages": [{"use": "prep.standard",
                                          "with": {"centre": "file"}}]}, plain)


def test_bragg_detector_centre_comes_from_the_file(tmp_path):
    from sipflow.bragg._ortho_stage import GeometryBlock, scan_geometry

    sim = Simulation(shape=(32, 64, 64), kind="crystal", photons=None, delta_deg=30.0,
                     gamma_deg=10.0, rocking_step_deg=0.01, beam_centre="pixel")
    write_scan(tmp_path / "b.h5", sim, layout="nexus")
    with h5py.File(tmp_path / "b.h5", "r+") as f:  # the direct beam far off this region
        f["/entry/instrument/detector/beam_center_x"][()] = 300.0
    ds = sipflow.run_pipeline({"stages": [{"use": "prep.standard"}]}, tmp_path / "b.h5")
    geo, info = scan_geometry(ds, GeometryBlock(), "b.h5")
    assert info["detector_centre_from"] == "file" and info["detector_centre_px"] == [32, 300]
    assert geo.offset_px[1] == pytest.approx(ds.attrs["prep_window"]["centre"][2] - 300)
    _, info = scan_geometry(ds, GeometryBlock(detector_centre_px=[32, 32]), "b.h5")
    assert info["detector_centre_from"] == "geometry block"
