"""Reliability round 3: the defects fixed so far, each with the test that failed before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sipflow._watch import candidates
from sipflow.pipeline import Pipeline


def test_a_scan_named_with_data_in_it_is_watched_but_eiger_data_files_are_not(tmp_path):
    """Defect 5: any file with ``_data_`` in its name was silently ignored."""
    for name in ("run_data_scan.h5", "my_data_7.h5", "scan_data_000001.h5", "scan_master.h5"):
        (tmp_path / name).write_bytes(b"")
    found = [p.name for p in candidates(tmp_path, "*.h5")]
    assert found == ["my_data_7.h5", "run_data_scan.h5", "scan_master.h5"]


def test_a_closed_reader_of_the_output_is_not_an_error(tmp_path):
    """Defect 22: ``sipflow ... --json | head -c 10`` exited 2 with "Broken pipe"."""
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "stages", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before sipflow writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Broken pipe" not in err and b"Traceback" not in err and b"Exception" not in err


def test_a_pipeline_file_whose_name_holds_a_newline_is_read_as_a_file(tmp_path):
    """Defect 25: such a path was parsed as YAML text."""
    path = tmp_path / "two\nlines.yaml"
    path.write_text("name: odd\nstages:\n  - use: prep.standard\n")
    pipe = Pipeline.load(str(path))
    assert pipe.name == "odd" and pipe.origin == str(path.resolve())
    text = Pipeline.load("name: inline\nstages:\n  - use: prep.standard\n")
    assert text.name == "inline" and text.origin == "<memory>"
    with pytest.raises(Exception, match="pipeline file not found"):
        Pipeline.load(str(tmp_path / "missing.yaml"))


def test_a_loop_of_symbolic_links_is_named_and_nothing_written(tmp_path):
    """Defect 18: a soft-link loop as the input."""
    (tmp_path / "a.h5").symlink_to(tmp_path / "b.h5")
    (tmp_path / "b.h5").symlink_to(tmp_path / "a.h5")
    out = tmp_path / "r.zarr"
    for engine in ("local", "prefect"):
        bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default",
                              str(tmp_path / "a.h5"), "-o", str(out), "--engine", engine],
                             capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2, bad.stderr
        assert "is a loop of symbolic links (a.h5 -> " in bad.stderr
        assert "Traceback" not in bad.stderr and not out.exists()


@pytest.mark.parametrize(("stage", "values", "says"), [
    ("refine.constrained", {"constraints": [{"use": "tv", "with": {"relative": ".inf"}}]},
     "finite number"),
    ("refine.constrained", {"constraints": [{"use": "amplitude",
                                             "with": {"min": 5, "max": 1}}]},
     "min 5 is not below max 1"),
    ("phase.double_dip", {"lr": ".nan"}, "finite number"),
])
def test_values_that_need_no_data_are_refused_when_the_pipeline_is_loaded(stage, values, says,
                                                                         tmp_path):
    """Defects 16 and 20: ``tv {relative: .inf}`` passed validate (and broke the summary
    with a non-finite certificate), ``amplitude {min: 5, max: 1}`` and ``lr: .inf`` were
    refused only during the run."""
    import yaml

    text = yaml.safe_dump({"stages": [{"use": stage, "with": values}]}).replace(
        "'.inf'", ".inf").replace("'.nan'", ".nan")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match=says):
        Pipeline.load(path)
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr


def test_a_non_finite_certificate_does_not_break_the_summary():
    """Defect 16: a store's certificate with Infinity/NaN (or a missing figure) gave an
    internal ValueError in run's and evaluate's summary."""
    import numpy as np
    import xarray as xr

    from sipflow.report import summary_rows

    ds = xr.Dataset({"obj": (("y", "x"), np.ones((4, 4), np.complex64))})
    ds.attrs["refine_certificate"] = {"certified": False, "status": "max_iterations",
                                      "max_violation": "Infinity", "kkt_residual": None,
                                      "stationarity": "sampled", "sampling_radius": "NaN",
                                      "reason": "the violation did not fall"}
    rows = dict(summary_rows(ds))
    assert rows["refine violation / KKT"] == "inf / nan (sampled within nan)"
    assert rows["refine certificate"] == "NOT certified (max_iterations)"


@pytest.mark.parametrize("state", ['[1, 2]', '{"files": [1]}', '{"files": {"a.h5": 3}}',
                                   '{"files": {"a.h5": {"status": 5}}}'])
def test_a_malformed_watcher_state_is_named(tmp_path, state):
    """Defect 17: a malformed ``.sipflow-watch.json`` gave an internal error."""
    from sipflow._watch import WatchState
    from sipflow.errors import OutputError

    path = tmp_path / ".sipflow-watch.json"
    path.write_text(state)
    with pytest.raises(OutputError, match="the watcher's state is not sipflow's"):
        WatchState.load(path)


@pytest.mark.parametrize("text", ["stages:\n" + "  - use: prep.standard\n" * 30000,
                                  "stages: " + "[" * 100000 + "]" * 100000 + "\n"])
def test_pipeline_size_and_depth_are_bounded(tmp_path, text):
    """Defects 13 and 14: a pipeline over 512 KB failed under Prefect with a 100 MB error;
    46 MB of YAML grew validate's memory, 100 000 nested brackets: RecursionError."""
    from sipflow.errors import PipelineError

    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=r"a pipeline is at most 256 KiB|nests too deeply"):
        Pipeline.load(path)
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert len(bad.stderr) < 400


