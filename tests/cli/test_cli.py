"""The command line: every user error exits non-zero with one readable paragraph."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FAST_PIPELINE


def sipflow(*args, check=False):
    out = subprocess.run([sys.executable, "-m", "sipflow.cli", *map(str, args)],
                         capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(out.stderr)
    return out


@pytest.fixture(scope="module")
def fast_pipeline(tmp_path_factory):
    p = tmp_path_factory.mktemp("pipe") / "fast.yaml"
    p.write_text(FAST_PIPELINE)
    return p


@pytest.mark.slow
def test_simulate_run_evaluate(tmp_path, fast_pipeline):
    scan = tmp_path / "s.h5"
    out = sipflow("simulate", scan, "--shape", 64, 64, "--photons", "none", "--layout", "eiger",
                  check=True)
    assert "wrote" in out.stdout and scan.exists()
    res = tmp_path / "r.zarr"
    out = sipflow("run", fast_pipeline, scan, "-o", res, "--engine", "local", "--seed", 1,
                  check=True)
    assert "error" in out.stdout
    metrics = json.loads(sipflow("evaluate", res, "--truth", scan, "--json", check=True).stdout)
    assert metrics["error"] < 0.05
    again = json.loads(sipflow("evaluate", res, "--json", check=True).stdout)
    assert again["error"] == pytest.approx(metrics["error"])


def test_stages_and_plugins_listings():
    stages = json.loads(sipflow("stages", "--json", check=True).stdout)
    classic = next(s for s in stages if s["name"] == "phase.classic")
    runs = next(p for p in classic["params"] if p["name"] == "runs")
    assert runs["default"] == 4 and runs["doc"]
    plugins = json.loads(sipflow("plugins", "--json", check=True).stdout)
    assert any(p["name"] == "hotpixels" and p["version"] == "0.1.0" for p in plugins)
    assert "prep.standard" in sipflow("stages", check=True).stdout


@pytest.mark.parametrize("make_args, message", [
    (lambda t, p: ["run", p, t / "missing.h5", "-o", t / "o.zarr", "--engine", "local"],
     "missing.h5: no such file"),
    (lambda t, p: ["run", "nonsense", t / "missing.h5", "-o", t / "o.zarr"],
     "unknown pipeline template 'nonsense'"),
    (lambda t, p: ["run", p, p, "-o", t / "o.zarr", "--engine", "local"],
     "no reader recognises it (readers: hdf5, spec, frames)"),
    (lambda t, p: ["validate", t / "nope.yaml"], "pipeline file not found"),
    (lambda t, p: ["evaluate", t], "not a Zarr v3 store"),
    (lambda t, p: ["simulate", t / "x.h5", "--shape", 64], "--shape must be 2 or 3 sizes"),
])
@pytest.mark.slow
def test_user_errors(tmp_path, fast_pipeline, make_args, message):
    out = sipflow(*make_args(tmp_path, fast_pipeline))
    assert out.returncode == 2, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_existing_output_and_debug(tmp_path, fast_pipeline, scans):
    res = tmp_path / "r.zarr"
    res.mkdir()
    out = sipflow("run", fast_pipeline, scans["2d"], "-o", res, "--engine", "local")
    assert out.returncode == 2 and "output exists" in out.stderr
    out = sipflow("--debug", "run", fast_pipeline, scans["2d"], "-o", res, "--engine", "local")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_failed_reconstruction_exit_code(tmp_path, scans):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - use: phase.classic\n    with: {schedule: 'HIO * sup * ER', "
                   "shrinkwrap_threshold: 5}\n")
    out = sipflow("run", bad, scans["2d"], "-o", tmp_path / "o.zarr", "--engine", "local")
    assert out.returncode == 3 and "every run failed" in out.stderr
    assert not (tmp_path / "o.zarr").exists()
