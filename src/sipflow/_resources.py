"""What the machine can give a run: memory, devices and CPU threads, checked before work starts.

Threads
-------
torch starts one thread per core, and two such processes on the same cores slow
each other down by an order of magnitude (every parallel region waits for a
descheduled thread). :func:`cpu_threads` sizes a run's threads to its fair share:
the cores it may run on (affinity), divided among the sipflow runs that are
computing on this machine at the same time; each holds a lock (``flock``, released
by the kernel when a process dies) on a file of its own in a shared folder.

Environment
-----------
SIPFLOW_NUM_THREADS
    Use exactly this many threads (no sharing).
SIPFLOW_TOKEN_DIR
    Folder of the runs' lock files (default: ``sipflow-cores`` in the temporary folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PipelineError, ResourceError


def memory_available() -> int:
    """Bytes this process can still allocate: the least of the machine's ``MemAvailable``,
    the room left under its cgroup's memory limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``: a container or a batch-system slot) and under ``ulimit -v``
    (``RLIMIT_AS``, minus what the process has mapped already)."""
    return min(_meminfo_available(), _cgroup_room(), _address_space_room())


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 2**62


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int:
    """Limit minus usage of this process's memory cgroup (2**62 when unlimited)."""
    base = "/sys/fs/cgroup"
    try:
        entries = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        entries = []
    for line in entries:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        rel = parts[2].lstrip("/")
        if parts[0] == "0" and parts[1] == "":  # cgroup v2
            limit = _read_int(f"{base}/{rel}/memory.max".replace("//", "/"))
            used = _read_int(f"{base}/{rel}/memory.current".replace("//", "/"))
        elif "memory" in parts[1].split(","):  # cgroup v1
            limit = _read_int(f"{base}/memory/{rel}/memory.limit_in_bytes".replace("//", "/"))
            used = _read_int(f"{base}/memory/{rel}/memory.usage_in_bytes".replace("//", "/"))
        else:
            continue
        if limit is not None and limit < 2**60:
            return max(limit - (used or 0), 0)
    return 2**62


def _address_space_room() -> int:
    """``RLIMIT_AS`` minus this process's virtual size (2**62 when unlimited)."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return 2**62
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
        mapped = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return max(int(soft) - mapped, 0)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_fits_in_memory(what: str, shape: tuple[int, ...], itemsize: int,
                         copies: float = 3.0) -> None:
    """Refuse data whose declared size cannot be held, before anything is read.

    Parameters
    ----------
    what : str
        ``file:/path/in/file``, for the message.
    shape : tuple of int
        Declared shape.
    itemsize : int
        Bytes per element as stored.
    copies : float
        Working copies a run needs (stored dtype, float32 counts, mask...).

    Raises
    ------
    ResourceError
    """
    n = math.prod(int(s) for s in shape)
    need = n * (itemsize + 4 * copies)
    have = memory_available()
    if need > have:
        raise ResourceError(
            f"{what} declares shape {tuple(shape)} ({n:,} values, {_gib(n * itemsize)} stored); "
            f"processing it needs about {_gib(need)} of memory and this process has "
            f"{_gib(have)} available (free memory, the cgroup's and ulimit's limits). Crop or "
            "bin it at the source, or read a subset with --dataset")


def check_device(device: str | None) -> str:
    """Resolve ``"auto"`` and check that the torch device exists, before any data is read.

    Returns
    -------
    str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Raises
    ------
    PipelineError
        For a malformed name or a device this machine does not have.
    """
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"--device {device!r} is not a torch device name ({exc}); use "
                            "'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PipelineError(f"--device {device!r}: this machine has no usable CUDA device "
                                "(torch.cuda.is_available() is False); use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise PipelineError(f"--device {device!r}: only {count} CUDA device(s) "
                                f"(cuda:0..cuda:{count - 1})")
        return str(dev)
    if dev.type == "mps" and torch.backends.mps.is_available():
        return "mps"
    raise PipelineError(f"--device {device!r}: device type {dev.type!r} is not available here; "
                        "use 'cpu', 'cuda' or 'auto'")


def device_memory(device: str) -> int:
    """Bytes free on `device` (RAM for the CPU)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return memory_available()


def check_memory_estimate(stage: str, need: int, device: str) -> None:
    """Raise :class:`ResourceError` when a stage's estimate exceeds the device's free memory."""
    have = device_memory(device)
    if need > have:
        raise ResourceError(f"stage {stage!r} needs about {_gib(need)} on {device} but "
                            f"{_gib(have)} is free; use fewer runs, crop or bin the data, or "
                            "another device")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _token_dir() -> Path:
    d = Path(os.environ.get("SIPFLOW_TOKEN_DIR") or Path(tempfile.gettempdir()) / "sipflow-cores")
    d.mkdir(mode=0o777, exist_ok=True)
    with contextlib.suppress(OSError):
        d.chmod(0o777)
    return d


class CpuShare:
    """This run's share of the cores: ``cores // (sipflow runs computing now)``, at least 1.

    Every heavy CPU stage holds a lock on a file of its own in a shared folder while
    it computes; counting the locked files counts the runs. :meth:`rebalance`
    recounts and resizes torch's thread pool (the engine calls it between plan
    segments), so a run that started alone gives cores back when others start.
    """

    def __init__(self) -> None:
        self.cores = usable_cores()
        self.fixed: int | None = None
        raw = os.environ.get("SIPFLOW_NUM_THREADS")
        if raw:
            try:
                self.fixed = max(1, int(raw))
            except ValueError:
                raise PipelineError(f"SIPFLOW_NUM_THREADS={raw!r} is not a whole "
                                    "number") from None
        self.folder: Path | None = None
        self.fd: int | None = None
        self.file: Path | None = None
        self.threads = self.fixed or self.cores

    def start(self) -> None:
        if self.fixed is not None:
            return
        try:
            self.folder = _token_dir()
            self.file = self.folder / f"run-{os.getpid()}-{id(self):x}"
            self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no shared folder: count this run alone
            self.stop()
            self.folder = None

    def active_runs(self) -> int:
        """sipflow runs computing on this machine now (this one included)."""
        if self.folder is None:
            return 1
        count = 0
        for entry in self.folder.glob("run-*"):
            if entry == self.file:
                count += 1
                continue
            try:
                fd = os.open(entry, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1  # held by a live run
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()  # left by a run that died
            finally:
                os.close(fd)
        return max(count, 1)

    def rebalance(self) -> int:
        """Recount the runs, set torch's threads to this run's share; return it."""
        import torch

        n = self.fixed or max(1, self.cores // self.active_runs())
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.threads = n
        return n

    def stop(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                assert self.file is not None
                self.file.unlink()
            os.close(self.fd)
            self.fd = None


_current: list[CpuShare] = []


def rebalance_threads() -> None:
    """Resize the running heavy stage's threads to its current share (no-op outside one)."""
    if _current:
        _current[-1].rebalance()


@contextlib.contextmanager
def cpu_threads() -> Iterator[int]:
    """Run the block with this run's fair share of the cores as torch threads.

    Yields
    ------
    int
        The number of threads set at the start (see :class:`CpuShare`).
    """
    import torch

    before = torch.get_num_threads()
    share = CpuShare()
    share.start()
    _current.append(share)
    try:
        yield share.rebalance()
    finally:
        _current.remove(share)
        share.stop()
        torch.set_num_threads(before)