def test_a_deeply_nested_small_pipeline_is_refused():
    from sipflow.errors import PipelineError

    with pytest.raises(PipelineError, match="nests too deeply"):
        Pipeline.load("stages: " + "[" * 20000 + "]" * 20000 + "\n")


def _ok(done):
    return lambda p, key: done.append(p.name) or {"status": "ok", "output": "x"}


def test_a_scan_incomplete_when_taken_is_processed_once_it_changes(tmp_path):
    """Defect 4: attempt 2 ran at once on the unchanged file, and once the file was
    complete it was never processed."""
    import json

    from sipflow import _watch

    incoming, state = tmp_path / "in", tmp_path / "state.json"
    incoming.mkdir()
    scan = incoming / "scan.h5"
    scan.write_bytes(b"half")
    calls = []

    def fails(p, key):
        calls.append(p.name)
        return {"status": "failed", "reason": "truncated"}

    _watch.watch(incoming, fails, state, poll_s=0.05, stable_s=0.1, once=True,
                 retry_after_s=3600)
    _watch.watch(incoming, fails, state, poll_s=0.05, stable_s=0.1, once=True,
                 retry_after_s=3600)
    assert calls == ["scan.h5"]  # not again at once: the file did not change
    scan.write_bytes(b"half and the rest")  # the scan is complete now
    done = []
    _watch.watch(incoming, _ok(done), state, poll_s=0.05, stable_s=0.1, once=True)
    assert done == ["scan.h5"]
    assert json.loads(state.read_text())["files"]["scan.h5"]["status"] == "done"


def test_watch_once_returns_while_a_file_keeps_growing(tmp_path):
    """Defect 9: ``watch --once`` never exited while a file kept growing."""
    import threading
    import time

    from sipflow import _watch

    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "done.h5").write_bytes(b"x")
    growing = incoming / "growing.h5"
    stop = threading.Event()

    def grow():
        while not stop.is_set():
            with open(growing, "ab") as fh:
                fh.write(b"y")
            time.sleep(0.02)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        t0 = time.monotonic()
        done = []
        _watch.watch(incoming, _ok(done), tmp_path / "s.json", poll_s=0.05, stable_s=0.2,
                     once=True, stop=lambda: time.monotonic() - t0 > 10)  # a bound for the
        # old behaviour, which never returned
        assert time.monotonic() - t0 < 5
        assert done == ["done.h5"]  # the growing one is left for the next run
    finally:
        stop.set()
        writer.join()


