"""``phase.learned``: one forward pass of a trained end-to-end network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from pydantic import Field

from .. import schema
from ..contracts import PHASE_ATTR, Context, PhaseRecord, Stage, StageParams
from ..errors import DataError, PipelineError
from ..hookspecs import hookimpl
from ..io import sha256_file
from ..physics import Measurement


class LearnedParams(StageParams):
    """Parameters of ``phase.learned``."""

    model: str | None = Field(None, description="Path of a model trained by 'sipflow train' "
                              "(DIR/model.pt); relative paths are relative to the working "
                              "folder. Required.")
    support_threshold: float = Field(0.2, gt=0, lt=1, description="Support: amplitude above "
                                     "this fraction of its maximum.")


class Learned(Stage):
    """End-to-end phase retrieval by a network trained with symmetry breaking (``sipflow train``).

    The model named by ``model`` maps the pattern (through its autocorrelation) to
    the object in the canonical form of its training targets. No iterations and
    no free pixels: the result is a starting point to refine, so put
    ``phase.classic`` (``initial_object: input``) or ``phase.double_dip`` (``init:
    previous``) after it. The model is refused when the data's shape is not the one
    it was trained on. Output: ``obj``, ``support``, ``obj_runs``/``support_runs``
    (one run), ``llk`` (run, iter) with the final value, and ``attrs["phase_learned"]``
    (model path, checksum, training configuration and validation error).
    """

    name = "phase.learned"
    version = "1.0"
    Params = LearnedParams
    requires = (schema.INTENSITY,)
    produces = (schema.OBJ, schema.SUPPORT, schema.OBJ_RUNS, schema.SUPPORT_RUNS, schema.LLK)
    heavy = True

    @classmethod
    def check_params(cls, params: LearnedParams) -> None:  # type: ignore[override]
        """The model is named and is a sipflow model (``sipflow validate``, and before any
        work of a run starts)."""
        from ._format import load_checkpoint

        cls._require_model(params)
        load_checkpoint(params.model)

    @classmethod
    def _require_model(cls, params: LearnedParams) -> None:
        if params.model is None:
            raise PipelineError(f"{cls.name} needs a model: train one with 'sipflow train DIR' "
                                "and give it in the pipeline as 'with: {model: DIR/model.pt}'")

    def run(self, ds: xr.Dataset, params: LearnedParams, context: Context) -> xr.Dataset:
        from ._checkpoint import LearnedModel

        self._require_model(params)
        meas = Measurement.from_dataset(ds, stage=self.name)
        counts, mask = meas.counts, meas.mask
        source = ds.attrs.get("source", "the input")
        if counts.ndim != 2:
            raise DataError(f"{source}: {self.name}: learned models are 2-D; the intensity has "
                            f"shape {counts.shape}")
        model = LearnedModel.load(params.model, device=context.device)
        obj = model.reconstruct(counts, mask, source=source)
        amp = np.abs(obj)
        support = amp > params.support_threshold * max(float(amp.max()), 1e-30)
        llk = meas.llk(obj)
        rdims = schema.real_dims(2)
        out = schema.without_phase_results(ds)
        out[schema.OBJ] = (rdims, obj)
        out[schema.SUPPORT] = (rdims, support)
        out[schema.OBJ_RUNS] = ((schema.RUN, *rdims), obj[None])
        out[schema.SUPPORT_RUNS] = ((schema.RUN, *rdims), support[None])
        out[schema.LLK] = ((schema.RUN, schema.ITER), np.array([[llk]], np.float32))
        out = out.assign_coords({schema.RUN: [0], schema.ITER: [0]})
        path = Path(params.model)
        out.attrs = dict(ds.attrs)
        out.attrs["phase_learned"] = {
            "model": str(path.resolve()), "sha256": sha256_file(path),
            "trained_epochs": model.epoch, "trained_with": model.sipflow_version,
            "symmetry_break": model.config.symmetry_break, "group": model.config.group,
            "validation_error": (model.history.get("val_error") or [float("nan")])[-1],
            "training": model.config.model_dump(mode="json"), "llk": llk,
        }
        out.attrs[PHASE_ATTR] = PhaseRecord(
            stage=self.name, best_run=0, ranked_by="llk", run_status=["ok"], run_rank=[0],
            final_llk=[llk], final_llk_free=[], averaged_runs=[0]).to_attrs()
        context.logger.info("%s: %s (trained %d epochs, validation error %.3g): LLK %.4g",
                            self.name, path, model.epoch,
                            out.attrs["phase_learned"]["validation_error"], llk)
        return out


@hookimpl
def sipflow_stages():
    return [Learned]
