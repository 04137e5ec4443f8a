"""Documentation contracts (hooks, stage parameters) and the human-facing report."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sipflow import hookspecs
from sipflow.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]


def test_every_hook_is_documented():
    hooks = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("sipflow_")]
    assert {h.__name__ for h in hooks} == {"sipflow_stages", "sipflow_readers",
                                           "sipflow_pipeline_templates", "sipflow_constraints",
                                           "sipflow_symmetry_groups", "sipflow_beamlines"}
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert "When it is called" in doc and "Returns" in doc, hook.__name__


def test_every_stage_has_a_summary_and_documented_parameters():
    for name, stage in get_registry().stages.items():
        assert stage.summary(), f"{name} has no docstring summary"
        for pname, field in stage.Params.model_fields.items():
            assert field.description and len(field.description) > 10, (name, pname)


def test_quicklook_png(tmp_path):
    import sipflow
    from sipflow.report import quicklook, summary_rows
    from sipflow.testing import simulated_dataset

    out = sipflow.run_pipeline({"stages": ["prep.standard", {
        "use": "phase.classic", "with": {"schedule": "(sup * HIO**20)**3 * ER**20", "runs": 2}},
        "analyse.metrics"]}, simulated_dataset((32, 32, 32), photons=1e8), seed=0)
    png = quicklook(out, tmp_path / "q.png", title="test")
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 800
    assert np.std(img[..., :3]) > 0.05, "the figure is not blank"
    rows = dict(summary_rows(out))
    assert "plan" in rows and "rfactor" in rows and "time phase.classic" in rows
    pc = out.attrs["phase_classic"]
    assert rows["success rate"].startswith(f"{pc['success_rate']:.0%} of ")
    best = pc["support_fraction"][pc["best_run"]]
    assert rows["support (best run)"].startswith(f"{best:.2%} of the array")


def test_summary_warns_about_a_support_too_large_for_the_sampling():
    from sipflow.report import summary_rows

    pc = {"plan": "ER", "run_status": ["ok", "ok"], "best_run": 0, "run_attempts": [1, 2],
          "runs_accepted": 2, "success_rate": 2 / 3, "final_llk_free": [1.1, 1.2],
          "support_fraction": [0.3, 0.28]}
    rows = dict(summary_rows(xr.Dataset(attrs={"phase_classic": pc})))
    assert rows["success rate"] == "67% of 3 random starts (1 restart)"
    assert "oversampling below 2" in rows["support warning"]
    pc["support_fraction"] = [0.02, 0.05]
    rows = dict(summary_rows(xr.Dataset(attrs={"phase_classic": pc})))
    assert "disagree on the support size" in rows["support warning"]


@pytest.mark.realdata
@pytest.mark.slow
def test_gold_crystal_example_runs(real_scan, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "reconstruct_gold_crystal.py"),
                          "--data", str(real_scan), "--out", str(tmp_path / "gold.zarr")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "gold.png").stat().st_size > 20_000
    assert "support_size_px" in out.stdout