def test_a_second_watcher_on_the_same_state_is_refused(tmp_path):
    """Defect 10: two watchers on one folder corrupted ``.sipflow-watch.json``."""
    import threading

    from sipflow import _watch

    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    out.mkdir()
    (incoming / "scan.h5").write_bytes(b"x")
    started, release = threading.Event(), threading.Event()

    def slow(p, key):
        started.set()
        release.wait(60)
        return {"status": "ok", "output": "x"}

    first = threading.Thread(target=_watch.watch, args=(incoming, slow,
                                                        out / _watch.STATE_FILE),
                             kwargs={"poll_s": 0.05, "stable_s": 0.1, "once": True})
    first.start()
    try:
        assert started.wait(30)
        second = subprocess.run([sys.executable, "-m", "sipflow.cli", "watch", str(incoming),
                                 "--pipeline", "default", "-o", str(out), "--once",
                                 "--stable", "0.1", "--engine", "local"],
                                capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        assert "another sipflow watcher is watching with this state" in second.stderr
    finally:
        release.set()
        first.join()
    state = __import__("json").loads((out / _watch.STATE_FILE).read_text())
    assert state["files"]["scan.h5"]["status"] == "done"


def test_ten_thousand_frame_candidates_give_a_short_message_quickly(tmp_path):
    """Defect 24: a 359 KB message after 110 s for 10 000 NXdata groups."""
    import time

    import h5py
    import numpy as np

    import sipflow
    from sipflow.errors import InputError

    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(10000):
            g = f.create_group(f"e{i}")
            g.attrs.update({"NX_class": "NXdata", "signal": "data"})
            g["data"] = np.zeros((8, 8), np.uint8)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"several datasets look like detector frames: "
                                         r".* and more \(only the first 10 are listed\)") as e:
        sipflow.load(path)
    assert len(str(e.value)) < 1000 and time.perf_counter() - t0 < 30


def test_an_unreachable_prefect_api_is_exit_4_with_its_url(tmp_path):
    """Defect 11: an unreachable PREFECT_API_URL gave exit 1 "internal error: Failed to
    reach API" (documented: exit 4 with a message)."""
    import os
    import socket

    from sipflow.simulate import Simulation, write_scan

    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32)))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default", str(scan),
                          "-o", str(tmp_path / "r.zarr"), "--engine", "prefect"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 4, bad.stderr
    assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api does not answer" in bad.stderr
    assert "internal error" not in bad.stderr and not (tmp_path / "r.zarr").exists()


def test_an_unwritable_home_is_named_at_once(tmp_path):
    """Defect 12: a missing or unwritable HOME gave, after 25 s, "could not find a free
    port" (uvicorn's startup failure taken as a port in use)."""
    import os
    import time

    from sipflow.simulate import Simulation, write_scan

    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32)))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    env["HOME"] = "/proc/no-such-home"  # not creatable, even by root
    t0 = time.monotonic()
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default", str(scan),
                          "-o", str(tmp_path / "r.zarr"), "--engine", "prefect"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 4, bad.stderr
    assert "Prefect keeps its database in /proc/no-such-home/.prefect" in bad.stderr
    assert "set PREFECT_HOME" in bad.stderr and "free port" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and time.monotonic() - t0 < 60
    assert not (tmp_path / "r.zarr").exists()


def _no_api() -> dict[str, str]:
    """This process's environment without a Prefect API (serve starts its own)."""
    import os

    return {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}


