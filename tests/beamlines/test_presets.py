"""Beamline presets: golden q against xrayutilities (the field's reference, a GPL test-only
extra), from a synthetic file in each beamline's own layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import sipflow
from sipflow.beamlines import BUILTIN, Diffractometer, circle_angles, get_beamline
from sipflow.contracts import BeamlinePreset, Circle
from sipflow.errors import DataError
from sipflow.testing import assert_beamline, write_spec_scan
from sipflow.testing._beamline import xu_q_sample

pytest.importorskip("xrayutilities")

ROWS, COLS = np.array([0, 40, 63]), np.array([5, 60, 31])
FRAMES = 5
STEP = 0.01


@pytest.mark.parametrize("preset", BUILTIN, ids=lambda p: p.name)
def test_preset_q_equals_xrayutilities(preset):
    for seed in range(3):
        assert_beamline(preset, seed=seed)


def _flipped(preset: BeamlinePreset, name: str) -> BeamlinePreset:
    def flip(c: Circle) -> Circle:
        if c.name != name:
            return c
        return c.model_copy(update={"axis": c.axis[0] + ("-" if c.axis[1] == "+" else "+")})

    return preset.model_copy(update={
        "sample_circles": tuple(flip(c) for c in preset.sample_circles),
        "detector_circles": tuple(flip(c) for c in preset.detector_circles)})


@pytest.mark.parametrize("preset", BUILTIN, ids=lambda p: p.name)
def test_a_wrong_sign_in_any_circle_fails_the_golden_test(preset):
    for c in (*preset.sample_circles, *preset.detector_circles):
        with pytest.raises(AssertionError, match="differ from xrayutilities"):
            assert_beamline(_flipped(preset, c.name), reference=preset)
    rows, cols = preset.pixel_directions
    swapped = preset.model_copy(update={"pixel_directions": (rows, cols[0] + (
        "-" if cols[1] == "+" else "+"))})
    with pytest.raises(AssertionError, match="differ from xrayutilities"):
        assert_beamline(swapped, reference=preset)


# --- synthetic files in each beamline's layout: angles, energy, distance, beam centre ---

ANGLES = {"aps-34idc": {"theta": 0.22, "chi": 90.0, "phi": -5.0, "delta": 32.174,
                        "gamma": 12.6346},
          "id01": {"mu": 0.0, "eta": 17.3, "phi": 3.0, "nu": 28.1, "delta": 9.4},
          "p10": {"mu": 0.0, "om": 15.2, "chi": 0.5, "phi": -2.0, "gam": 3.1, "del": 31.0},
          "nanomax": {"gontheta": 16.1, "gonphi": 1.5, "gamma": 30.2, "delta": 4.2}}
ENERGY_EV, DISTANCE_M, PIXEL_M = 9000.0, 0.85, 55e-6
CENTRE = (20.5, 41.0)  # beam pixel (row, col) with the arm at 0


def _frames() -> np.ndarray:
    return np.random.default_rng(1).poisson(3, (FRAMES, 64, 64)).astype(np.int32)


def _rock(start: float) -> list[float]:
    return [start + STEP * (k - FRAMES // 2) for k in range(FRAMES)]


def _nxdetector(g: h5py.Group, frames: np.ndarray | None, centre_unit: str = "pixel") -> None:
    g.attrs["NX_class"] = "NXdetector"
    if frames is not None:
        g["data"] = frames
    scale = 1.0 if centre_unit == "pixel" else PIXEL_M
    g["beam_center_x"], g["beam_center_y"] = CENTRE[1] * scale, CENTRE[0] * scale
    for k in ("beam_center_x", "beam_center_y"):
        g[k].attrs["units"] = centre_unit
    g["distance"] = DISTANCE_M * 1e3
    g["distance"].attrs["units"] = "mm"
    for axis in ("x", "y"):
        g[f"{axis}_pixel_size"] = PIXEL_M
        g[f"{axis}_pixel_size"].attrs["units"] = "m"


def _write(name: str, tmp_path):
    a = ANGLES[name]
    if name == "aps-34idc":  # SPEC + TIFF, energy in keV, camdist in mm, a detector ROI
        spec = tmp_path / "x.spec"
        write_spec_scan(spec, 12, _frames(), command="ascan  theta 0.2 0.24  4 1",
                        motors={"Delta": a["delta"], "Theta": a["theta"], "Chi": a["chi"],
                                "Phi": a["phi"], "Gamma": a["gamma"],
                                "Energy": ENERGY_EV / 1e3, "camdist": DISTANCE_M * 1e3},
                        columns={"Theta": _rock(a["theta"])},
                        header_lines=["#UIMR5  40 64 10 64 1", "#Readout 0 512 0 512"],
                        frame_stem="x")
        # the frames are rows 10-73, cols 40-103 of the detector: the beam pixel there
        return spec, {"scan": 12}, (CENTRE[0], CENTRE[1])
    path = tmp_path / f"{name}.h5"
    with h5py.File(path, "w") as f:
        if name == "id01":  # BLISS: /1.1/instrument/{positioners, <detector>}, keV
            scan = f.create_group("1.1")
            scan.attrs["NX_class"] = "NXentry"
            pos = scan.create_group("instrument/positioners")
            for k, v in a.items():
                pos[k] = np.array(_rock(v)) if k == "eta" else v
            pos["mononrj"] = ENERGY_EV / 1e3
            _nxdetector(scan.create_group("instrument/mpx1x4"), _frames(), "m")
        elif name == "p10":  # Eiger master + .fio beside it: motors, fmbenergy in eV
            f["/entry/data/data_000001"] = _frames()
            det = f.create_group("/entry/instrument/detector")
            _nxdetector(det, None)
            lines = ["!", "%c", "om scan", "!", "%p"]
            lines += [f"{k} = {v}" for k, v in a.items() if k != "om"]
            lines += [f"fmbenergy = {ENERGY_EV}", "!", "%d", " Col 1 om DOUBLE",
                      " Col 2 ipetra DOUBLE"]
            lines += [f" {v} 100.0" for v in _rock(a["om"])]
            (tmp_path / "p10.fio").write_text("\n".join(lines) + "\n")
        else:  # NanoMAX: entry/snapshots/post_scan, frames in entry/measurement/<det>
            snap = f.create_group("/entry/snapshots/post_scan")
            for k, v in a.items():
                snap[k] = np.array(_rock(v)) if k == "gontheta" else v
            snap["energy"] = ENERGY_EV
            f["/entry/measurement/pilatus/frames"] = _frames()
            _nxdetector(f.create_group("/entry/instrument/pilatus"), None)
    return path, {}, CENTRE


@pytest.mark.parametrize("name", list(ANGLES))
def test_golden_q_from_a_file_in_the_beamlines_layout(name, tmp_path):
    preset = get_beamline(name)
    path, options, centre = _write(name, tmp_path)
    ds = sipflow.load(path, beamline=name, **options)
    attrs = ds.attrs
    assert attrs["beamline"] == name
    assert attrs["energy_eV"] == pytest.approx(ENERGY_EV, rel=1e-12)
    assert attrs["distance_m"] == pytest.approx(DISTANCE_M, rel=1e-12)
    sources = attrs["geometry_sources"]
    assert set(sources) >= {"energy_eV", "distance_m", "pixel_size_m"}
    if name == "aps-34idc":
        assert attrs["detector_roi"] == [10, 64, 40, 64]
        # the beam pixel on the full detector, in the region's indices: from the ROI
        centre = (256 - 10, 256 - 40)
    else:
        assert attrs["beam_centre_px"] == pytest.approx(list(CENTRE), rel=1e-12)
    frame = 1
    angles, rocking, step, origin = circle_angles(preset, attrs["positioners"], frame=frame)
    assert rocking == preset.rocking_circles[0] and step == pytest.approx(STEP)
    truth = dict(ANGLES[name])
    truth[rocking] = _rock(truth[rocking])[frame]
    assert angles == pytest.approx(truth, rel=1e-12)
    assert all(v.startswith("file ") for v in origin.values())
    wavelength_a = attrs["wavelength_m"] * 1e10
    got = Diffractometer(preset, angles).q_sample(ROWS, COLS, centre, attrs["distance_m"],
                                                  (attrs["pixel_size_m"],) * 2, wavelength_a)
    expected = xu_q_sample(preset, truth, ROWS, COLS, centre, DISTANCE_M, (PIXEL_M, PIXEL_M),
                           (64, 64), ENERGY_EV)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_orthogonalize_uses_the_presets_circles(tmp_path):
    """ID01: the Bragg vector at the peak pixel from the pipeline's geometry is the one
    xrayutilities gives for that pixel (turned into the lab frame by the sample circles)."""
    from sipflow.bragg._ortho_stage import GeometryBlock, scan_geometry

    path, _, _ = _write("id01", tmp_path)
    ds = sipflow.run_pipeline({"stages": [{"use": "prep.standard",
                                           "with": {"centre": "none"}}]},
                              sipflow.load(path, beamline="id01"))
    geo, info = scan_geometry(ds, GeometryBlock(), str(path))
    assert info["beamline"] == "id01" and info["detector_centre_from"] == "file"
    assert info["rocking_axis_from"] == "beamline id01 (eta)"
    assert info["values_from"]["distance"].endswith("/1.1/instrument/mpx1x4/distance (mm)")
    assert info["values_from"]["wavelength"].endswith("mononrj (keV, beamline id01)")
    assert info["angles_from"]["eta"] == "file eta"
    preset = get_beamline("id01")
    angles = dict(ANGLES["id01"])
    angles["eta"] = _rock(angles["eta"])[FRAMES // 2]
    q_sample = xu_q_sample(preset, angles, np.array([32]), np.array([32]), CENTRE,
                           DISTANCE_M, (PIXEL_M, PIXEL_M), (64, 64), ENERGY_EV)[0]
    q_lab = Diffractometer(preset, angles).sample_matrix() @ q_sample  # 1/Å, (x, y, z)
    np.testing.assert_allclose(geo.q_bragg()[::-1] / 10, q_lab, rtol=1e-6)
    # the rocking axis: eta (x-) turned by mu (0 here): -x
    np.testing.assert_allclose(geo.rocking_axis, (-1.0, 0.0, 0.0), atol=1e-12)
    # a circle the file lacks must be given; a circle the preset lacks is refused
    with pytest.raises(DataError, match="beamline 'id01' has no circle"):
        scan_geometry(ds, GeometryBlock(angles={"kappa": 3.0}), str(path))
    geo2, info2 = scan_geometry(ds, GeometryBlock(angles={"nu": 20.0}), str(path))
    assert info2["angles_from"]["nu"] == "user" and not np.allclose(geo2.q_bragg(),
                                                                    geo.q_bragg())


def test_a_plugin_preset_is_listed_and_a_duplicate_name_refused():
    from sipflow.hookspecs import hookimpl
    from sipflow.plugins import build_registry

    custom = get_beamline("id01").model_copy(update={"name": "my-bl"})

    class Plugin:
        @hookimpl
        def sipflow_beamlines(self):
            return [custom]

    class Clash:
        @hookimpl
        def sipflow_beamlines(self):
            return [get_beamline("p10")]

    reg = build_registry(load_entry_points=False, extra=(Plugin(), Clash()))
    assert reg.beamline("my-bl") is custom
    failed = {p.name: p.error for p in reg.failures}
    assert "'p10' is provided by both" in failed["Clash"] and "(built in)" in failed["Clash"]


def test_a_preset_is_validated():
    with pytest.raises(ValueError, match="rocking_circles"):
        BeamlinePreset(name="x", sample_circles=(Circle(name="th", axis="y+"),),
                       detector_circles=(Circle(name="del", axis="y+"),),
                       pixel_directions=("y-", "x+"), rocking_circles=("omega",))
    with pytest.raises(ValueError, match="two different axes"):
        BeamlinePreset(name="x", sample_circles=(Circle(name="th", axis="y+"),),
                       detector_circles=(Circle(name="del", axis="y+"),),
                       pixel_directions=("y-", "y+"), rocking_circles=("th",))
