"""``sipflow view``: napari with sipflow results and scans open, and the widgets docked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError, SipflowError
from ._layers import classify


class ViewerUnavailable(SipflowError):
    """napari (or a screen for it) is not available."""


def check_paths(paths: Sequence[str | Path]) -> list[str]:
    """The kind of each path (``result`` or ``scan``); one paragraph naming each refused one."""
    kinds, problems = [], []
    for p in paths:
        found = classify(p)
        if found.kind is None:
            problems.append(found.reason or (
                f"{p}: not a sipflow result store (a .zarr folder written by sipflow) nor an "
                "HDF5 scan" if Path(p).exists() else f"{p}: no such file or folder"))
        kinds.append(found.kind)
    if problems:
        raise InputError("; ".join(problems))
    return kinds


def check_display() -> None:
    """Refuse to start Qt without a screen (Qt would abort the process)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ViewerUnavailable("sipflow view needs a screen: DISPLAY and WAYLAND_DISPLAY are "
                                "unset (on a remote machine use ssh -X, or run under xvfb-run)")


def view(paths: Sequence[str | Path], *, run: bool = True):
    """Open napari with `paths` (result stores and scans) and the Result and Run widgets.

    Parameters
    ----------
    paths : sequence of str or Path
        Checked before napari starts; a bad one raises :class:`~sipflow.errors.InputError`.
    run : bool
        Enter napari's event loop (False returns the viewer, for scripts and tests).
    """
    check_paths(paths)
    check_display()
    try:
        import napari
    except ImportError as exc:
        raise ViewerUnavailable(f"napari is not installed ({exc}); install the viewer with "
                                "pip install 'sipflow[napari]'") from None
    viewer = napari.Viewer(title="sipflow")
    for p in paths:
        viewer.open(str(p), plugin="sipflow")
    viewer.window.add_plugin_dock_widget("sipflow", "Result")
    viewer.window.add_plugin_dock_widget("sipflow", "Run")
    if any(layer.metadata.get("units") for layer in viewer.layers):
        # the object layers are scaled in nm (their units are in their metadata: napari
        # ignores units that differ between layers, and the detector layers are in pixels)
        overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
        scale_bar = getattr(overlays, "scale_bar", None) or viewer.scale_bar
        scale_bar.visible = True
    if any(layer.ndim == 3 and layer.metadata.get("sipflow", {}).get("role") == "amplitude"
           for layer in viewer.layers):
        viewer.dims.ndisplay = 3
    if run:
        napari.run()
    return viewer