def test_serve_with_an_unreachable_prefect_api_url_says_so(tmp_path):
    """Defect 11, serve: with PREFECT_API_URL at a dead port it waited on it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _no_api() | {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "serve", "--home",
                          str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode == 4, bad.stderr
    assert f"PREFECT_API_URL=http://127.0.0.1:{port}/api does not answer" in bad.stderr


def test_serve_on_a_port_another_program_holds_says_so_at_once(tmp_path):
    """Defect 23: ``serve`` on a busy port said "did not start within 180 s"."""
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "serve", "--port",
                              str(port), "--home", str(tmp_path / "home")],
                             capture_output=True, text=True, timeout=300, env=_no_api())
    assert bad.returncode == 4, bad.stderr
    assert f"port {port} on 127.0.0.1 is taken by another program" in bad.stderr
    assert time.monotonic() - t0 < 60


def test_an_unreachable_dask_scheduler_is_named_at_once(tmp_path):
    """Defect 21: an unreachable Dask scheduler took 58 s and printed two tracebacks."""
    import socket
    import time

    from sipflow.simulate import Simulation, write_scan

    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "batch", "default", str(scan),
                          "-o", str(tmp_path / "out"), "--engine", "dask", "--dask-address",
                          f"tcp://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 4, bad.stderr
    assert f"the Dask scheduler at tcp://127.0.0.1:{port} does not answer" in bad.stderr
    assert "Traceback" not in bad.stderr and time.monotonic() - t0 < 60
    assert not list((tmp_path / "out").glob("*.zarr"))


def test_memory_checks_honour_ulimit(tmp_path):
    """Defect 15: memory checks read only MemAvailable, ignoring ``ulimit -v`` and cgroup
    limits (a real 400 x 512² scan passed the check and died after 53 s)."""
    code = """
import resource, sys
import h5py
import sipflow
from sipflow._resources import memory_available
from pathlib import Path
sipflow.plugins.get_registry()  # torch and the readers mapped before the limit
vsz = int(Path('/proc/self/statm').read_text().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vsz + 600 * 2**20, resource.RLIM_INFINITY))
print(memory_available() < 700 * 2**20)
with h5py.File(sys.argv[1], 'w') as f:
    f.create_dataset('/entry_1/data_1/data', shape=(400, 512, 512), dtype='int32',
                     chunks=(1, 512, 512))
try:
    sipflow.load(sys.argv[1])
except sipflow.errors.ResourceError as exc:
    print('refused:', exc)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.h5")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1].startswith("refused:") and "available (free memory, the cgroup's and " \
        "ulimit's limits)" in lines[1]


def test_memory_available_reads_the_cgroup_limit_when_there_is_one():
    from sipflow import _resources

    room = _resources._cgroup_room()
    assert room > 0
    if room < 2**60:  # in a container with a memory limit: the check must use it
        assert _resources.memory_available() <= room


@pytest.mark.parametrize("extra", [["--shape", "100000", "100000"],
                                   ["--samples", "1000000000"]])
def test_training_beyond_memory_is_refused_before_any_work(tmp_path, extra, capsys):
    """Defect 15: ``train --shape 100000 100000`` gave an internal MemoryError and
    ``--samples 1000000000`` grew without output or bound."""
    from sipflow.cli import main

    assert main(["train", str(tmp_path / "m"), *extra]) == 2
    err = capsys.readouterr().err
    assert "of memory and this process can use" in err and "internal" not in err
    assert not (tmp_path / "m").exists()


