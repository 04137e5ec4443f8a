"""File-system primitives that keep results safe: output locks, no-replace renames, stale leftovers.

Two sipflow processes that write the same output must never both succeed: the first
takes an exclusive lock on ``.<name>.sipflow-lock`` beside the output (``flock``, so a
killed process releases it), and the final rename refuses to replace a path that
appeared meanwhile (``renameat2(RENAME_NOREPLACE)`` on Linux).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path
from typing import ClassVar

from .._system import libc
from ..errors import OutputError

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


_LIBC = libc()


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing with :class:`FileExistsError` if `dst` exists.

    Atomic on Linux (``renameat2`` with ``RENAME_NOREPLACE``); elsewhere, and on file
    systems without that flag, an existence check right before ``os.rename`` (a
    directory is never renamed over a non-empty one in any case).
    """
    fn = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(output: Path) -> Path:
    """The lock file that marks `output` as being written."""
    return output.with_name(f".{output.name}.sipflow-lock")


class OutputLock:
    """Exclusive, process-lifetime claim on an output path.

    Re-entrant within one process (``save`` inside a CLI run that already holds it).
    Released by :meth:`release`, or by the kernel when the process dies.
    """

    _held: ClassVar[dict[Path, tuple[OutputLock, int]]] = {}

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output).absolute()
        self.path = lock_path(self.output)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        held = OutputLock._held.get(self.output)
        if held is not None:
            lock, count = held
            OutputLock._held[self.output] = (lock, count + 1)
            return lock
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.output}: cannot create the lock file {self.path} "
                                  f"({exc.strerror})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 64, 0).decode(errors="replace").strip()
                os.close(fd)
                raise OutputError(
                    f"{self.output}: another sipflow process (pid {other or '?'}) is writing "
                    "this output right now; wait for it, or choose another path") from None
            # the file may have been unlinked by its previous holder between open and flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self.fd = fd
            OutputLock._held[self.output] = (self, 1)
            return self
        raise OutputError(f"{self.output}: could not lock {self.path} (it keeps changing)")

    def release(self) -> None:
        held = OutputLock._held.get(self.output)
        if held is None:
            return
        lock, count = held
        if count > 1:
            OutputLock._held[self.output] = (lock, count - 1)
            return
        del OutputLock._held[self.output]
        if lock.fd is not None:
            try:
                os.unlink(lock.path)
            except FileNotFoundError:
                pass
            os.close(lock.fd)
            lock.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def remove_stale_leftovers(output: Path) -> list[Path]:
    """Delete ``.<name>.partial-PID-*`` / ``.old-PID-*`` beside `output` whose writer is gone.

    A run killed while saving leaves such a folder; it never looks like a result
    (hidden name, no completion mark) and the next run of the same output removes it.
    """
    removed = []
    parent = output.parent
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _LEFTOVER.match(entry.name)
        if m and m.group("name") == output.name and not pid_alive(int(m.group("pid"))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def is_within(path: Path, other: Path) -> bool:
    """True when `path` is `other` or lies inside it (after resolving links)."""
    a, b = path.resolve(), other.resolve()
    return a == b or b in a.parents
