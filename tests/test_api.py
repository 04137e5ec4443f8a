"""The public in-process API and what a result carries."""

from __future__ import annotations

import numpy as np
import xarray as xr

import sipflow

FAST = {"stages": ["prep.standard",
                   {"use": "phase.classic",
                    "with": {"schedule": "(sup * ER**5 * HIO**40)**6 * ER**50", "runs": 3}},
                   "analyse.metrics"]}


def test_run_pipeline_from_a_file_and_save(scans, tmp_path):
    ds = sipflow.run_pipeline(FAST, scans["2d"], seed=11)
    for name in ("obj", "support", "obj_runs", "support_runs", "intensity", "mask", "llk"):
        assert name in ds, name
    assert "run" not in ds["obj"].dims and ds["obj_runs"].sizes["run"] == 3
    prov = ds.attrs["provenance"]
    assert prov["seed"] == 11 and prov["device"] == "cpu" and prov["engine"] == "local"
    assert prov["input"]["path"] == str(scans["2d"])
    assert len(prov["input"]["sha256"]) == 64
    assert [s["use"] for s in prov["stages"]] == ["prep.standard", "phase.classic",
                                                   "analyse.metrics"]
    assert prov["stages"][1]["with"]["runs"] == 3 and prov["stages"][1]["version"]
    assert "phase.classic" in prov["pipeline"]["text"]
    assert prov["torch_version"] and prov["sipflow_version"] == sipflow.__version__
    assert ds.attrs["metrics"]["error"] < 0.05

    path = sipflow.save(ds, tmp_path / "r.zarr")
    back = sipflow.open_result(path)
    assert back.attrs["provenance"]["stages"][1]["with"]["schedule"] == (
        "(sup * ER**5 * HIO**40)**6 * ER**50")
    np.testing.assert_array_equal(back["obj"].values, ds["obj"].values)


def test_seed_is_drawn_and_recorded_and_reproduces():
    from sipflow.testing import simulated_dataset

    ds = simulated_dataset((32, 32), photons=1e7)
    a = sipflow.run_pipeline(FAST, ds)
    b = sipflow.run_pipeline(FAST, ds, seed=a.attrs["provenance"]["seed"])
    np.testing.assert_array_equal(a["obj"].values, b["obj"].values)


def test_analysis_on_a_dataset_built_by_hand():
    from sipflow.simulate import make_object

    obj = make_object((32, 32), "ellipse").astype(np.complex64)
    ds = xr.Dataset({"obj": (("y", "x"), obj), "obj_true": (("y", "x"), obj * 1j)})
    out = sipflow.run_pipeline({"stages": ["analyse.metrics"]}, ds, seed=0)
    assert out.attrs["metrics"]["error"] < 1e-6


def test_run_into_store_locks_the_output_and_writes_nothing_when_cancelled(tmp_path):
    """The one in-process way to a store (CLI local engine, batch, watch, napari Run)."""
    import subprocess
    import sys

    import pytest

    from sipflow._api import run_into_store
    from sipflow.errors import Cancelled, OutputError
    from sipflow.testing import simulated_dataset

    ds = simulated_dataset((32, 32), photons=1e8)
    pipe = "stages: [{use: phase.classic, with: {schedule: 'ER**5', runs: 1}}]"
    out = tmp_path / "r.zarr"
    with pytest.raises(Cancelled):
        run_into_store(pipe, ds, out, cancelled=lambda: True, device="cpu", seed=1)
    assert not out.exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sipflow.io import OutputLock; "
         f"OutputLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match="another sipflow process"):
            run_into_store(pipe, ds, out, device="cpu", seed=1)
    finally:
        holder.kill()
        holder.wait()
    assert run_into_store(pipe, ds, out, device="cpu", seed=1) == out and out.is_dir()
