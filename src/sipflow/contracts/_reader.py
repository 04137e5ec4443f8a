"""The reader protocol: what a ``sipflow_readers`` hook returns.

A reader turns one kind of detector file into a dataset that follows
:mod:`sipflow.schema`. :func:`sipflow.load` asks every registered reader how
confident it is (:meth:`Reader.can_read`) and calls the most confident one.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr


@runtime_checkable
class Reader(Protocol):
    """A detector-file reader plugin.

    Attributes
    ----------
    name : str
        Unique name, what users pass as ``reader:`` in a pipeline's ``input``.
    options : collection of str
        Keyword options :meth:`read` accepts (e.g. ``{"dataset", "mask"}``); a
        pipeline's ``input:`` keys are validated against them before data is read.
    """

    name: str
    options: Collection[str]

    def can_read(self, path: Path) -> int:
        """Confidence that this reader handles `path`: 0 = not mine, higher wins.

        Should be cheap (look at a signature or suffix) and should not raise; sipflow
        reports a reader that raises here by its plugin's name and skips it.
        """
        ...

    def read(self, path: Path, **options: Any) -> xr.Dataset:
        """Read `path` into a dataset with at least ``intensity`` (lazy arrays welcome).

        Raises :class:`sipflow.errors.InputError` / :class:`~sipflow.errors.DataError`
        with a message naming the file and the array for anything wrong with the file.
        """
        ...
