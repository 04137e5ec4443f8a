"""The napari-free logic of the viewer: layers, tables, text and forms from real stores."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import xarray as xr
import zarr

from sipflow import open_result, schema
from sipflow.viewer import _forms, _results
from sipflow.viewer._layers import (
    PHASE_COLORMAP,
    classify,
    masked_phase,
    real_space_scale,
    result_layers,
    scan_layers,
)


def _by_name(layers):
    return {kw["name"]: (data, kw, kind) for data, kw, kind in layers}


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI must run the napari tests")
def test_ci_runs_the_napari_tests():
    """In CI (``make test`` as root) the Qt tests must run, not be skipped."""
    pytest.importorskip("napari", reason="napari is part of the test install")
    assert os.environ.get("DISPLAY"), ("CI has no X display, so the napari tests were skipped: "
                                       "`make test` should have installed Xvfb")


def test_result_layers_from_a_real_store(result_stores):
    store = result_stores[0]
    ds = open_result(store, load=True)
    layers = _by_name(result_layers(store))
    stem = store.stem
    expected = {f"{stem} {role}" for role in ("intensity", "mask", "runs amplitude", "runs phase",
                                              "amplitude", "phase", "support")}
    assert set(layers) == expected
    # order: intensity first (bottom), phase above amplitude, support last
    names = [kw["name"] for _, kw, _ in result_layers(store)]
    assert names.index(f"{stem} phase") > names.index(f"{stem} amplitude")

    inten, kw, kind = layers[f"{stem} intensity"]
    assert kind == "image" and kw["colormap"] == "magma"
    np.testing.assert_allclose(np.asarray(inten), np.log10(1 + ds.intensity.values), rtol=1e-6)
    assert kw["visible"] is False  # the object is what a result shows first

    mask, kw, kind = layers[f"{stem} mask"]
    assert kind == "labels" and mask.dtype == np.uint8
    assert int(mask.sum()) == int((~ds.mask.values).sum()) > 0  # beamstop and gap

    # far-field real-space pixel: λ D / (N p), computed here from the store's geometry
    lam, dist, pix = ds.attrs["wavelength_m"], ds.attrs["distance_m"], ds.attrs["pixel_size_m"]
    dx_nm = lam * dist / (64 * pix) * 1e9
    amp, kw, kind = layers[f"{stem} amplitude"]
    assert kind == "image" and amp.dtype == np.float32 and amp.shape == (64, 64)
    np.testing.assert_allclose(amp, np.abs(ds.obj.values), rtol=1e-6)
    np.testing.assert_allclose(kw["scale"], (dx_nm, dx_nm), rtol=1e-9)
    assert kw["metadata"]["units"] == ("nm", "nm")
    assert 60 < dx_nm < 70  # 0.155 nm, 2 m, 75 µm, 64 px

    phase, kw, kind = layers[f"{stem} phase"]
    assert kw["colormap"] == PHASE_COLORMAP and kw["contrast_limits"] == (-math.pi, math.pi)
    support = ds.support.values
    assert np.isnan(phase[~support]).all() and np.isfinite(phase[support]).all()
    assert np.abs(phase[support]).max() <= math.pi + 1e-6
    # the global phase offset is removed: amplitude-weighted mean phase inside is ~0
    z = np.sum(np.abs(ds.obj.values[support]) * np.exp(1j * phase[support]))
    assert abs(np.angle(z)) < 1e-3

    runs, kw, kind = layers[f"{stem} runs amplitude"]
    assert runs.shape == (2, 64, 64) and kw["axis_labels"][0] == schema.RUN
    assert kw["scale"][0] == 1.0 and kw["visible"] is False
    np.testing.assert_allclose(np.asarray(runs), np.abs(ds.obj_runs.values), rtol=1e-6)
    rphase = np.asarray(layers[f"{stem} runs phase"][0])
    assert np.isnan(rphase[~ds.support_runs.values]).all()

    sup, kw, kind = layers[f"{stem} support"]
    assert kind == "labels" and (sup.astype(bool) == support).all()
    for _, kw, _ in layers.values():
        assert kw["metadata"]["sipflow"]["source"] == str(store)
        assert kw["metadata"]["sipflow"]["kind"] == "result"


def test_classify_refuses_what_is_not_a_finished_result(result_stores, viewer_scan, tmp_path):
    assert classify(result_stores[0]).kind == "result"
    assert classify(viewer_scan).kind == "scan"
    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w", zarr_format=3).create_array("a", shape=(4,), dtype="f4")
    assert classify(plain) == classify(tmp_path / "missing.zarr")
    assert classify(plain).kind is None and classify(plain).reason == ""
    # a store whose writer did not finish: the completion mark is absent
    from sipflow import save

    unfinished = tmp_path / "unfinished.zarr"
    save(open_result(result_stores[0], load=True), unfinished)
    meta = json.loads((unfinished / "zarr.json").read_text())
    del meta["attributes"][schema.COMPLETE_ATTR]
    (unfinished / "zarr.json").write_text(json.dumps(meta))
    found = classify(unfinished)
    assert found.kind is None and "unfinished sipflow store" in found.reason
    fake = tmp_path / "fake.h5"
    fake.write_text("not hdf5")
    assert classify(fake).kind is None and "no HDF5 signature" in classify(fake).reason
    assert classify(tmp_path / "notes.txt").kind is None


def test_scan_layers_and_3d_volumes(viewer_scan):
    from sipflow import load

    ds = load(viewer_scan)
    layers = _by_name(scan_layers(ds, "blob", str(viewer_scan)))
    assert set(layers) == {"blob intensity", "blob mask"}
    assert layers["blob intensity"][1]["visible"] is True
    # a 3-D result: volume rendering, pixels (a rocking scan has no length on its third axis)
    rng = np.random.default_rng(0)
    obj = (rng.random((8, 10, 12)) * np.exp(1j * rng.random((8, 10, 12)))).astype(np.complex64)
    res = xr.Dataset({schema.OBJ: (("z", "y", "x"), obj),
                      schema.SUPPORT: (("z", "y", "x"), np.abs(obj) > 0.2)},
                     attrs={"wavelength_m": 1e-10, "distance_m": 1.0, "pixel_size_m": 55e-6})
    layers = _by_name(result_layers(res, name="crystal"))
    amp = layers["crystal amplitude"]
    assert amp[0].shape == (8, 10, 12) and amp[1]["rendering"] == "attenuated_mip"
    assert amp[1]["scale"] == (1.0, 1.0, 1.0) and amp[1]["metadata"]["units"] == ("pixel",) * 3


def test_real_space_scale():
    geo = {"wavelength_m": 1.55e-10, "distance_m": 2.0, "pixel_size_m": 75e-6}
    scale, units = real_space_scale(geo, (128, 256))
    assert units == ("nm", "nm")
    np.testing.assert_allclose(scale, (1.55e-10 * 2 / (128 * 75e-6) * 1e9,
                                       1.55e-10 * 2 / (256 * 75e-6) * 1e9))
    assert real_space_scale({}, (64, 64)) == ((1.0, 1.0), ("pixel", "pixel"))
    assert real_space_scale(geo | {"distance_m": float("nan")}, (8, 8))[1] == ("pixel",) * 2
    assert real_space_scale({"voxel_size_m": [5e-9, 6e-9, 7e-9]}, (4, 4, 4)) == (
        (5.0, 6.0, 7.0), ("nm",) * 3)


def test_masked_phase_removes_the_offset_and_masks():
    x = np.exp(1j * (0.3 + np.linspace(-1, 1, 16))).reshape(4, 4).astype(np.complex64)
    sup = np.zeros((4, 4), bool)
    sup[1:3, 1:3] = True
    p = masked_phase(x * np.exp(2.5j), sup)
    assert np.isnan(p[~sup]).all()
    np.testing.assert_allclose(p[sup] - p[sup].mean(), np.angle(x[sup]) - np.angle(
        x[sup]).mean(), atol=1e-5)
    assert abs(np.angle(np.exp(1j * p[sup]).sum())) < 1e-5


def test_result_tables_and_text(result_stores):
    ds = open_result(result_stores[0], load=True)
    curves = _results.convergence(ds)
    assert [c.variable for c in curves] == ["llk", "llk", "llk_free", "llk_free"]
    assert all(np.array_equal(c.x, ds.iter.values) for c in curves)
    np.testing.assert_allclose(curves[2].y, ds.llk_free.values[0])
    named = _results.convergence(ds, "A")
    assert named[0].label == "A run 0"
    headers, rows = _results.run_table(ds)
    record = ds.attrs["phase"]
    assert headers[:3] == ["run", "rank", "status"] and len(rows) == 2
    assert rows[0][0] == str(record["best_run"]) and rows[0][1] == "1"  # best first
    assert rows[0][4] == format(record["final_llk_free"][record["best_run"]], ".4g")
    text = _results.provenance_text(ds)
    prov = ds.attrs["provenance"]
    assert f"seed: {prov['seed']}" in text and "phase.classic" in text
    assert "(sup * ER**5 * HIO**40)**8 * ER**50" in text  # the pipeline and its parameters
    q, prtf = _results.prtf_curve(ds)
    assert len(q) == len(prtf) == ds.sizes["q_shell"]
    rows = dict(_results.metrics_rows(ds))
    assert rows["runs ok"].startswith("2/2") and float(rows["error"]) < 0.1


def test_forms_from_the_parameter_models():
    from sipflow.plugins import get_registry

    params = get_registry().stage("phase.classic").Params
    specs = {s.name: s for s in _forms.field_specs(params)}
    assert specs["runs"].kind == "int" and specs["runs"].minimum == 1
    assert specs["positivity"].kind == "bool" and specs["positivity"].default is False
    assert specs["beta"].kind == "float" and specs["beta"].description
    method = specs["shrinkwrap_method"]
    assert method.kind == "choice" and "max" in method.choices
    assert specs["schedule"].kind == "text"
    assert specs["runs"].bounds_text().startswith("1 ≤ runs")
    ok, errors = _forms.parse_values(params, {"runs": 3, "support_threshold": [0.1, 0.2]})
    assert errors == [] and ok.runs == 3
    assert _forms.changed(params, ok) == {"runs": 3, "support_threshold": [0.1, 0.2]}
    bad, errors = _forms.parse_values(params, {"runs": 0, "schedule": "ER**"})
    assert bad is None and any(e.startswith("runs:") for e in errors)
    assert any(e.startswith("schedule:") for e in errors)
    assert _forms.parse_text("[0.1, 0.2]") == [0.1, 0.2] and _forms.parse_text("") is None
    for value in ([0.09, 0.11], "(sup * ER**5)**2", None, 3, {"a": 1}):
        assert _forms.parse_text(_forms.dump_text(value)) == value


def test_a_bragg_result_shows_strain_with_a_diverging_colormap():
    import xarray as xr

    from sipflow.viewer import result_layers

    dims = ("z", "y", "x")
    support = np.zeros((6, 7, 8), bool)
    support[1:5, 2:6, 2:7] = True
    strain = np.where(support, np.linspace(-2e-3, 1e-3, support.size).reshape(support.shape),
                      np.nan)
    ds = xr.Dataset({"obj": (dims, support.astype(np.complex64)), "support": (dims, support),
                     "strain": (dims, strain.astype(np.float32)),
                     "displacement": (dims, np.zeros(support.shape, np.float32))},
                    attrs={"voxel_size_m": [1e-8] * 3, "source": "crystal.h5"})
    layers = {kw["name"]: (data, kw) for data, kw, _ in result_layers(ds)}
    data, kw = layers["crystal strain"]
    assert data.shape == (6, 7, 8)
    assert kw["colormap"] == "bwr" and kw["visible"]
    low, high = kw["contrast_limits"]
    assert low == -high and 1e-3 < high <= 2e-3
    assert kw["scale"] == (10.0, 10.0, 10.0) and kw["metadata"]["sipflow"]["role"] == "strain"
    assert not layers["crystal displacement"][1]["visible"]
