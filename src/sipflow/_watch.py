"""Watch a folder: process every finished scan exactly once, also across restarts.

A file is *finished* when its size and modification time have not changed for
``stable_s`` seconds and it opens as HDF5 with every external link (an Eiger master's
data files) resolving; one that still does not open after ``3 × stable_s`` without
changing is processed anyway, so that it fails with the reader's reason instead of
being waited for forever. Its outcome is kept in a JSON state file beside the results
(``.sipflow-watch.json``, replaced atomically), so a restarted watcher skips what is
done, retries a scan that was running when the watcher died, and gives up on a scan
after ``max_attempts`` failures (reported, never retried forever). An outage of the
orchestration (``deferred``) or a flow run that lost its worker (``lost``) is not a
failure of the scan: it is tried again after ``retry_after_s``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._system import atomic_write

log = logging.getLogger("sipflow")

#: name of the state file in the output folder
STATE_FILE = ".sipflow-watch.json"


def opens_completely(path: Path) -> bool:
    """True when `path` opens as HDF5 and every external link in it resolves to a file
    (an Eiger master is finished only when all its data files are there)."""
    import h5py

    missing: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.ExternalLink):
            target = Path(link.filename)
            if not target.is_absolute():
                target = path.parent / target
            if not target.is_file():
                missing.append(str(target))

    try:
        with h5py.File(path, "r") as f:
            f.visititems_links(visit)  # links only: external files are not opened
    except (OSError, ValueError, KeyError):
        return False
    return not missing


@dataclass
class WatchState:
    """Per-file outcomes, kept on disk.

    ``files[name] = {"status": "done" | "failed" | "running" | "retry", "attempts",
    "failures", "lost", "retry_after", "reason", "output", "size", "mtime"}``.
    """

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> WatchState:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            from .errors import OutputError

            raise OutputError(f"{path}: the watcher's state is unreadable ({exc}); move it "
                              "away to start over (every scan in the folder would be "
                              "processed again)") from exc
        files = data.get("files", {}) if isinstance(data, dict) else None
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("status", ""),
                                                                          str)
                for k, v in files.items()):
            from .errors import OutputError

            raise OutputError(f"{path}: the watcher's state is not sipflow's ({{\"files\": "
                              "{scan name: {status, attempts, ...}}} expected, found "
                              f"{type(files if files is not None else data).__name__} "
                              "there); move it away to start over (every scan in the folder "
                              "would be processed again)")
        state = cls(path, dict(files))
        for name, entry in state.files.items():  # the watcher died while it ran
            if entry.get("status") == "running":
                entry["status"] = "retry"
                log.warning("%s: was being processed when the watcher stopped; it will be "
                            "processed again", name)
        return state

    def save(self) -> None:
        text = json.dumps({"files": self.files}, indent=1, sort_keys=True)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def pending(self, name: str, max_attempts: int, stat: tuple[int, float] | None = None,
                now: float | None = None) -> bool:
        """Whether `name` is to be (re)processed.

        A failed file whose size or mtime (`stat`) changed since the failure is new
        content (a scan that was incomplete when taken): its attempts start again. An
        unchanged one is retried when its ``retry_after`` time has come, until
        `max_attempts`.
        """
        entry = self.files.get(name)
        if entry is None:
            return True
        if entry["status"] not in ("retry", "failed"):
            return False
        if stat is not None and entry.get("size") is not None and \
                (entry.get("size"), entry.get("mtime")) != stat:
            entry["attempts"] = 0
            entry.pop("retry_after", None)
            return True
        due = entry.get("retry_after", 0) <= (time.time() if now is None else now)
        return entry.get("attempts", 0) < max_attempts and due


#: an Eiger data file (``<scan>_data_000001.h5``), read through its master file
_EIGER_DATA_FILE = re.compile(r"_data_\d{6}\.(h5|hdf5|nxs)$", re.IGNORECASE)


def candidates(directory: Path, pattern: str) -> list[Path]:
    """Files to consider: matching `pattern`, not hidden, not partial, not Eiger data files
    (``*_data_NNNNNN.h5``: any other name with ``_data_`` in it is a scan like the rest)."""
    out = []
    for p in sorted(directory.glob(pattern)):
        name = p.name
        if (not p.is_file() or name.startswith(".") or name.endswith(".partial")
                or _EIGER_DATA_FILE.search(name)):
            continue
        out.append(p)
    return out


def watch(directory: str | Path, process: Callable[[Path], dict[str, Any]],
          state_file: str | Path, *, pattern: str = "*.h5", poll_s: float = 2.0,
          stable_s: float = 5.0, max_attempts: int = 2, once: bool = False,
          retry_after_s: float = 60.0, stop: Callable[[], bool] | None = None,
          on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Process every finished file of `directory` once; return the rows processed.

    Parameters
    ----------
    directory : path
        Folder the scans are written to.
    process : callable(Path, str) -> dict
        Processes one scan; returns a row with ``status`` (``"ok"`` or ``"failed"``),
        ``reason`` and ``output``. It must not raise. The second argument is a key of
        this attempt, the same when a restarted watcher takes the scan up again (an
        idempotency key for ``run_deployment``: the restarted watcher waits for the
        run it had started instead of starting a second one).
    state_file : path
        The JSON state (see :class:`WatchState`).
    pattern : str
        Glob of the scans (master files).
    poll_s : float
        Seconds between two looks at the folder.
    stable_s : float
        A file must keep its size and mtime this long before it is taken.
    max_attempts : int
        Attempts per file before it is given up (reported as failed).
    once : bool
        Process what is finished now (waiting `stable_s` for the rest of what is
        there, at most ``4 stable_s + poll_s`` of waiting, not counting the time spent
        processing, for a file that keeps changing: it is left for the next run), then
        return.
    retry_after_s : float
        A failed file is tried again this long after its failure if it did not change
        (a transient fault); a file that changed is tried again at once.
    stop : callable() -> bool, optional
        Checked between polls; True ends the watch.
    on_result : callable(row), optional
        Called after each processed file.
    """
    from .errors import OutputError
    from .io import OutputLock

    lock = OutputLock(state_file)
    try:
        lock.acquire()
    except OutputError:
        raise OutputError(f"{state_file}: another sipflow watcher is watching with this "
                          "state (the same -o folder) right now; a second one would process "
                          "scans twice and corrupt the state. Stop it first, or give this "
                          "one another -o folder") from None
    try:
        return _watch(Path(directory), process, WatchState.load(Path(state_file)), pattern,
                      poll_s, stable_s, max_attempts, once, retry_after_s, stop, on_result)
    finally:
        lock.release()


