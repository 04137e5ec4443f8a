"""User-facing errors.

Every error that a user can cause (a bad file, a bad pipeline, an output that
already exists) is a :class:`SipflowError`. Its message is one paragraph that
names the input, the array and what was expected; the CLI prints it without a
traceback and exits non-zero (2 for bad input, pipeline or output; 3 when a
reconstruction fails; 4 when the orchestration back end cannot be started).
Anything else that escapes is a bug.
"""

from __future__ import annotations

import difflib
from typing import Any


class SipflowError(Exception):
    """Base class of every error that the user can fix."""

    #: exit status used by the CLI for this kind of error
    exit_code: int = 2


class InputError(SipflowError):
    """An input file cannot be read, or holds no usable detector data."""


class DataError(InputError):
    """An array was read but its content is invalid (NaN, negative counts, wrong shape...)."""


class PipelineError(SipflowError):
    """A pipeline file, stage name or stage parameter is invalid."""


class OutputError(SipflowError):
    """The output cannot be written (exists, not writable, incomplete)."""


class PluginError(SipflowError):
    """A plugin is broken: bad hook result, duplicate stage name..."""


class ReconstructionError(SipflowError):
    """A reconstruction could not produce a result (e.g. every run's support collapsed)."""

    exit_code = 3


class OrchestrationError(SipflowError):
    """The orchestration back end (Prefect) could not be started or reached."""

    exit_code = 4


class OrchestrationUnavailable(OrchestrationError):
    """The orchestration server stopped answering for a while: an outage, not a fault of
    the scan (a watcher leaves the scan for later instead of counting a failure)."""


class ResourceError(SipflowError):
    """The work would need more memory or compute than the machine or device offers."""


class Cancelled(SipflowError):
    """The user stopped the run (a progress callback may raise it to stop a stage)."""

    exit_code = 130


def unknown_choice(what: str, name: str, choices: Any) -> str:
    """Message for an unknown name, with the nearest valid choices.

    Parameters
    ----------
    what : str
        What kind of name (``"stage"``, ``"constraint"``...).
    name : str
        What the user gave.
    choices : iterable of str
        The valid names.
    """
    choices = sorted(choices)
    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
    return f"unknown {what} {name!r}.{hint} Valid {what}s: {', '.join(choices) or 'none'}."
