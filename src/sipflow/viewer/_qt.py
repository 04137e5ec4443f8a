"""Qt pieces the dock widgets share: layer sources, tables, the plot canvas."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._layers import (
    layer_info,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

log = logging.getLogger("sipflow")


#: layer attributes kept equal across compared results
LINKED_ATTRIBUTES = ("contrast_limits", "colormap", "gamma", "opacity")


def _sources(viewer: napari.Viewer, kind: str) -> list[str]:
    """Sources (store paths, scan files) of the sipflow layers of `kind`, in layer order."""
    seen: list[str] = []
    for layer in viewer.layers:
        info = layer_info(layer.metadata)
        if info and info.get("kind") == kind and info["source"] not in seen:
            seen.append(info["source"])
    return seen


def _label(source: str) -> str:
    p = Path(source)
    return p.name if p.suffix else source


def _fill_table(table: QTableWidget, headers: list[str], rows: list[list[str]] | list[tuple]
                ) -> None:
    table.clear()
    table.setColumnCount(len(headers))
    table.setRowCount(len(rows))
    table.setHorizontalHeaderLabels(headers)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            item = QTableWidgetItem(str(value))
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            table.setItem(i, j, item)
    table.resizeColumnsToContents()


class _Plot(QWidget):
    """A matplotlib figure in a Qt widget."""

    def __init__(self) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        QVBoxLayout(self).addWidget(self.canvas)

    def draw(self) -> None:
        self.canvas.draw_idle()
