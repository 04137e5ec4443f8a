"""Prefect flows: embedded (ephemeral) mode in-process, the CLI, and a real local server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FAST_PIPELINE

import sipflow
from sipflow.errors import InputError, ReconstructionError

pytestmark = [pytest.mark.prefect]



@pytest.fixture(scope="module")
def flows(prefect_server):
    from sipflow.orchestration import process_scan, process_scans

    return process_scan, process_scans


def test_process_scan_2d_and_3d(flows, scans, tmp_path):
    process_scan, _ = flows
    res = process_scan(str(scans["2d"]), FAST_PIPELINE, str(tmp_path / "r2.zarr"), seed=3)
    assert res["metrics"]["error"] < 0.05, "a noiseless 2-D object comes back"
    ds = sipflow.open_result(res["output"])
    prov = ds.attrs["provenance"]
    assert prov["engine"] == "prefect" and prov["prefect_flow_run_id"]
    assert [s["use"] for s in prov["stages"]] == ["prep.standard", "phase.classic",
                                                   "analyse.metrics"]
    assert not Path(str(tmp_path / "r2.zarr") + ".sipflow-work").exists(), "work dir removed"

    res3 = process_scan(str(scans["3d"]), FAST_PIPELINE, str(tmp_path / "r3.zarr"), seed=3)
    assert sipflow.open_result(res3["output"])["obj"].dims == ("z", "y", "x")
    assert res3["metrics"]["error"] < 0.1


def test_same_result_as_local_engine(flows, scans, tmp_path):
    process_scan, _ = flows
    res = process_scan(str(scans["2d_noisy"]), FAST_PIPELINE, str(tmp_path / "p.zarr"), seed=5)
    local = sipflow.run_pipeline(FAST_PIPELINE, scans["2d_noisy"], seed=5)
    prefect = sipflow.open_result(res["output"], load=True)
    assert (prefect["obj"].values == local["obj"].values).all()


def test_failed_run_resumes_from_intermediate_results(flows, scans, tmp_path):
    process_scan, _ = flows
    out = tmp_path / "resume.zarr"
    bad = FAST_PIPELINE.replace("runs: 4", "runs: 2, shrinkwrap_threshold: 5")
    with pytest.raises(ReconstructionError, match="every run failed"):
        process_scan(str(scans["2d"]), bad, str(out), seed=1)
    assert not out.exists(), "no result that looks complete"
    work = Path(str(out) + ".sipflow-work")
    assert sorted(p.name.split("-")[0] for p in work.glob("*.zarr")) == ["00", "01"]
    res = process_scan(str(scans["2d"]), FAST_PIPELINE, str(out), seed=1)
    reused = [s["reused"] for s in sipflow.open_result(res["output"]).attrs["provenance"]
              ["stages"]]
    assert reused == [True, False, False], "prep.standard was not recomputed"


def test_many_scans_isolates_failures(flows, scans, tmp_path):
    _, process_scans = flows
    bad = tmp_path / "broken.h5"
    bad.write_text("not hdf5")
    with pytest.raises(Exception, match=r"1 of 2 scans failed: .*broken\.h5.*not an HDF5"):
        process_scans([str(scans["2d"]), str(bad)], FAST_PIPELINE, str(tmp_path), seed=0)
    assert sipflow.open_result(tmp_path / "blob2d.zarr")["obj"].shape == (64, 64)
    assert not (tmp_path / "broken.zarr").exists()


def test_bad_input_error_passes_through_the_flow(flows, tmp_path):
    process_scan, _ = flows
    with pytest.raises(InputError, match="no such file"):
        process_scan(str(tmp_path / "missing.h5"), FAST_PIPELINE, str(tmp_path / "o.zarr"))


def _env(**extra):
    return os.environ | {"PREFECT_LOGGING_LEVEL": "WARNING"} | extra


def test_cli_runs_through_prefect_by_default(scans, tmp_path, prefect_server):
    out = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default", scans["2d"],
                          "-o", tmp_path / "cli.zarr", "--seed", "2"],
                         capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    prov = sipflow.open_result(tmp_path / "cli.zarr").attrs["provenance"]
    assert prov["engine"] == "prefect"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_against_a_real_prefect_server(scans, tmp_path):
    port = _free_port()
    home = tmp_path / "server-home"
    env = _env(PREFECT_HOME=str(home))
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "prefect server did not start"
            time.sleep(0.5)
        out = subprocess.run([sys.executable, "-m", "sipflow.cli", "run", "default",
                              scans["2d"], "-o", tmp_path / "srv.zarr", "--seed", "2"],
                             capture_output=True, text=True, env=env | {"PREFECT_API_URL": api})
        assert out.returncode == 0, out.stderr
        prov = sipflow.open_result(tmp_path / "srv.zarr").attrs["provenance"]
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.loads(r.read())
        ours = [fr for fr in runs if fr["id"] == prov["prefect_flow_run_id"]]
        assert ours and ours[0]["state_type"] == "COMPLETED"
        assert ours[0]["name"] == "sipflow-blob2d"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_classic_then_double_dip_through_the_flow(flows, scans, tmp_path):
    process_scan, _ = flows
    pipeline = """\
name: classic-dip
stages:
  - use: prep.standard
  - use: phase.classic
    with: {schedule: "(sup * ER**5 * HIO**40)**6 * ER**50", runs: 2}
  - use: phase.double_dip
    with: {iterations: 60, window: 20, warm_iterations: 150}
  - use: analyse.metrics
"""
    res = process_scan(str(scans["2d"]), pipeline, str(tmp_path / "dd.zarr"), seed=2)
    ds = sipflow.open_result(res["output"])
    assert [s["use"] for s in ds.attrs["provenance"]["stages"]][-2] == "phase.double_dip"
    assert ds.attrs["phase_double_dip"]["init"] == "previous"
    assert ds["loss"].dims == ("run", "iter") and ds["obj"].dtype.kind == "c"
    assert res["metrics"]["error"] < 0.1, "warm-started from a solved classical run"