def _children(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc."""
    import os

    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_9_of_a_concurrent_batch_leaves_no_worker_behind(tmp_path):
    """Defect 1: kill -9 of ``sipflow batch --concurrency 2`` (local) orphaned its spawn
    workers, idle at ~450 MB each for ever."""
    import os
    import signal
    import time

    import yaml

    from sipflow.simulate import Simulation, write_scan

    scans = [write_scan(tmp_path / f"s{i}.h5", Simulation(shape=(128, 128), seed=i))
             for i in range(2)]
    pipe = tmp_path / "slow.yaml"
    pipe.write_text(yaml.safe_dump({"stages": [
        {"use": "prep.standard"},
        {"use": "phase.classic", "with": {"schedule": "HIO**5000", "runs": 4}}]}))
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "batch", str(pipe),
                             *map(str, scans), "-o", str(tmp_path / "out"), "--concurrency",
                             "2", "--engine", "local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = _children(proc.pid)
        assert len(workers) >= 2, "the batch did not start its workers"
        time.sleep(3)  # the workers are in their scans
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        left = [p for p in workers if _alive(p)]
        assert not left, f"processes outlived the batch: {left}"
    finally:
        for p in _children(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.parametrize(("engine", "concurrency"), [("local", "1"), ("prefect", "2")])
def test_sigterm_of_a_batch_names_the_stores_that_are_complete(tmp_path, engine,
                                                               concurrency):
    """Defect 7: SIGTERM of ``batch --engine prefect --concurrency 2`` said "no result was
    written" although some stores were complete."""
    import signal
    import time

    import yaml

    from sipflow.io import is_complete
    from sipflow.simulate import Simulation, write_scan

    quick = write_scan(tmp_path / "a_quick.h5", Simulation(shape=(32, 32)))
    slow = write_scan(tmp_path / "b_slow.h5", Simulation(shape=(128, 128)))
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"stages": [
        {"use": "prep.standard"},
        {"use": "phase.classic", "with": {"schedule": "HIO**50", "runs": 1}}]}))
    # the slow scan's size makes it slow: ~25 s, far beyond the quick one's 1-10 s (under
    # Prefect at concurrency 2 the quick scan's wall time is mostly flow-run overhead, and
    # with 20000 iterations the slow one once finished first)
    slow_pipe = tmp_path / "slow.yaml"
    slow_pipe.write_text(pipe.read_text().replace("HIO**50", "HIO**60000"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "batch", str(slow_pipe),
                             str(quick), str(slow), "-o", str(out), "--engine", engine,
                             "--concurrency", concurrency],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not is_complete(out / "a_quick.zarr"):
        time.sleep(0.5)
    assert is_complete(out / "a_quick.zarr")
    time.sleep(1)
    assert not is_complete(out / "b_slow.zarr"), "the slow scan was not slow enough"
    started = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    time.sleep(5)
    assert not [p for p in started if _alive(p)], "processes outlived the batch"
    complete = [n for n in ("a_quick", "b_slow") if is_complete(out / f"{n}.zarr")]
    assert "a_quick" in complete  # (Prefect lets a running scan finish first)
    assert f"interrupted: {len(complete)} of 2 scans have complete stores" in err, err
    assert f"({', '.join(complete)})" in err
    assert "no result was written" not in err and "--skip-existing" in err


def test_stopping_watch_with_ctrl_c_is_exit_130(tmp_path):
    """Reliability round 3: Ctrl-C of ``watch`` exited 0, as if it had ended cleanly."""
    import signal
    import time

    (tmp_path / "in").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "watch", str(tmp_path / "in"),
                             "--pipeline", "default", "-o", str(tmp_path / "out"), "--poll",
                             "0.2", "--engine", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "out").exists():
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped" in err and "Traceback" not in err


def test_a_second_serve_on_the_same_home_is_refused(tmp_path):
    """Reliability round 3: two ``serve`` on one --home started without a word."""
    import socket
    import time

    home = tmp_path / "home"
    home.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from sipflow.io import OutputLock; "
                               f"OutputLock({str(home / 'sipflow-serve')!r}).acquire(); "
                               "print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.monotonic()
        bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "serve", "--home", str(home),
                              "--port", str(port)], capture_output=True, text=True,
                             timeout=120, env=_no_api())
        assert bad.returncode == 4, bad.stderr
        assert f"another sipflow serve runs with --home {home}" in bad.stderr
        assert time.monotonic() - t0 < 60
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_a_missing_learned_model_is_refused_by_validate_and_before_a_run(engine, tmp_path,
                                                                        prefect_server):
    """Defect 20 (rest): validate accepted a phase.learned pipeline whose model file is
    missing; the run refused it only inside the flow."""
    from sipflow.simulate import Simulation, write_scan

    missing = tmp_path / "models" / "nowhere.pt"
    path = tmp_path / "learned.yaml"
    path.write_text(f"stages:\n  - use: phase.learned\n    with: {{model: {missing}}}\n")
    bad = subprocess.run([sys.executable, "-m", "sipflow.cli", "validate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "stage 1 (phase.learned)" in bad.stderr and str(missing) in bad.stderr
    scan = write_scan(tmp_path / "s.h5", Simulation(shape=(32, 32), photons=1e6, seed=1))
    out = tmp_path / "r.zarr"
    run = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", str(path), str(scan),
                          "-o", str(out), "--engine", engine], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2 and str(missing) in run.stderr, run.stderr
    assert not out.exists()
