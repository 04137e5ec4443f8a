"""What the "Result" dock widget shows, as plain data: curves, tables and text (no Qt)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..contracts import PhaseRecord

#: convergence variables plotted when present, with their axis label
CURVES = {schema.LLK: "LLK (normalised)", schema.LLK_FREE: "free LLK (normalised)",
          schema.LOSS: "loss", schema.ES_VARIANCE: "output variance (early stopping)",
          schema.ERROR: "error vs truth"}


@dataclass(frozen=True)
class Curve:
    """One line of a convergence plot.

    Attributes
    ----------
    variable : str
        ``llk``, ``llk_free`` or ``loss``.
    label : str
        Legend text: ``"<result> run <r>"``.
    x : ndarray of int
        Iteration numbers.
    y : ndarray of float
        Values (NaN where not evaluated).
    """

    variable: str
    label: str
    x: np.ndarray
    y: np.ndarray


def convergence(ds: xr.Dataset, name: str = "") -> list[Curve]:
    """Every convergence curve of a result: one per variable and run.

    Variables of :data:`CURVES` are taken when they have an ``iter`` dimension, with or
    without ``run``.
    """
    curves = []
    prefix = f"{name} " if name else ""
    for var in CURVES:
        if var not in ds or schema.ITER not in ds[var].dims:
            continue
        da = ds[var]
        x = np.asarray(ds[schema.ITER].values) if schema.ITER in ds.coords else np.arange(
            da.sizes[schema.ITER])
        values = np.asarray(da.transpose(..., schema.ITER).values, float)
        values = values.reshape(-1, values.shape[-1])
        for r, y in enumerate(values):
            label = f"{prefix}run {r}" if values.shape[0] > 1 or schema.RUN in da.dims else (
                name or var)
            curves.append(Curve(var, label, x, y))
    return curves


def run_table(ds: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the run table: run, rank, status, final LLK, final free LLK.

    Built from the :class:`~sipflow.contracts.PhaseRecord` (``attrs["phase"]``) that every
    phase stage writes, a plugin's too; best run first, unranked (failed) runs last.
    Empty when the result has no runs.
    """
    record = PhaseRecord.from_attrs(ds.attrs)
    if record is None:
        return [], []
    headers = ["run", "rank", "status", "final LLK", "final free LLK"]

    def col(values: list[float | None]) -> list[str]:
        values = values or [None] * record.runs
        return ["—" if v is None else format(v, ".4g") for v in values]

    ranks = record.run_rank or [None] * record.runs
    llk, free = col(record.final_llk), col(record.final_llk_free)
    rows = [[str(r), "—" if ranks[r] is None else str(ranks[r] + 1), record.run_status[r],
             llk[r], free[r]] for r in range(record.runs)]
    rows.sort(key=lambda row: (row[1] == "—", int(row[1]) if row[1] != "—" else 0))
    return headers, rows


def provenance_text(ds: xr.Dataset) -> str:
    """The provenance of a result as readable text: where, how, with what, and the pipeline."""
    prov = ds.attrs.get("provenance") or {}
    if not prov:
        return "no provenance recorded"
    lines = []
    for key in ("sipflow_version", "torch_version", "numpy_version", "python", "host",
                "device", "seed", "engine", "started_utc", "wall_s"):
        if key in prov:
            lines.append(f"{key:>16}: {prov[key]}")
    inp = prov.get("input") or {}
    for key, value in inp.items():
        lines.append(f"{'input ' + key:>16}: {value}")
    for i, st in enumerate(prov.get("stages", []), start=1):
        lines.append("")
        lines.append(f"stage {i}: {st.get('use')} {st.get('version', '')}  "
                     f"(seed {st.get('seed')}, {st.get('wall_s', 0):.2f} s)")
        for key, value in (st.get("with") or {}).items():
            lines.append(f"    {key}: {json.dumps(value)}")
    pipe = prov.get("pipeline") or {}
    if pipe.get("text"):
        lines += ["", f"pipeline {pipe.get('name', '')} from {pipe.get('origin', '?')}:",
                  pipe["text"].rstrip()]
    return "\n".join(lines)


def prtf_curve(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(q shell [pixels], PRTF) of a result, or None."""
    if schema.PRTF not in ds:
        return None
    da = ds[schema.PRTF]
    dim = da.dims[0]
    x = np.asarray(ds[dim].values) if dim in ds.coords else np.arange(da.size)
    return x, np.asarray(da.values, float)


def metrics_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    """(quantity, value) rows: the table that ``sipflow run`` prints."""
    from ..report import summary_rows

    return summary_rows(ds)


def describe(ds: xr.Dataset, name: str) -> dict[str, Any]:
    """Everything the widget shows for one result, in one dict (for tests and export)."""
    headers, rows = run_table(ds)
    return {"name": name, "curves": convergence(ds, name), "runs": (headers, rows),
            "provenance": provenance_text(ds), "prtf": prtf_curve(ds),
            "metrics": metrics_rows(ds)}
