"""A plugin's phase stage shows up in ``sipflow evaluate``, ``sipflow batch`` and the viewer.

The example plugin's ``phase.shrinkwrap_hio`` writes its runs through
:class:`sipflow.runset.RunSet` (the :class:`~sipflow.contracts.PhaseRecord`); no sipflow
module names it, yet every place that shows a result's runs shows its runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import sipflow
from sipflow.cli import main
from sipflow.io import open_result
from sipflow.simulate import Simulation, write_scan
from sipflow.viewer import _results

STAGE = "phase.shrinkwrap_hio"
PIPELINE = {"stages": [{"use": STAGE, "with": {"positivity": True, "runs": 3}},
                       {"use": "analyse.metrics", "with": {"unmeasured_modes": 0}}]}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin-phase")
    paths = [write_scan(d / f"scan{i}.h5", Simulation(shape=(64, 64), photons=1e8, seed=i,
                                                      phase_amplitude=0.0))
             for i in range(2)]
    pipeline = d / "plugin.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    return pipeline, paths


def test_no_sipflow_module_names_the_plugin_stage():
    src = Path(sipflow.__file__).parent
    assert not [p for p in src.rglob("*.py") if "shrinkwrap_hio" in p.read_text()]


@pytest.mark.parametrize("engine", ["local", pytest.param("prefect", marks=pytest.mark.prefect)])
def test_evaluate_and_the_viewer_show_the_plugin_stage(scans, tmp_path, capsys, engine):
    pipeline, paths = scans
    out = tmp_path / "r.zarr"
    assert main(["run", str(pipeline), str(paths[0]), "-o", str(out), "--engine", engine,
                 "--seed", "3"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"{STAGE} runs ok" in table and "3/3" in table and f"{STAGE} free LLK" in table
    ds = open_result(out, load=True)
    record = ds.attrs["phase"]
    assert record["stage"] == STAGE and ds.attrs["metrics"]["error"] < 0.01  # measured 0.002
    shown = _results.describe(ds, "r")  # what the napari Result widget shows
    headers, rows = shown["runs"]
    assert headers[:5] == ["run", "rank", "status", "final LLK", "final free LLK"]
    assert rows[0][0] == str(record["best_run"]) and len(rows) == 3
    assert rows[0][4] == format(record["final_llk_free"][record["best_run"]], ".4g")
    metrics = dict(shown["metrics"])
    assert metrics[f"{STAGE} runs ok"].startswith("3/3")
    assert {c.variable for c in shown["curves"]} == {"llk", "llk_free"}


def test_batch_table_shows_the_plugin_stage_free_llk(scans, tmp_path, capsys):
    pipeline, paths = scans
    out = tmp_path / "batch"
    assert main(["batch", str(pipeline), *map(str, paths), "-o", str(out), "--seed", "1",
                 "--engine", "local"]) == 0
    table = capsys.readouterr().out
    for path in paths:
        ds = open_result(out / f"{path.stem}.zarr")
        free = ds.attrs["phase"]["final_llk_free"][ds.attrs["phase"]["best_run"]]
        assert np.isfinite(free) and f"{free:.4g}" in table  # the free LLK column
