"""The stage contract, importable as ``sipflow.stage`` (it lives in :mod:`sipflow.contracts`)."""

from .contracts import Context, ProgressFn, ProgressRecord, Stage, StageParams

__all__ = ["Context", "ProgressFn", "ProgressRecord", "Stage", "StageParams"]
