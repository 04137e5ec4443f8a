"""The napari reader contribution: finished sipflow stores and detector scans."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._layers import LayerTuple, classify, result_layers, scan_layers

log = logging.getLogger("sipflow")

ReaderFunction = Callable[[Any], list[LayerTuple]]


def _notify(message: str) -> None:
    from napari.utils.notifications import show_warning

    log.warning("%s", message)
    show_warning(message)


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """napari's ``get_reader``: a reader for a finished sipflow store or a scan, else None.

    A store that sipflow wrote but did not finish, and a scan that no sipflow reader can
    read, are refused with a notification saying why; anything else is refused silently
    so that other readers can take it.
    """
    if not isinstance(path, str | Path):
        if len(path) != 1:
            return None  # a stack of files is not ours
        path = path[0]
    found = classify(path)
    if found.kind is None:
        if found.reason:
            _notify(found.reason)
        return None
    if found.kind == "result":
        return lambda p: result_layers(Path(path))
    # a scan: read it now so that files which are HDF5 but not detector data are refused
    from ..errors import SipflowError
    from ..io import load

    try:
        ds = load(path).load()
    except SipflowError as exc:
        _notify(f"sipflow cannot show {path}: {exc}")
        return None
    return lambda p: scan_layers(ds, Path(path).stem, str(path))
