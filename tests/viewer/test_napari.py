"""The plugin inside a real napari viewer on an X display (Xvfb): reader, widgets, samples."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the viewer tests need napari: pip install 'sipflow[napari]'")

NO_DISPLAY = ("no X display: install Xvfb (apt-get install xvfb libxcb-icccm4 libxcb-keysyms1 "
              "libxcb-xinerama0; `make test` does it as root) so that pytest-xvfb starts one")
pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason=NO_DISPLAY)

from sipflow import open_result, schema  # noqa: E402
from sipflow.viewer._reader import get_reader  # noqa: E402

#: screenshots of the tests land here when set (CI artefacts), else in the test's tmp_path
ARTIFACTS = os.environ.get("SIPFLOW_TEST_ARTIFACTS")


def _shot_path(tmp_path: Path, name: str) -> Path:
    folder = Path(ARTIFACTS) if ARTIFACTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _png_pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return np.asarray(mpimg.imread(path))[..., :3]


def test_manifest_declares_the_contributions():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("sipflow")
    assert manifest.display_name == "sipflow"
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {"Result", "Run"}
    assert {s.key for s in contributions.sample_data} == {"scan", "result"}
    reader = contributions.readers[0]
    assert reader.accepts_directories and "*.zarr" in reader.filename_patterns


def test_reader_opens_a_result_store(make_napari_viewer, result_stores, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1000, 800)
    store = result_stores[0]
    viewer.open(str(store), plugin="sipflow")
    stem = store.stem
    layers = {layer.name: layer for layer in viewer.layers}
    assert list(layers) == [f"{stem} {r}" for r in ("intensity", "mask", "runs amplitude",
                                                     "runs phase", "amplitude", "phase",
                                                     "support")]
    ds = open_result(store, load=True)
    amp, phase = layers[f"{stem} amplitude"], layers[f"{stem} phase"]
    assert type(amp).__name__ == "Image" and amp.data.dtype == np.float32
    assert amp.colormap.name == "gray" and phase.colormap.name == "twilight_shifted"
    assert tuple(phase.contrast_limits) == pytest.approx((-math.pi, math.pi))
    dx = ds.attrs["wavelength_m"] * ds.attrs["distance_m"] / (64 * ds.attrs["pixel_size_m"])
    np.testing.assert_allclose(amp.scale, (dx * 1e9,) * 2, rtol=1e-9)
    assert type(layers[f"{stem} support"]).__name__ == "Labels"
    assert type(layers[f"{stem} mask"]).__name__ == "Labels"
    runs = layers[f"{stem} runs amplitude"]
    assert runs.data.shape == (2, 64, 64) and viewer.dims.nsteps[0] == 2  # run slider
    assert layers[f"{stem} intensity"].colormap.name == "magma"
    # the rendered view is not blank
    path = _shot_path(tmp_path, "viewer_result.png")
    viewer.screenshot(path=str(path), canvas_only=False)
    pixels = _png_pixels(path)
    assert pixels.shape[0] > 300 and pixels.std() > 0.05
    canvas = viewer.screenshot(canvas_only=True)[..., :3].astype(float)
    assert canvas.std() > 10  # the phase image, not a uniform background


def test_reader_returns_none_for_what_is_not_ours(result_stores, tmp_path, caplog):
    import h5py
    import zarr

    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w", zarr_format=3).create_array("a", shape=(4,), dtype="f4")
    assert get_reader(str(plain)) is None
    unfinished = tmp_path / "unfinished.zarr"
    from sipflow import save

    save(open_result(result_stores[0], load=True), unfinished)
    meta = json.loads((unfinished / "zarr.json").read_text())
    del meta["attributes"][schema.COMPLETE_ATTR]
    (unfinished / "zarr.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="sipflow"):
        assert get_reader(str(unfinished)) is None
    assert "unfinished sipflow store" in caplog.text  # the notification says why
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["/calibration/table"] = np.arange(10)
    assert get_reader(str(other)) is None
    assert get_reader([str(result_stores[0]), str(result_stores[1])]) is None
    assert get_reader(str(result_stores[0])) is not None


def test_reader_opens_a_raw_scan(make_napari_viewer, viewer_scan):
    viewer = make_napari_viewer()
    viewer.open(str(viewer_scan), plugin="sipflow")
    names = [layer.name for layer in viewer.layers]
    assert names == ["blob intensity", "blob mask"]
    from sipflow import load

    raw = load(viewer_scan)
    np.testing.assert_allclose(viewer.layers["blob intensity"].data,
                               np.log10(1 + raw.intensity.values), rtol=1e-6)


def test_result_widget_shows_and_compares(make_napari_viewer, result_stores, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(result_stores[0]), plugin="sipflow")
    _, widget = viewer.window.add_plugin_dock_widget("sipflow", "Result")
    ds = open_result(result_stores[0], load=True)
    assert widget.results.count() == 1
    assert widget.runs.rowCount() == 2 and widget.runs.item(0, 1).text() == "1"
    metrics = {widget.metrics.item(i, 0).text(): widget.metrics.item(i, 1).text()
               for i in range(widget.metrics.rowCount())}
    assert float(metrics["error"]) < 0.1
    assert f"seed: {ds.attrs['provenance']['seed']}" in widget.provenance.toPlainText()
    lines = [len(ax.lines) for ax in widget.curves.figure.axes]
    assert lines == [2, 2]  # llk and free llk, one line per run
    assert widget.prtf.figure.axes[0].lines  # PRTF and the 1/e line
    # a second result: curves overlaid and layers linked when comparing
    viewer.open(str(result_stores[1]), plugin="sipflow")
    assert widget.results.count() == 2
    widget.compare.setChecked(True)
    assert [len(ax.lines) for ax in widget.curves.figure.axes] == [4, 4]
    amps = [layer for layer in viewer.layers if layer.name.endswith(" amplitude")
            and "runs" not in layer.name]
    assert any(set(map(id, g)) == set(map(id, amps)) for g in widget.linked_groups)
    amps[0].contrast_limits = (0.0, 0.123)
    assert tuple(amps[1].contrast_limits) == pytest.approx((0.0, 0.123))
    widget.compare.setChecked(False)
    amps[0].contrast_limits = (0.0, 0.5)
    assert tuple(amps[1].contrast_limits) == pytest.approx((0.0, 0.123))
    png = widget.export_png(_shot_path(tmp_path, "export_view.png"))
    assert png.is_file() and _png_pixels(png).std() > 0.02


def _run_widget(viewer, scan):
    _, widget = viewer.window.add_plugin_dock_widget("sipflow", "Run")
    widget.set_scan(scan)
    return widget


def test_run_widget_refuses_invalid_values(make_napari_viewer, viewer_scan, tmp_path):
    viewer = make_napari_viewer()
    widget = _run_widget(viewer, viewer_scan)
    phase_form = next(f for f in widget.forms if f.stage.name == "phase.classic")
    phase_form.set_value("schedule", "ER**")
    phase_form.set_value("support_threshold", [0.3, 0.1, 9])
    assert widget.start() is False
    assert "schedule" in widget.last_error and "support_threshold" in widget.last_error
    assert not widget.is_running()
    phase_form.set_value("schedule", "ER**10")
    phase_form.set_value("support_threshold", [0.09, 0.11])
    existing = tmp_path / "existing.zarr"
    existing.mkdir()
    widget.output.setText(str(existing))
    assert widget.start() is False and "exists" in widget.last_error  # never overwritten
    assert not any(existing.iterdir())


def test_run_widget_runs_streams_and_saves(make_napari_viewer, viewer_scan, viewer_pipeline,
                                           qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1100, 850)
    viewer.open(str(viewer_scan), plugin="sipflow")
    _, widget = viewer.window.add_plugin_dock_widget("sipflow", "Run")
    assert widget.scan.currentText() == str(viewer_scan)  # the open scan is offered
    widget.set_pipeline("default")
    phase_form = next(f for f in widget.forms if f.stage.name == "phase.classic")
    phase_form.set_value("runs", 2)
    schedule = viewer_pipeline["stages"][1]["with"]["schedule"]
    phase_form.set_value("schedule", schedule)
    output = tmp_path / "from_viewer.zarr"
    widget.output.setText(str(output))
    frames: list[np.ndarray] = []

    def watch(event):
        layer = event.value
        if layer.name.endswith("live amplitude"):
            frames.append(np.array(layer.data))
            layer.events.data.connect(lambda _e: frames.append(np.array(layer.data)))

    viewer.layers.events.inserted.connect(watch)
    assert widget.start() is True
    qtbot.waitUntil(lambda: len(frames) >= 2, timeout=60_000)
    shot = _shot_path(tmp_path, "run_widget.png")
    viewer.screenshot(path=str(shot), canvas_only=False)
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=120_000)
    assert widget.last_error == ""
    assert widget.live_updates >= 2 and not np.allclose(frames[0], frames[-1])
    assert widget.result_path == output
    ds = open_result(output, load=True, verify=True)
    assert ds.attrs["provenance"]["stages"][1]["with"]["schedule"] == schedule
    names = [layer.name for layer in viewer.layers]
    assert "from_viewer amplitude" in names and not any("live" in n for n in names)
    assert _png_pixels(shot).std() > 0.05
    assert float(ds.attrs["metrics"]["error"]) < 0.1  # it did reconstruct the scan


def test_run_widget_cancel_writes_nothing(make_napari_viewer, viewer_scan, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = _run_widget(viewer, viewer_scan)
    phase_form = next(f for f in widget.forms if f.stage.name == "phase.classic")
    phase_form.set_value("schedule", "(sup * ER**5 * HIO**40)**500")
    output = tmp_path / "cancelled.zarr"
    widget.output.setText(str(output))
    assert widget.start()
    qtbot.waitUntil(lambda: widget.live_updates >= 1, timeout=60_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.is_running(), timeout=60_000)
    assert "cancelled" in widget.status.text()
    assert not output.exists() and not list(tmp_path.glob(".cancelled*"))
    assert not [layer for layer in viewer.layers if "live" in layer.name]


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("sipflow", "result")
    names = [layer.name for layer in viewer.layers]
    assert "simulated amplitude" in names and "simulated phase" in names
    _, widget = viewer.window.add_plugin_dock_widget("sipflow", "Result")
    assert widget.runs.rowCount() == 2  # the in-memory result is inspectable too
    viewer.open_sample("sipflow", "scan")
    assert "simulated intensity" in [layer.name for layer in viewer.layers]


def test_sipflow_view(result_stores, viewer_scan, capsys, qtbot):
    from sipflow.cli import main
    from sipflow.viewer._app import view

    assert main(["view", str(result_stores[0].with_name("missing.zarr"))]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    viewer = view([result_stores[0], viewer_scan], run=False)
    try:
        names = [layer.name for layer in viewer.layers]
        assert f"{result_stores[0].stem} amplitude" in names and "blob intensity" in names
        docks = set(viewer.window.dock_widgets)
        assert any("Result" in d for d in docks) and any("Run" in d for d in docks)
        assert viewer.canvas.overlays.scale_bar.visible
        assert viewer.dims.ndisplay == 2  # 2-D result
    finally:
        viewer.close()


def test_sipflow_view_shows_a_3d_result_as_a_volume(scans, tmp_path):
    from sipflow import run_pipeline, save
    from sipflow.viewer._app import view

    pipeline = {"stages": [{"use": "prep.standard"},
                           {"use": "phase.classic",
                            "with": {"schedule": "(sup * ER**5 * HIO**20)**3 * ER**20",
                                     "runs": 1}}]}
    store = save(run_pipeline(pipeline, scans["3d"], device="cpu", seed=0),
                 tmp_path / "crystal.zarr")
    viewer = view([store], run=False)
    try:
        amp = viewer.layers["crystal amplitude"]
        assert amp.ndim == 3 and amp.rendering == "attenuated_mip"
        assert viewer.dims.ndisplay == 3
        viewer.window._qt_window.show()
        viewer.window.resize(900, 700)
        shot = _shot_path(tmp_path, "viewer_3d.png")
        viewer.screenshot(path=str(shot), canvas_only=True)
        assert _png_pixels(shot).std() > 0.02
    finally:
        viewer.close()


def test_result_widget_shows_a_plugin_phase_stage(make_napari_viewer, tmp_path):
    """The example plugin's phase.shrinkwrap_hio: runs, rank and its summary rows in the
    Result widget, though no sipflow module names the stage."""
    from sipflow import run_pipeline, save
    from sipflow.testing import simulated_dataset

    ds = simulated_dataset((64, 64), photons=1e8, seed=1, phase_amplitude=0.0)
    result = run_pipeline({"stages": [{"use": "phase.shrinkwrap_hio",
                                       "with": {"positivity": True, "runs": 3}}]},
                          ds, device="cpu", seed=2)
    store = save(result, tmp_path / "plugin.zarr")
    viewer = make_napari_viewer()
    viewer.open(str(store), plugin="sipflow")
    _, widget = viewer.window.add_plugin_dock_widget("sipflow", "Result")
    record = result.attrs["phase"]
    assert widget.runs.rowCount() == 3
    assert widget.runs.item(0, 0).text() == str(record["best_run"])
    assert widget.runs.item(0, 1).text() == "1"
    metrics = {widget.metrics.item(i, 0).text(): widget.metrics.item(i, 1).text()
               for i in range(widget.metrics.rowCount())}
    assert metrics["phase.shrinkwrap_hio runs ok"].startswith("3/3")
    assert "phase.shrinkwrap_hio free LLK" in metrics
