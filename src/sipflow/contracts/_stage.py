"""The stage contract: a named, versioned, pure function of (dataset, params, context).

A plugin author writes::

    from pydantic import Field
    from sipflow import Stage, StageParams

    class Params(StageParams):
        sigma: float = Field(1.0, gt=0, description="Gaussian width [pixels]")

    class Smooth(Stage):
        name = "prep.smooth"
        version = "1.0"
        Params = Params

        def run(self, ds, params, context):
            ...
            return ds.assign(intensity=...)

and returns ``[Smooth]`` from the ``sipflow_stages`` hook.
"""

from __future__ import annotations

import abc
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import Cancelled, DataError
from ._phase import PhaseRecord

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import xarray as xr


class StageParams(BaseModel):
    """Base class of stage parameter models: unknown keys are errors, models are frozen,
    and a number must be finite (``.inf`` or ``.nan`` in a pipeline is refused when it is
    loaded, not deep inside a run)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True)
class ProgressRecord:
    """What a long-running stage reports after an iteration.

    Parameters
    ----------
    stage : str
        Registered stage name.
    iteration : int
        Iterations done so far (1-based).
    total : int
        Iterations planned.
    metrics : dict of str to float
        Figures of merit at this iteration (e.g. ``{"llk": 1.3}``, best run).
    preview : dict of str to ndarray, optional
        Low-resolution ``amplitude``, ``phase`` [rad] and ``support`` of the best run
        (central slice in 3-D), for live views; None on most records.
    """

    stage: str
    iteration: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    preview: dict[str, Any] | None = None


ProgressFn = Callable[[ProgressRecord], None]


def _no_progress(record: ProgressRecord) -> None:
    return None


@dataclass(frozen=True)
class Context:
    """What a stage may use besides its data and parameters.

    Parameters
    ----------
    device : str
        torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    seed : int
        Seed of this stage's random numbers; the same seed gives the same result on CPU.
    logger : logging.Logger
        Where the stage logs.
    progress : callable
        Called with a :class:`ProgressRecord`. Its failures are logged, not raised, except
        :class:`~sipflow.errors.Cancelled`, which a caller raises to stop the run: long
        stages let it through (and free what they hold).
    dtype : {"float32", "float64"}
        Real floating precision of the science code (complex follows).
    registry : sipflow.plugins.Registry, optional
        The plugins of this run (constraints, symmetry groups, templates by name). None:
        the process-wide one (:func:`sipflow.contracts.default_registry`); read it with
        :func:`sipflow.contracts.registry_of`.
    """

    device: str = "cpu"
    seed: int = 0
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("sipflow"))
    progress: ProgressFn = _no_progress
    dtype: str = "float32"
    registry: Any = None

    def generator(self) -> torch.Generator:
        """A torch generator on ``self.device`` seeded with ``self.seed``."""
        import torch

        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed)
        return g

    def report(self, record: ProgressRecord) -> None:
        """Send `record` to :attr:`progress`, the policy of every long stage.

        A failing progress callback is logged (debug) and never stops the science, except
        :class:`~sipflow.errors.Cancelled`, which a caller raises to stop the run and which
        propagates (the stage frees what it holds on the way out).
        """
        try:
            self.progress(record)
        except Cancelled:
            raise
        except Exception:  # a progress display must never break the science
            self.logger.debug("progress callback failed", exc_info=True)

    @staticmethod
    def resolve_device(device: str | None) -> str:
        """Turn ``"auto"``/None into ``"cuda"`` when a GPU is visible, else ``"cpu"``.

        Any other name is checked (see :func:`sipflow._resources.check_device`).
        """
        from .._resources import check_device

        return check_device(device)

    @staticmethod
    def new_seed() -> int:
        """A fresh random seed (recorded in provenance so the run can be repeated)."""
        return random.SystemRandom().randrange(2**31)


class Stage(abc.ABC):
    """Base class of every stage, built-in or third-party.

    Subclasses set the class attributes and implement :meth:`run`.

    Attributes
    ----------
    name : str
        Registered name, ``<kind>.<method>`` (``prep.standard``, ``phase.classic``).
    version : str
        Version of the algorithm; recorded in provenance. Bump it when results change.
    Params : type of StageParams
        Pydantic model of the parameters, with defaults, bounds and descriptions (units!).
    requires : tuple of str
        Dataset variables the stage needs; checked before :meth:`run` is called.
    produces : tuple of str
        Dataset variables the stage adds or replaces; the contract test checks that
        they are there, 2-D and 3-D, with the schema's dimensions and types.
    heavy : bool
        True for compute-heavy stages; under Prefect they hold a slot of their device's
        concurrency limit while they run (two never share a card).
    record_attr : str or None
        The ``attrs`` key of the stage's own record (``"phase_classic"``), when it writes
        one: summaries call :meth:`summary_rows` of every stage whose record a result
        holds, in the order the records were written. A phase stage that writes the
        common :class:`~sipflow.contracts.PhaseRecord` (``attrs["phase"]``) needs none.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    Params: ClassVar[type[StageParams]] = StageParams
    requires: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    heavy: ClassVar[bool] = False
    record_attr: ClassVar[str | None] = None

    @classmethod
    def kind(cls) -> str:
        """The part of the name before the first dot (``prep``, ``phase``, ``analyse``)."""
        return cls.name.split(".", 1)[0]

    @classmethod
    def estimate_memory(cls, params: StageParams, shape: tuple[int, ...], itemsize: int
                        ) -> int | None:
        """Bytes of device memory the stage needs for data of `shape`, or None (small).

        Checked against the device before a run starts. Override in heavy stages.

        Parameters
        ----------
        params : StageParams
        shape : tuple of int
            Shape of the input ``intensity`` (an upper bound of what the stage sees).
        itemsize : int
            Bytes of one real value (4 for float32, 8 for float64).
        """
        return None

    @classmethod
    def check_params(cls, params: StageParams) -> None:
        """Checks of the parameters alone, without any input: the files they name exist
        and are what they should be. ``sipflow validate`` runs them; the default
        :meth:`preflight` does too, so a run refuses the same things before any work.

        Raise a :class:`~sipflow.errors.SipflowError` naming the problem.
        """
        return None

    @classmethod
    def preflight(cls, params: StageParams, shape: tuple[int, ...]) -> None:
        """Checks that need no computation, run before any stage of a run starts.

        Override to refuse early what would fail later: a file named in the
        parameters that is missing or unreadable, a shape the stage cannot take.
        Raise a :class:`~sipflow.errors.SipflowError` naming the problem.

        Parameters
        ----------
        params : StageParams
        shape : tuple of int
            Shape of the input ``intensity`` (before any preprocessing stage).
        """
        cls.check_params(params)

    @classmethod
    def summary_rows(cls, ds: xr.Dataset) -> list[tuple[str, str]]:
        """(quantity, value) rows this stage adds to a result's summary.

        ``sipflow run``/``evaluate``, ``sipflow batch`` and the napari Result widget
        show them. The default, for a phase stage, is the rows of its
        :class:`~sipflow.contracts.PhaseRecord` (runs accepted, the best run's LLK and
        free LLK); override to add your own, read from ``ds.attrs``.

        Parameters
        ----------
        ds : xarray.Dataset
            A result (its attrs hold the records of the stages that ran).
        """
        record = PhaseRecord.from_attrs(ds.attrs)
        if cls.kind() == "phase" and record is not None and record.stage == cls.name:
            return record.summary_rows()
        return []

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def check_inputs(self, ds: xr.Dataset) -> None:
        """Raise :class:`~sipflow.errors.DataError` when a required variable is missing."""
        missing = [v for v in self.requires if v not in ds.variables]
        if missing:
            source = ds.attrs.get("source", "the input dataset")
            raise DataError(
                f"stage {self.name!r} needs the variable(s) {', '.join(missing)} but {source} "
                f"has only: {', '.join(map(str, ds.data_vars)) or 'none'}. "
                "Put a stage that produces them earlier in the pipeline."
            )

    def __call__(self, ds: xr.Dataset, params: StageParams | dict[str, Any] | None = None,
                 context: Context | None = None) -> xr.Dataset:
        """Validate `params`, check inputs and run the stage."""
        if not isinstance(params, StageParams):
            params = self.Params(**(params or {}))
        self.check_inputs(ds)
        return self.run(ds, params, context or Context())

    @abc.abstractmethod
    def run(self, ds: xr.Dataset, params: Any, context: Context) -> xr.Dataset:
        """Return a new dataset; never modify `ds` in place."""
