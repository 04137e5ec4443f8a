"""Keep freed memory for reuse while the CPU iteration loop runs (glibc only).

torch on CPU allocates a fresh output for every FFT (its MKL FFT has no in-place
path) and most element-wise ops. With glibc's default policy, large freed blocks
go back to the kernel (``munmap``, or a trim of the heap top), so the next
iteration's arrays land on new pages: every 4 KiB page faults and is zeroed before
use. At 512² and above that costs about as much as the FFT pair itself (see
``benchmarks/README.md``). PyTorch's CPU performance guide recommends replacing the
allocator (jemalloc, tcmalloc) for the same reason; this module gets most of the
effect in-process, with :func:`mallopt`:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks below it come from the
  heap instead of fresh mappings;
- ``M_TRIM_THRESHOLD`` = 1 GiB: freed heap memory is kept for the next iteration.

:func:`release_freed_memory` (``malloc_trim(0)``) gives the kept memory back when a
reconstruction ends. Setting these turns off glibc's own adaptive thresholds for the
rest of the process, which is why it is done once, on the first CPU reconstruction.
Set ``SIPFLOW_MALLOC_TUNING=0`` to leave the allocator alone. Elsewhere (musl,
macOS, Windows) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from .._system import libc

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30

_state: dict[str, object] = {}


def _libc() -> ctypes.CDLL | None:
    """glibc, or None when the process does not run on it (or tuning is switched off)."""
    if "libc" in _state:
        return _state["libc"]  # type: ignore[return-value]
    lib = None
    if sys.platform.startswith("linux") and os.environ.get("SIPFLOW_MALLOC_TUNING", "1") != "0":
        try:
            candidate = libc()
            candidate.gnu_get_libc_version.restype = ctypes.c_char_p
            candidate.gnu_get_libc_version()  # glibc only: musl has no such symbol
            lib = candidate
        except (OSError, AttributeError):
            lib = None
    _state["libc"] = lib
    return lib


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed blocks (up to 32 MiB each) for reuse; idempotent.

    Returns
    -------
    bool
        Whether the allocator is (now) tuned.
    """
    if _state.get("tuned"):
        return True
    lib = _libc()
    tuned = bool(lib is not None and lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                 and lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _state["tuned"] = tuned
    return tuned


def release_freed_memory() -> None:
    """Return the memory kept by :func:`reuse_freed_memory` to the system."""
    lib = _libc()
    if lib is not None and _state.get("tuned"):
        lib.malloc_trim(0)
