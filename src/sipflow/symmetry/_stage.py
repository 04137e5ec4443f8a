"""``symmetry.canonicalize``: every run, the object and the truth in canonical form."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from pydantic import Field, ValidationInfo, field_validator

from .. import schema
from ..contracts import Context, Stage, StageParams, registry_of
from ..errors import PipelineError
from ..hookspecs import hookimpl
from ._groups import BUILTIN_GROUPS, get_group


class CanonicalizeParams(StageParams):
    """Parameters of ``symmetry.canonicalize``."""

    group: str = Field("farfield", description="Ambiguity group (built in: farfield, sign; "
                       "plugins add more).")

    @field_validator("group")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        try:
            get_group(value, registry_of(info.context))
        except PipelineError as exc:  # an unknown name, with the valid ones
            raise ValueError(str(exc)) from None
        return value
    truth: bool = Field(True, description="Also bring obj_true (a simulation's truth) to its "
                        "canonical form, so that it displays like the result.")


def _canonical(group: Any, x: np.ndarray, support: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    c = group.canonical(x)
    moved = None
    if support is not None:  # the same element, on the support's indicator
        moved = np.abs(np.asarray(group.apply(support.astype(np.complex64), c.element))) > 0.5
    info = {"element": c.element_dict(), "confidence": float(c.confidence),
            "ambiguous": bool(c.ambiguous)}
    return np.asarray(c.x).astype(x.dtype), moved, info


class Canonicalize(Stage):
    """Objects into the canonical form of their ambiguity group, the applied element recorded.

    ``obj`` and every run of ``obj_runs`` (with ``support``/``support_runs`` moved
    by the same element) become the representative of their orbit (far field:
    centred, twin chosen by the sign of the amplitude's third moment, global phase
    removed; see :mod:`sipflow.symmetry`), so that runs, stages and scans display and
    compare consistently. Near-ties (e.g. a centro-symmetric amplitude, where the
    twin choice is a guess) are logged and recorded, never hidden:
    ``attrs["symmetry_canonicalize"]`` holds, for ``obj``, each run and the truth,
    the element, its confidence and ``ambiguous``.
    """

    name = "symmetry.canonicalize"
    version = "1.0"
    Params = CanonicalizeParams
    requires = (schema.OBJ,)
    produces = (schema.OBJ,)

    def run(self, ds: xr.Dataset, params: CanonicalizeParams, context: Context) -> xr.Dataset:
        group = get_group(params.group, context.registry)
        out = ds.copy()
        record: dict[str, Any] = {"group": group.name}
        sup = (np.asarray(ds[schema.SUPPORT].values, bool)
               if schema.SUPPORT in ds and ds[schema.SUPPORT].shape == ds[schema.OBJ].shape
               else None)
        obj, moved, record["obj"] = _canonical(group, np.asarray(ds[schema.OBJ].values), sup)
        out[schema.OBJ] = (ds[schema.OBJ].dims, obj)
        if moved is not None:
            out[schema.SUPPORT] = (ds[schema.SUPPORT].dims, moved)
        if schema.OBJ_RUNS in ds:
            runs = np.asarray(ds[schema.OBJ_RUNS].values)
            sups = (np.asarray(ds[schema.SUPPORT_RUNS].values, bool)
                    if schema.SUPPORT_RUNS in ds and ds[schema.SUPPORT_RUNS].shape == runs.shape
                    else None)
            new_runs, new_sups, infos = [], [], []
            for r in range(runs.shape[0]):
                x, s, info = _canonical(group, runs[r], None if sups is None else sups[r])
                new_runs.append(x)
                new_sups.append(s)
                infos.append(info)
            out[schema.OBJ_RUNS] = (ds[schema.OBJ_RUNS].dims, np.stack(new_runs))
            if sups is not None:
                out[schema.SUPPORT_RUNS] = (ds[schema.SUPPORT_RUNS].dims, np.stack(new_sups))
            record["runs"] = infos
        if params.truth and schema.OBJ_TRUE in ds:
            st = (np.asarray(ds[schema.SUPPORT_TRUE].values, bool)
                  if schema.SUPPORT_TRUE in ds and ds[schema.SUPPORT_TRUE].shape
                  == ds[schema.OBJ_TRUE].shape else None)
            truth, st_moved, record["truth"] = _canonical(
                group, np.asarray(ds[schema.OBJ_TRUE].values), st)
            out[schema.OBJ_TRUE] = (ds[schema.OBJ_TRUE].dims, truth)
            if st_moved is not None:
                out[schema.SUPPORT_TRUE] = (ds[schema.SUPPORT_TRUE].dims, st_moved)
        ambiguous = [name for name, info in [("obj", record["obj"])]
                     + [(f"run {i}", v) for i, v in enumerate(record.get("runs", []))]
                     if info["ambiguous"]]
        record["ambiguous"] = ambiguous
        if ambiguous:
            context.logger.warning(
                "%s: %s: the canonical form of %s is a near-tie (confidence below the group's "
                "threshold, e.g. a centro-symmetric amplitude): the choice is a guess",
                ds.attrs.get("source", "the input"), self.name, ", ".join(ambiguous))
        out.attrs = dict(ds.attrs)
        out.attrs["symmetry_canonicalize"] = record
        return out


@hookimpl
def sipflow_stages():
    return [Canonicalize]


@hookimpl
def sipflow_symmetry_groups():
    return list(BUILTIN_GROUPS)
