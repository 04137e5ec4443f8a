"""``sipflow watch``: every finished scan once, a slow writer waited for, restarts, failures."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from conftest import write_slowly

from sipflow import _watch
from sipflow.cli import main
from sipflow.cli._facility import _batch_one
from sipflow.io import open_result
from sipflow.simulate import Simulation, write_scan

PIPELINE = {"stages": [
    {"use": "phase.classic", "with": {"schedule": "(sup * ER**5 * HIO**20)**6 * ER**30",
                                      "runs": 2}},
    {"use": "analyse.metrics"}]}


@pytest.fixture
def setup(tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "results"
    incoming.mkdir()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    staging = tmp_path / "staging"
    staging.mkdir()
    scans = [write_scan(staging / f"scan{i}.h5", Simulation(shape=(32, 32), photons=1e8,
                                                             seed=i)) for i in range(2)]
    return incoming, out, pipeline, scans


def test_watch_processes_each_finished_scan_once_and_survives_a_restart(setup, capsys):
    incoming, out, pipeline, scans = setup
    (incoming / scans[0].name).write_bytes(scans[0].read_bytes())
    writer = threading.Thread(target=write_slowly, args=(scans[1], incoming / scans[1].name))
    writer.start()
    out.mkdir()
    calls = []

    def process(path, key):
        calls.append(path.name)
        return _batch_one(str(pipeline), str(path), str(out / f"{path.stem}.zarr"), "local",
                          "cpu", 1, False, "float32")

    deadline = time.monotonic() + 120
    rows = _watch.watch(incoming, process, out / _watch.STATE_FILE, poll_s=0.2, stable_s=1.0,
                        stop=lambda: len(calls) >= 2 or time.monotonic() > deadline)
    writer.join()
    assert sorted(calls) == ["scan0.h5", "scan1.h5"], calls  # each once
    assert all(r["status"] == "ok" for r in rows), rows
    for scan in scans:  # the slowly written one was read complete
        assert open_result(out / f"{scan.stem}.zarr", verify=True).attrs["metrics"][
            "error"] < 0.2
    state = json.loads((out / _watch.STATE_FILE).read_text())["files"]
    assert {k: v["status"] for k, v in state.items()} == {"scan0.h5": "done",
                                                         "scan1.h5": "done"}
    # a restarted watcher (the CLI, --once) reprocesses nothing
    assert main(["watch", str(incoming), "--pipeline", str(pipeline), "-o", str(out),
                 "--once", "--stable", "0.2", "--poll", "0.1", "--engine", "local"]) == 0
    captured = capsys.readouterr()
    assert "processing" not in captured.err and "done" in captured.out


def test_a_corrupt_file_is_reported_and_given_up_not_retried_forever(setup, capsys):
    incoming, out, pipeline, scans = setup
    (incoming / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    (incoming / scans[0].name).write_bytes(scans[0].read_bytes())
    args = ["watch", str(incoming), "--pipeline", str(pipeline), "-o", str(out), "--once",
            "--stable", "0.3", "--poll", "0.1", "--max-attempts", "2", "--seed", "1",
            "--retry-after", "0", "--engine", "local"]
    assert main(args) == 1  # attempt 1 of the corrupt file failed
    err = capsys.readouterr().err
    assert "broken.h5: failed" in err and "scan0.h5: ok" in err
    assert main(args) == 1  # attempt 2, then given up
    capsys.readouterr()
    assert main(args) == 0  # nothing left to try
    captured = capsys.readouterr()
    assert "processing" not in captured.err and "failed" in captured.out
    state = json.loads((out / _watch.STATE_FILE).read_text())["files"]
    assert state["broken.h5"]["attempts"] == 2 and state["scan0.h5"]["attempts"] == 1


def test_a_scan_running_when_the_watcher_died_is_processed_again(setup):
    incoming, out, _pipeline, scans = setup
    out.mkdir()
    (incoming / scans[0].name).write_bytes(scans[0].read_bytes())
    (out / _watch.STATE_FILE).write_text(json.dumps(
        {"files": {"scan0.h5": {"status": "running", "attempts": 1}}}))
    done = []
    _watch.watch(incoming,
                 lambda p, key: done.append(p.name) or {"status": "ok", "output": "x"},
                 out / _watch.STATE_FILE, poll_s=0.1, stable_s=0.2, once=True)
    assert done == ["scan0.h5"]


@pytest.mark.prefect
def test_watch_through_prefect_by_default_on_the_server_of_prefect_api_url(setup, capsys,
                                                                          prefect_server):
    from sipflow.orchestration import wait_for_run

    incoming, out, pipeline, scans = setup
    (incoming / scans[1].name).write_bytes(scans[1].read_bytes())
    args = ["watch", str(incoming), "--pipeline", str(pipeline), "-o", str(out), "--once",
            "--stable", "0.3", "--poll", "0.1", "--seed", "2"]  # no --engine: prefect
    assert main(args) == 0
    assert "scan1.h5: ok" in capsys.readouterr().err
    prov = open_result(out / "scan1.zarr", verify=True).attrs["provenance"]
    assert prov["engine"] == "prefect"
    # the run is on that server
    assert wait_for_run(prov["prefect_flow_run_id"], timeout=10).is_completed()
    assert main(args) == 0 and "processing" not in capsys.readouterr().err
