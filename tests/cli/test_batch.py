"""``sipflow batch``: one store per scan, concurrency, a summary, a failing scan fails alone."""

from __future__ import annotations

import pytest
import yaml

from sipflow.cli import main
from sipflow.io import open_result
from sipflow.simulate import Simulation, write_scan

PIPELINE = {"stages": [
    {"use": "phase.classic", "with": {"schedule": "(sup * ER**5 * HIO**20)**6 * ER**30",
                                      "runs": 2}},
    {"use": "analyse.metrics"}]}


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch-in")
    good = [write_scan(d / f"scan{i}.h5", Simulation(shape=(32, 32), photons=1e8, seed=i))
            for i in range(2)]
    corrupt = d / "broken.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really HDF5" * 50)
    pipeline = d / "p.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    return pipeline, good, corrupt


def _check(out, good, capsys, code):
    captured = capsys.readouterr()
    assert code == 1, captured
    for scan in good:  # the good scans are complete, named after their inputs
        ds = open_result(out / f"{scan.stem}.zarr", verify=True)
        assert ds.attrs["metrics"]["error"] < 0.2
    assert not (out / "broken.zarr").exists()
    assert "broken.h5" in captured.err and "1 of 3 scans failed" in captured.err
    table = captured.out
    assert table.count("ok") >= 2 and "failed" in table and "free LLK" in table
    return captured


def test_batch_local_concurrent_a_corrupt_file_fails_alone(batch_inputs, tmp_path, capsys):
    pipeline, good, corrupt = batch_inputs
    out = tmp_path / "results"
    code = main(["batch", str(pipeline), str(good[0]), str(corrupt), str(good[1]), "-o",
                 str(out), "--engine", "local", "--concurrency", "2", "--seed", "1"])
    _check(out, good, capsys, code)
    # a rerun does not overwrite unasked: the scan fails with the reason, the store stays
    before = (out / f"{good[0].stem}.zarr").stat().st_mtime_ns
    assert main(["batch", str(pipeline), str(good[0]), "-o", str(out), "--seed", "1",
                 "--engine", "local"]) == 1
    assert "output exists" in capsys.readouterr().err
    assert (out / f"{good[0].stem}.zarr").stat().st_mtime_ns == before


@pytest.mark.prefect
def test_batch_through_prefect_two_scans_at_once(batch_inputs, tmp_path, capsys,
                                                 prefect_server):
    pipeline, good, corrupt = batch_inputs
    out = tmp_path / "results"
    code = main(["batch", str(pipeline), str(good[0]), str(corrupt), str(good[1]), "-o",
                 str(out), "--seed", "1", "--concurrency", "2"])  # no --engine: prefect
    _check(out, good, capsys, code)
    assert open_result(out / f"{good[0].stem}.zarr").attrs["provenance"]["engine"] == \
        "prefect"
    # 'auto' was resolved where the stages ran (this machine has no GPU), per stage
    ds = open_result(out / f"{good[0].stem}.zarr")
    assert ds.attrs["provenance"]["device"] == "cpu"
    assert {s["device"] for s in ds.attrs["provenance"]["stages"]} == {"cpu"}
    # every finished scan emitted its event, with the result path and figures of merit
    import time

    from sipflow.orchestration import EVENT_COMPLETED, scan_events
    from sipflow.orchestration._server import drain_prefect

    drain_prefect()
    wanted = {str(out / f"{g.stem}.zarr") for g in good}
    deadline = time.monotonic() + 30
    while True:
        done = {e["payload"]["output"]: e for e in scan_events()
                if e["payload"].get("output") in wanted | {str(out / "broken.zarr")}}
        if len(done) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    completed = [e for e in done.values() if e["event"] == EVENT_COMPLETED]
    assert {e["payload"]["output"] for e in completed} == wanted
    assert all(e["payload"]["metrics"]["error"] < 0.2 for e in completed)
    assert all(e["resource"]["prefect.resource.id"].startswith("sipflow.scan.")
               for e in completed)


