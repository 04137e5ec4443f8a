"""main(): parse, dispatch, and turn every error a user can cause into a paragraph and a status."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import SipflowError
from ._common import _stderr
from ._parser import build_parser


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM ends sipflow like Ctrl-C: clean-up code runs, nothing half-written stays."""
    raise KeyboardInterrupt


def _log_warnings() -> None:
    """sipflow's warnings (empty frames, skipped plugins...) go to stderr, one line each."""
    import logging

    logger = logging.getLogger("sipflow")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sipflow: %(levelname)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    _log_warnings()
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _dispatch(args)
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (its pipe reports an error); if so, point stdout
    at /dev/null so that Python's final flush does not complain."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
    if closed:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
    return closed


def _os_error(exc: OSError, args: argparse.Namespace) -> int:
    if args.debug:
        raise exc
    where = exc.filename or "a file"
    _stderr(f"sipflow: error: {where}: {exc.strerror or exc} (operating system error "
            f"{exc.errno}); nothing was written")
    return 2


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; turn every error a user can cause into a paragraph and a status."""
    try:
        return args.func(args)
    except BrokenPipeError as exc:
        if _stdout_closed():
            return 0  # the reader of our output went away (`| head`): not an error
        return _os_error(exc, args)
    except SipflowError as exc:
        if args.debug:
            raise
        _stderr(f"sipflow: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _stderr("sipflow: interrupted; no result was written")
        return 130
    except OSError as exc:
        return _os_error(exc, args)
    except Exception as exc:
        if args.debug:
            raise
        _stderr(f"sipflow: internal error: {type(exc).__name__}: {exc}. This is a bug or an "
                "unexpected input; rerun with --debug for the traceback and report it.")
        return 1
