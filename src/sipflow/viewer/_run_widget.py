"""The "Run" dock widget: a pipeline's stages as forms, run on the open data with live previews.

Only the drawing is here; what is drawn comes from the napari-free modules ``_forms``
and ``_layers``.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, SipflowError
from . import _forms
from ._layers import (
    PHASE_COLORMAP,
    classify,
    dataset_for,
    layer_info,
    masked_phase,
)
from ._qt import _sources, log

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import xarray as xr

    from ..contracts import ProgressRecord
    from ..pipeline import Pipeline


class _Bridge(QObject):
    """Carries progress records from the worker thread to the GUI thread."""

    progressed = Signal(object)


class _StageForm(QGroupBox):
    """Widgets for the parameters of one pipeline step."""

    def __init__(self, index: int, step: Any) -> None:
        super().__init__(f"{index}. {step.stage.name}")
        self.stage = step.stage
        self.specs = _forms.field_specs(step.stage.Params)
        current = step.params.model_dump(mode="json")
        form = QFormLayout(self)
        self.widgets: dict[str, QWidget] = {}
        for spec in self.specs:
            widget = self._widget(spec, current.get(spec.name, spec.default))
            help_ = [spec.description, f"default: {spec.default!r}"]
            if spec.bounds_text():
                help_.append(spec.bounds_text())
            widget.setToolTip("\n".join(h for h in help_ if h))
            self.widgets[spec.name] = widget
            form.addRow(spec.name, widget)

    @staticmethod
    def _widget(spec: _forms.FieldSpec, value: Any) -> QWidget:
        if spec.kind == "bool" and isinstance(value, bool):
            w = QCheckBox()
            w.setChecked(value)
            return w
        if spec.kind == "choice" and value in spec.choices:
            w = QComboBox()
            for c in spec.choices:
                w.addItem(str(c), c)
            w.setCurrentIndex(list(spec.choices).index(value))
            return w
        if spec.kind == "int" and isinstance(value, int):
            w = QSpinBox()
            w.setRange(int(spec.minimum) + spec.exclusive_minimum
                       if spec.minimum is not None else -(2**31),
                       int(spec.maximum) - spec.exclusive_maximum
                       if spec.maximum is not None else 2**31 - 1)
            w.setValue(value)
            return w
        if spec.kind == "float" and isinstance(value, int | float):
            w = QDoubleSpinBox()
            w.setDecimals(6)
            w.setRange(spec.minimum if spec.minimum is not None else -1e12,
                       spec.maximum if spec.maximum is not None else 1e12)
            w.setValue(float(value))
            return w
        w = QLineEdit("null" if value is None else _forms.dump_text(value))
        return w

    def raw_values(self) -> dict[str, Any]:
        """What the widgets hold, ``text`` fields parsed as YAML (not yet validated)."""
        values: dict[str, Any] = {}
        for name, w in self.widgets.items():
            if isinstance(w, QCheckBox):
                values[name] = w.isChecked()
            elif isinstance(w, QComboBox):
                values[name] = w.currentData()
            elif isinstance(w, QSpinBox | QDoubleSpinBox):
                values[name] = w.value()
            elif isinstance(w, QLineEdit):
                values[name] = _forms.parse_text(w.text())
        return values

    def set_value(self, name: str, value: Any) -> None:
        """Set one field as a user would (for scripting and tests)."""
        w = self.widgets[name]
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QComboBox):
            w.setCurrentIndex(w.findData(value))
        elif isinstance(w, QSpinBox | QDoubleSpinBox):
            w.setValue(value)
        else:
            w.setText(value if isinstance(value, str) else _forms.dump_text(value))


class RunWidget(QWidget):
    """Run a pipeline on an open scan, watch it converge, and keep the result as a store.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.

    Notes
    -----
    The form shows each stage's parameters with the values of the chosen template or
    YAML file; hover for the description, default and bounds. Values are validated with
    the stage's own model before the run starts. The run goes in a worker thread; long
    stages stream a preview into the ``live`` layers; Cancel stops it at the next
    iteration and writes nothing. A finished run is saved (never over an existing path)
    and opened as layers.
    """

    #: preview period [iterations] set on stages that can preview, when theirs is 0
    PREVIEW_EVERY = 20

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.pipeline: Pipeline | None = None
        self.forms: list[_StageForm] = []
        self.worker: Any = None
        self.live_updates = 0
        self.result_path: Path | None = None
        self.last_error = ""
        self._cancel = threading.Event()
        self._bridge = _Bridge()
        self._bridge.progressed.connect(self._on_progress)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.scan = QComboBox()
        self.scan.setEditable(True)
        self.scan.setToolTip("the scan (HDF5) to reconstruct: open scans and the inputs of open "
                             "results, or type a path")
        form.addRow("scan", self.scan)
        row = QHBoxLayout()
        self.template = QComboBox()
        from ..plugins import get_registry

        for name in sorted(get_registry().templates):
            self.template.addItem(name, name)
        self.template.setCurrentIndex(max(0, self.template.findData("default")))
        browse = QPushButton("YAML…")
        browse.clicked.connect(self._browse_yaml)
        row.addWidget(self.template, 1)
        row.addWidget(browse)
        form.addRow("pipeline", row)
        self.output = QLineEdit()
        self.output.setToolTip("result store to write (.zarr); never replaced")
        form.addRow("output", self.output)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu"] + (["cuda"] if _cuda() else []))
        form.addRow("device", self.device)
        layout.addLayout(form)
        self.form_area = QScrollArea()
        self.form_area.setWidgetResizable(True)
        layout.addWidget(self.form_area, 1)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.run_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.template.currentIndexChanged.connect(lambda _i: self.set_pipeline(
            self.template.currentData()))
        self.scan.currentTextChanged.connect(lambda _t: self._suggest_output())
        self.viewer.layers.events.inserted.connect(lambda _e: self.refresh_scans())
        self.refresh_scans()
        self.set_pipeline(self.template.currentData() or "default")

    # --- choices --------------------------------------------------------------------------
    def refresh_scans(self) -> None:
        """Offer the open scans and the inputs of the open results."""
        current = self.scan.currentText()
        scans = _sources(self.viewer, "scan")
        for source in _sources(self.viewer, "result"):
            try:
                origin = str(dataset_for(source).attrs.get("source", ""))
            except SipflowError:
                continue
            if origin and Path(origin).is_file() and origin not in scans:
                scans.append(origin)
        scans = [s for s in scans if Path(s).is_file()]
        self.scan.blockSignals(True)
        self.scan.clear()
        self.scan.addItems(scans)
        self.scan.setEditText(current if current else (scans[-1] if scans else ""))
        self.scan.blockSignals(False)
        self._suggest_output()

    def set_scan(self, path: str | Path) -> None:
        """Choose the scan to reconstruct."""
        self.scan.setEditText(str(path))
        self._suggest_output()

    def set_pipeline(self, source: str | Path) -> None:
        """Load a template name or YAML file and draw its parameter forms."""
        from ..pipeline import Pipeline

        try:
            self.pipeline = Pipeline.load(source)
        except SipflowError as exc:
            self.status.setText(str(exc))
            return
        holder = QWidget()
        box = QVBoxLayout(holder)
        self.forms = [_StageForm(i, step) for i, step in enumerate(self.pipeline.steps, 1)]
        for f in self.forms:
            box.addWidget(f)
        box.addStretch(1)
        self.form_area.setWidget(holder)
        self.status.setText(self.pipeline.description or f"pipeline {self.pipeline.name}")
        self._suggest_output()

    def _browse_yaml(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pipeline", "", "YAML (*.yaml *.yml)")
        if path:
            self.template.addItem(Path(path).name, path)
            self.template.setCurrentIndex(self.template.count() - 1)

    def _suggest_output(self) -> None:
        scan = self.scan.currentText().strip()
        if not scan or self.pipeline is None or self.is_running():
            return
        base = Path(scan).with_name(f"{Path(scan).stem}_{self.pipeline.name}")
        candidate, n = base.with_suffix(".zarr"), 1
        while candidate.exists():
            n += 1
            candidate = base.with_name(f"{base.name}_{n}.zarr")
        self.output.setText(str(candidate))

    # --- running --------------------------------------------------------------------------
    def build_pipeline(self) -> tuple[Pipeline | None, list[str]]:
        """The pipeline with the form's values, or None and the reasons it is invalid."""
        from ..pipeline import Pipeline

        if self.pipeline is None:
            return None, ["no pipeline loaded"]
        errors: list[str] = []
        stages = []
        for form in self.forms:
            params, errs = _forms.parse_values(form.stage.Params, form.raw_values())
            errors += [f"{form.stage.name}: {e}" for e in errs]
            if params is not None:
                stages.append({"use": form.stage.name,
                               "with": _forms.changed(form.stage.Params, params)})
        if errors:
            return None, errors
        spec = {"name": self.pipeline.name, "description": self.pipeline.description,
                "stages": stages}
        if self.pipeline.input:
            spec["input"] = dict(self.pipeline.input)
        try:
            return Pipeline.load(spec), []
        except SipflowError as exc:
            return None, [str(exc)]

    def is_running(self) -> bool:
        return self.worker is not None

    def start(self) -> bool:
        """Validate everything and start the run; False (and the reasons shown) if invalid."""
        from .._api import preflight

        if self.is_running():
            return False
        pipeline, errors = self.build_pipeline()
        scan, output = self.scan.currentText().strip(), self.output.text().strip()
        if pipeline is not None:
            if not scan:
                errors.append("choose a scan (open an HDF5 file or type its path)")
            if not output:
                errors.append("choose an output store (.zarr)")
        data = device = None
        if not errors:
            try:
                pipeline, device, data = preflight(pipeline, scan, output,
                                                   device=self.device.currentText(),
                                                   overwrite=False, check_counts=False)
            except SipflowError as exc:
                errors.append(str(exc))
        if errors:
            self.last_error = "\n".join(errors)
            self.status.setText("not started:\n" + self.last_error)
            return False
        from napari.qt.threading import create_worker

        self.last_error = ""
        self.live_updates = 0
        self._cancel.clear()
        self.progress.setValue(0)
        self.status.setText(f"running {pipeline.name} on {Path(scan).name}…")
        self.worker = create_worker(self._work, pipeline, data, output, device,
                                    _start_thread=False, _ignore_errors=True)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start()
        return True

    def cancel(self) -> None:
        """Stop the run at its next progress record; nothing is written."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _work(self, pipeline: Pipeline, data: xr.Dataset, output: str, device: str) -> Path:
        """Worker thread: run, then save (the store appears only once complete)."""
        from .._api import run_into_store

        pipeline = _with_previews(pipeline, self.PREVIEW_EVERY)

        def progress(record: ProgressRecord) -> None:
            if self._cancel.is_set():
                raise Cancelled("run cancelled in the viewer; nothing was written")
            self._bridge.progressed.emit(record)

        return run_into_store(pipeline, data, output, cancelled=self._cancel.is_set,
                              device=device, progress=progress)

    def _on_progress(self, record: ProgressRecord) -> None:
        self.progress.setMaximum(max(record.total, 1))
        self.progress.setValue(record.iteration)
        figures = ", ".join(f"{k} {v:.4g}" for k, v in record.metrics.items()
                            if isinstance(v, float) and math.isfinite(v))
        self.status.setText(f"{record.stage}: {record.iteration}/{record.total} {figures}")
        if record.preview:
            self._show_preview(record.preview)

    def _show_preview(self, preview: dict[str, np.ndarray]) -> None:
        name = Path(self.scan.currentText()).stem
        amp = np.asarray(preview["amplitude"], np.float32)
        support = np.asarray(preview["support"], bool)
        phase = masked_phase(amp * np.exp(1j * np.asarray(preview["phase"])), support)
        layers = {"amplitude": (amp, "image", {"colormap": "gray"}),
                  "phase": (phase, "image", {"colormap": PHASE_COLORMAP,
                                             "contrast_limits": (-math.pi, math.pi)}),
                  "support": (support.astype(np.uint8), "labels", {"opacity": 0.3,
                                                                   "visible": False})}
        for role, (data, kind, kwargs) in layers.items():
            title = f"{name} live {role}"
            if title in self.viewer.layers:
                self.viewer.layers[title].data = data
            else:
                add = self.viewer.add_image if kind == "image" else self.viewer.add_labels
                add(data, name=title, metadata={"sipflow": {"source": "live", "kind": "live",
                                                            "role": role, "variable": role}},
                    **kwargs)
        self.live_updates += 1

    def _remove_live(self) -> None:
        for layer in list(self.viewer.layers):
            info = layer_info(layer.metadata)
            if info and info.get("kind") == "live":
                self.viewer.layers.remove(layer)

    def _on_done(self, path: Path) -> None:
        self.result_path = Path(path)
        self._remove_live()
        if classify(path).kind == "result":
            self.viewer.open(str(path), plugin="sipflow")
        self.status.setText(f"done: {path}")
        self.progress.setValue(self.progress.maximum())

    def _on_error(self, exc: BaseException) -> None:
        self._remove_live()
        if isinstance(exc, SipflowError):
            self.last_error = str(exc)
        else:
            log.error("run failed", exc_info=exc)
            self.last_error = f"{type(exc).__name__}: {exc} (a bug in sipflow or a plugin)"
        self.status.setText(("cancelled: " if isinstance(exc, Cancelled) else "failed: ")
                            + self.last_error)

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._suggest_output()


def _with_previews(pipeline: Pipeline, every: int) -> Pipeline:
    """`pipeline` with ``preview_every`` set on the stages that have it and left it at 0."""
    from dataclasses import replace

    steps = []
    for step in pipeline.steps:
        if "preview_every" in type(step.params).model_fields and not step.params.preview_every:
            step = replace(step, params=step.params.model_copy(update={"preview_every": every}))
        steps.append(step)
    return replace(pipeline, steps=tuple(steps))


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - a broken torch install
        return False
