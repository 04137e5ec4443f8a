"""The "Result" dock widget: curves, runs, metrics, PRTF, provenance, export.

Only the drawing is here; what is drawn comes from the napari-free modules ``_results``
and ``_layers``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import SipflowError
from . import _results
from ._layers import (
    dataset_for,
    layer_info,
)
from ._qt import LINKED_ATTRIBUTES, _fill_table, _label, _Plot, _sources

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import xarray as xr


class ResultWidget(QWidget):
    """Inspect the sipflow results open in the viewer, and compare two or more of them.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.

    Notes
    -----
    The "result" box lists every result with layers in the viewer; tables and text are
    those of the chosen one. "Compare" overlays the convergence and PRTF curves of all
    open results and links their layers of the same role (contrast, colormap, gamma,
    opacity), so that a change to one shows on all.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._linked: list[list[Any]] = []
        self._datasets: dict[str, xr.Dataset] = {}
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.results = QComboBox()
        self.results.setToolTip("the result whose tables and provenance are shown")
        self.compare = QCheckBox("compare")
        self.compare.setToolTip("overlay the curves of every open result and link their layers")
        top.addWidget(QLabel("result"))
        top.addWidget(self.results, 1)
        top.addWidget(self.compare)
        layout.addLayout(top)
        self.tabs = QTabWidget()
        self.curves = _Plot()
        self.runs = QTableWidget()
        self.metrics = QTableWidget()
        self.prtf = _Plot()
        self.provenance = QPlainTextEdit()
        self.provenance.setReadOnly(True)
        self.provenance.setLineWrapMode(QPlainTextEdit.NoWrap)
        for widget, title in ((self.curves, "Convergence"), (self.runs, "Runs"),
                              (self.metrics, "Metrics"), (self.prtf, "PRTF"),
                              (self.provenance, "Provenance")):
            self.tabs.addTab(widget, title)
        layout.addWidget(self.tabs, 1)
        self.export_button = QPushButton("Export view as PNG…")
        self.export_button.clicked.connect(self._export_clicked)
        layout.addWidget(self.export_button)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)
        self.results.currentIndexChanged.connect(lambda _i: self.refresh_current())
        self.compare.toggled.connect(lambda _on: self.refresh())
        self.viewer.layers.events.inserted.connect(lambda _e: self.refresh_sources())
        self.viewer.layers.events.removed.connect(lambda _e: self.refresh_sources())
        self.refresh_sources()

    # --- data -----------------------------------------------------------------------------
    def sources(self) -> list[str]:
        """Sources of the results open in the viewer."""
        return _sources(self.viewer, "result")

    def dataset(self, source: str) -> xr.Dataset | None:
        """The result behind `source`, opened once while its layers are in the viewer."""
        if source not in self._datasets:
            try:
                self._datasets[source] = dataset_for(source)
            except SipflowError as exc:
                self.message.setText(str(exc))
                return None
        return self._datasets[source]

    # --- updates --------------------------------------------------------------------------
    def refresh_sources(self) -> None:
        current = self.results.currentData()
        sources = self.sources()
        self._datasets = {k: v for k, v in self._datasets.items() if k in sources}
        self.results.blockSignals(True)
        self.results.clear()
        for s in sources:
            self.results.addItem(_label(s), s)
        if current in sources:
            self.results.setCurrentIndex(sources.index(current))
        elif sources:
            self.results.setCurrentIndex(len(sources) - 1)  # the newest
        self.results.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        self._link()
        self.refresh_current()

    def refresh_current(self) -> None:
        source = self.results.currentData()
        ds = self.dataset(source) if source else None
        shown = self.sources() if self.compare.isChecked() else ([source] if source else [])
        datasets = [(s, self.dataset(s)) for s in shown]
        self._plot_curves([(s, d) for s, d in datasets if d is not None])
        self._plot_prtf([(s, d) for s, d in datasets if d is not None])
        if ds is None:
            _fill_table(self.runs, [], [])
            _fill_table(self.metrics, [], [])
            self.provenance.setPlainText("")
            return
        headers, rows = _results.run_table(ds)
        _fill_table(self.runs, headers, rows)
        _fill_table(self.metrics, ["quantity", "value"], _results.metrics_rows(ds))
        self.provenance.setPlainText(_results.provenance_text(ds))

    def _plot_curves(self, datasets: list[tuple[str, xr.Dataset]]) -> None:
        fig = self.curves.figure
        fig.clear()
        named = [(_label(s), d) for s, d in datasets]
        curves = [c for name, d in named
                  for c in _results.convergence(d, name if len(named) > 1 else "")]
        variables = [v for v in _results.CURVES if any(c.variable == v for c in curves)]
        if not variables:
            fig.text(0.5, 0.5, "no convergence curves", ha="center", va="center")
        axes = fig.subplots(len(variables), 1, sharex=True, squeeze=False)[:, 0] if variables \
            else []
        for ax, var in zip(axes, variables, strict=False):
            for c in (c for c in curves if c.variable == var):
                ok = np.isfinite(c.y)
                ax.plot(c.x[ok], c.y[ok], label=c.label, lw=1)
            ax.set_ylabel(_results.CURVES[var])
            if all(np.nanmin(c.y) > 0 for c in curves if c.variable == var
                   and np.isfinite(c.y).any()):
                ax.set_yscale("log")
            ax.legend(fontsize="x-small")
        if len(axes):
            axes[-1].set_xlabel("iteration")
        self.curves.draw()

    def _plot_prtf(self, datasets: list[tuple[str, xr.Dataset]]) -> None:
        fig = self.prtf.figure
        fig.clear()
        ax = fig.add_subplot()
        drawn = False
        for source, ds in datasets:
            curve = _results.prtf_curve(ds)
            if curve is not None:
                ax.plot(*curve, label=_label(source), lw=1)
                drawn = True
        ax.axhline(1 / math.e, color="grey", ls=":", lw=1, label="1/e")
        ax.set_xlabel("|q| shell [pixels]")
        ax.set_ylabel("PRTF")
        ax.set_ylim(0, 1.05)
        if drawn:
            ax.legend(fontsize="x-small")
        else:
            ax.set_title("no PRTF in this result")
        self.prtf.draw()

    def _link(self) -> None:
        from napari.experimental import link_layers, unlink_layers

        for group in self._linked:
            try:
                unlink_layers(group)
            except (KeyError, ValueError):  # a layer was removed since
                pass
        self._linked = []
        if not self.compare.isChecked():
            return
        by_role: dict[str, list[Any]] = {}
        for layer in self.viewer.layers:
            info = layer_info(layer.metadata)
            if info and info.get("kind") == "result":
                by_role.setdefault(info["role"], []).append(layer)
        for layers in by_role.values():
            kinds = {type(layer) for layer in layers}
            if len(layers) > 1 and len(kinds) == 1:
                attrs = [a for a in LINKED_ATTRIBUTES if hasattr(layers[0], a)]
                link_layers(layers, attrs)
                self._linked.append(layers)

    @property
    def linked_groups(self) -> list[list[Any]]:
        """The groups of layers linked by "compare"."""
        return list(self._linked)

    # --- export ---------------------------------------------------------------------------
    def export_png(self, path: str | Path) -> Path:
        """Save the current view of the canvas as a PNG file at `path`."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        self.viewer.screenshot(path=str(path), canvas_only=True)
        self.message.setText(f"saved {path}")
        return path

    def _export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export view", "sipflow-view.png",
                                              "PNG image (*.png)")
        if path:
            self.export_png(path)
