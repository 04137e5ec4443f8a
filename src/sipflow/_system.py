"""Operating-system helpers used across sipflow: the C library, atomic file writes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path


@cache
def libc() -> ctypes.CDLL | None:
    """The C library (with ``errno`` kept for :func:`ctypes.get_errno`), or None if absent."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - not a C library ctypes can load
        return None


_PR_SET_PDEATHSIG = 1


def prctl(option: int, arg: int) -> int:
    """Linux ``prctl(option, arg)``; its return value (0 on success, -1 without libc)."""
    lib = libc()
    return int(lib.prctl(option, arg, 0, 0, 0)) if lib is not None else -1


def die_with_parent(sig: int | None = None) -> None:  # pragma: no cover - in the child
    """Make the calling process receive `sig` (SIGTERM) when its parent dies, even by
    ``kill -9`` (Linux ``PR_SET_PDEATHSIG``): nothing sipflow starts outlives it. Exits
    at once if the parent is already gone."""
    import os
    import signal

    prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM if sig is None else sig))
    if os.getppid() == 1:
        os._exit(1)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write `path` all at once: `write` fills a temporary file beside it, then it replaces.

    A reader sees the old file or the new one, never half of one; when `write` or the
    rename fails, the temporary file is removed and the old file is left as it was.

    Parameters
    ----------
    path : path
        The file to (re)write.
    write : callable(Path)
        Writes the content to the temporary path it is given.

    Returns
    -------
    Path
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
