"""Human-facing summaries of a result: a metrics table and a PNG quick-look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import schema
from .contracts import PHASE_ATTR
from .plugins import Registry, get_registry


def _mode_rows(metrics: dict) -> list[tuple[str, str]]:
    """A warning when the mask (a beamstop) leaves modes of the support undetermined."""
    n = metrics.get("undetermined_modes")
    if not n:
        return []
    computed = len(metrics.get("unmeasured_mode_power", []))
    return [("mode warning", f"{n}{' or more' if n >= computed else ''} mode(s) of the support "
                             "have >= 99% of their power on unmeasured pixels (a beamstop): "
                             "the data do not fix them, so the object's low frequencies are "
                             "not unique whatever the LLK; a smaller beamstop, positivity or "
                             "another prior is needed")]


def stage_rows(ds: xr.Dataset, registry: Registry | None = None) -> list[tuple[str, str]]:
    """The rows of every stage whose record `ds` holds, in the order they were written.

    A stage is found by its :attr:`~sipflow.Stage.record_attr` among the attrs keys, or
    as the ``stage`` of the :class:`~sipflow.contracts.PhaseRecord` (``attrs["phase"]``);
    its :meth:`~sipflow.Stage.summary_rows` gives the rows. No stage is named here, so a
    plugin's stage shows up like a built-in one.

    Parameters
    ----------
    ds : xarray.Dataset
        A result.
    registry : Registry, optional
        Where the stages are looked up (default: the process-wide registry).
    """
    registry = registry or get_registry()
    by_attr = {cls.record_attr: cls for cls in registry.stages.values() if cls.record_attr}
    seen: list[type] = []
    rows: list[tuple[str, str]] = []
    for key, value in ds.attrs.items():
        cls = by_attr.get(key)
        if key == PHASE_ATTR and isinstance(value, dict):
            cls = registry.stages.get(str(value.get("stage")))
        if cls is None or cls in seen:
            continue
        seen.append(cls)
        rows.extend(cls.summary_rows(ds))
    return rows


def summary_rows(ds: xr.Dataset, registry: Registry | None = None) -> list[tuple[str, str]]:
    """(name, value) rows describing a result: shapes, each stage's rows, metrics, times.

    Parameters
    ----------
    ds : xarray.Dataset
        A result.
    registry : Registry, optional
        Where the stages of :func:`stage_rows` are looked up.
    """
    rows: list[tuple[str, str]] = []
    if schema.INTENSITY in ds:
        rows.append(("intensity", f"{tuple(ds[schema.INTENSITY].shape)}"))
    if schema.OBJ in ds:
        rows.append(("object", f"{tuple(ds[schema.OBJ].shape)} {ds[schema.OBJ].dtype}"))
    rows.extend(stage_rows(ds, registry))
    rows.extend(_mode_rows(ds.attrs.get("metrics") or {}))
    for key, value in (ds.attrs.get("metrics") or {}).items():
        if isinstance(value, float):
            rows.append((key, f"{value:.4g}"))
        elif isinstance(value, list):
            rows.append((key, "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                              for v in value) + "]"))
        else:
            rows.append((key, str(value)))
    prov = ds.attrs.get("provenance") or {}
    for st in prov.get("stages", []):
        wall = float(st.get("wall_s", float("nan")))
        rows.append((f"time {st.get('use', '?')}", f"{wall:.2f} s"))
    if prov:
        rows.append(("device / seed", f"{prov.get('device')} / {prov.get('seed')}"))
    return rows


def print_table(rows: list[tuple[str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def _central(a: np.ndarray) -> np.ndarray:
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def quicklook(ds: xr.Dataset, path: str | Path, title: str = "") -> Path:
    """Write a PNG: log intensity, amplitude, phase (cyclic, in support) and LLK curves.

    3-D data show their central slice. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, Any]] = []
    if schema.INTENSITY in ds:
        panels.append(("log10 intensity", np.log10(1 + _central(np.asarray(
            ds[schema.INTENSITY].values, float)))))
    if schema.OBJ in ds:
        obj = _central(np.asarray(ds[schema.OBJ].values))
        support = (_central(np.asarray(ds[schema.SUPPORT].values)) if schema.SUPPORT in ds
                   else np.abs(obj) > 0.1 * np.abs(obj).max())
        panels.append(("amplitude", np.abs(obj)))
        panels.append(("phase [rad] in support", np.ma.masked_where(~support, np.angle(obj))))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 4))
    for ax, (name, img) in zip(axes, panels, strict=False):
        cmap = "twilight" if "phase" in name else "gray" if name == "amplitude" else "viridis"
        kw = {"vmin": -np.pi, "vmax": np.pi} if "phase" in name else {}
        im = ax.imshow(img, cmap=cmap, **kw)
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[-1]
    if schema.LLK in ds:
        llk = np.asarray(ds[schema.LLK].values)
        its = np.asarray(ds[schema.ITER].values)
        for r in range(llk.shape[0]):
            ax.semilogy(its, np.clip(llk[r], 1e-12, None), label=f"run {r}")
        ax.set_xlabel("iteration")
        ax.set_title("Poisson LLK")
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