def _watch(folder: Path, process: Callable[[Path, str], dict[str, Any]], state: WatchState,
           pattern: str, poll_s: float, stable_s: float, max_attempts: int, once: bool,
           retry_after_s: float, stop: Callable[[], bool] | None,
           on_result: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """The loop of :func:`watch`, with the state locked."""
    seen: dict[str, tuple[int, float, float]] = {}  # name -> (size, mtime, since)
    rows: list[dict[str, Any]] = []
    started, busy = time.monotonic(), 0.0  # busy: time spent processing, not waiting
    while True:
        now = time.monotonic()
        waiting = False
        for path in candidates(folder, pattern):
            name = path.name
            try:
                st = path.stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime)
            if not state.pending(name, max_attempts, key):
                continue
            previous = seen.get(name)
            if previous is None or previous[:2] != key:
                seen[name] = (*key, now)
                waiting = True
                continue
            quiet = now - previous[2]
            # a file that keeps not opening long after it stopped changing is not being
            # written: it is processed (and fails with the reader's reason) rather than
            # waited for forever
            if quiet < stable_s or (not opens_completely(path) and quiet < 3 * stable_s):
                waiting = True
                continue
            entry = state.files.setdefault(name, {"attempts": 0})
            entry.update(status="running", size=st.st_size, mtime=st.st_mtime)
            entry["attempts"] = entry.get("attempts", 0) + 1
            state.save()
            # the same key after a restart of the watcher, a new one after each failure
            # or lost run (an outage keeps it: the run may go on while the API is away)
            tries = entry.get("failures", 0) + entry.get("lost", 0)
            key = f"{name}|{st.st_size}|{st.st_mtime_ns}|{tries}"
            t_process = time.monotonic()
            row = _record(name, entry, process(path, key), max_attempts, retry_after_s)
            busy += time.monotonic() - t_process
            state.save()
            rows.append(row | {"attempt": entry["attempts"]})
            if on_result is not None:
                on_result(rows[-1])
        if once and waiting and time.monotonic() - started - busy > 4 * stable_s + poll_s:
            still = sorted(n for n, v in seen.items() if time.monotonic() - v[2] < stable_s)
            log.warning("still being written, left for the next run: %s",
                        ", ".join(still) or "files that do not open completely yet")
            return rows
        if (once and not waiting) or (stop is not None and stop()):
            return rows
        time.sleep(poll_s)


def _record(name: str, entry: dict[str, Any], row: dict[str, Any], max_attempts: int,
            retry_after_s: float) -> dict[str, Any]:
    """Enter the outcome `row` of one attempt at file `name` in its state `entry`;
    return `row`.

    ``ok`` and ``failed`` are outcomes of the scan. ``deferred`` (the orchestration did
    not answer) and ``lost`` (the run lost its worker) are not: the attempt is given
    back and the scan tried again after `retry_after_s`; a scan lost `max_attempts`
    times is given up all the same.
    """
    status = row.get("status")
    entry.update(reason=row.get("reason", ""), output=row.get("output"))
    if status in ("deferred", "lost"):
        entry["attempts"] -= 1
        if status == "lost":
            entry["lost"] = entry.get("lost", 0) + 1
        if entry.get("lost", 0) >= max_attempts:
            entry.update(status="failed", attempts=max_attempts)
            row = row | {"status": "failed"}
            log.warning("%s: its flow run was lost %d times, given up: %s", name,
                        entry["lost"], row.get("reason"))
        else:
            entry.update(status="retry", retry_after=time.time() + retry_after_s)
            log.warning("%s: not processed now, tried again in %.0f s (not counted as a "
                        "failed attempt): %s", name, retry_after_s,
                        row.get("reason"))
        return row
    ok = status == "ok"
    entry["status"] = "done" if ok else "failed"
    if not ok:
        entry["failures"] = entry.get("failures", 0) + 1
        entry["retry_after"] = time.time() + retry_after_s
        final = entry["attempts"] >= max_attempts
        log.warning("%s: failed (attempt %d of %d%s): %s", name, entry["attempts"],
                    max_attempts, ", given up" if final else "", row.get("reason"))
    return row


def summary(state_file: str | Path) -> Iterable[tuple[str, str, str]]:
    """(file, status, reason or output) of every file the watcher knows."""
    state = WatchState.load(Path(state_file))
    for name, entry in sorted(state.files.items()):
        yield name, entry.get("status", "?"), (entry.get("reason") or entry.get("output")
                                               or "")