@pytest.mark.prefect
def test_batch_on_a_local_dask_cluster_equals_the_sequential_run(batch_inputs, tmp_path,
                                                                 capsys, prefect_server):
    pipeline, good, corrupt = batch_inputs
    seq, dask = tmp_path / "sequential", tmp_path / "dask"
    assert main(["batch", str(pipeline), *map(str, good), "-o", str(seq), "--engine",
                 "local", "--seed", "4"]) == 0
    code = main(["batch", str(pipeline), str(good[0]), str(corrupt), str(good[1]), "-o",
                 str(dask), "--engine", "dask", "--concurrency", "2", "--seed", "4"])
    _check(dask, good, capsys, code)
    for scan in good:  # the same seeds give the same result, bit for bit
        a = open_result(seq / f"{scan.stem}.zarr", load=True)
        b = open_result(dask / f"{scan.stem}.zarr", load=True)
        assert (a["obj"].values == b["obj"].values).all()
        assert b.attrs["provenance"]["engine"] == "prefect"


def test_batch_refuses_bad_requests_before_any_work(batch_inputs, tmp_path, capsys):
    pipeline, good, _ = batch_inputs
    twin = tmp_path / "other" / good[0].name
    twin.parent.mkdir()
    twin.write_bytes(good[0].read_bytes())
    out = tmp_path / "r"
    assert main(["batch", str(pipeline), str(good[0]), str(twin), "-o", str(out)]) != 0
    assert "same name" in capsys.readouterr().err and not out.exists()
    assert main(["batch", str(pipeline), str(good[0]), "-o", str(out),
                 "--concurrency", "0"]) != 0
    assert "--concurrency" in capsys.readouterr().err
    assert main(["batch", str(pipeline), str(good[0]), "-o", str(out),
                 "--dask-address", "tcp://127.0.0.1:8786"]) != 0
    assert "--engine dask" in capsys.readouterr().err
    assert main(["batch", "no-such-template", str(good[0]), "-o", str(out)]) != 0
    assert not out.exists()


@pytest.mark.prefect
@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_batch_onto_a_full_disk_fails_clearly_and_leaves_the_input(engine, batch_inputs,
                                                                  tmp_path, capsys,
                                                                  prefect_server):
    import hashlib
    import subprocess

    from sipflow.io import is_complete

    pipeline = batch_inputs[0]
    big = write_scan(tmp_path / "big.h5", Simulation(shape=(128, 128), photons=1e8, seed=2))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        assert main(["batch", str(pipeline), str(big), "-o", str(small / "out"), "--engine",
                     engine, "--seed", "1"]) == 1
        captured = capsys.readouterr()
        assert "no space left" in captured.out.replace("\n", " ").replace("│", " ") or \
            "no space left" in captured.err, captured
        assert not is_complete(small / "out" / "big.zarr")
        assert not (small / "out" / "big.zarr").exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert hashlib.sha256(big.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("engine", ["local", "prefect"])
def test_an_interrupted_batch_resumes_with_skip_existing(engine, batch_inputs, tmp_path,
                                                          capsys):
    """Reliability round 3, defect 19: rerunning an interrupted batch reported every
    finished scan "failed: output exists" and exited 1."""
    pipeline, good, _ = batch_inputs
    out = tmp_path / "out"
    assert main(["batch", str(pipeline), str(good[0]), "-o", str(out), "--engine", engine,
                 "--seed", "1"]) == 0
    first = (out / "scan0.zarr" / "zarr.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["batch", str(pipeline), *map(str, good), "-o", str(out), "--engine", engine,
                 "--seed", "1", "--skip-existing", "--concurrency", "2"]) == 0
    captured = capsys.readouterr()
    assert "1 scans already have complete stores (skipped)" in captured.err
    assert "skipped" in captured.out and (out / "scan1.zarr" / "zarr.json").is_file()
    assert (out / "scan0.zarr" / "zarr.json").stat().st_mtime_ns == first  # untouched
    assert main(["batch", str(pipeline), *map(str, good), "-o", str(out), "--engine", engine,
                 "--skip-existing", "--overwrite"]) == 2
