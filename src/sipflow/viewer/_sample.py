"""Sample data: a small simulated scan and its reconstruction, made on the fly (~2 s)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import xarray as xr

from ._layers import LayerTuple, result_layers, scan_layers

#: the simulation behind the samples: 64 × 64 pattern of a phase object, 1e8 photons,
#: a beamstop hiding the centre and one detector gap
SAMPLE = {"shape": (64, 64), "kind": "blob", "photons": 1e8, "beamstop": 1.5, "gaps": 1,
          "seed": 7}


def _scan() -> xr.Dataset:
    from ..io import load
    from ..simulate import Simulation, write_scan

    with tempfile.TemporaryDirectory(prefix="sipflow-sample-") as tmp:
        path = write_scan(Path(tmp) / "simulated.h5", Simulation(**SAMPLE))
        return load(path).load()


def sample_scan() -> list[LayerTuple]:
    """The simulated scan: log intensity and mask."""
    return scan_layers(_scan(), "simulated", "sample data")


def sample_result() -> list[LayerTuple]:
    """The simulated scan reconstructed with the default template (2 runs, seed 1)."""
    import yaml

    from .._api import run_pipeline
    from ..plugins import get_registry

    spec = yaml.safe_load(get_registry().templates["default"].read_text())
    for stage in spec["stages"]:
        if stage.get("use") == "phase.classic":
            stage.setdefault("with", {})["runs"] = 2
    ds = run_pipeline(spec, _scan(), device="cpu", seed=1)
    return result_layers(ds, name="simulated", source="sample data")
