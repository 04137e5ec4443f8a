"""Shared fixtures. Prefect runs embedded (ephemeral) with a private PREFECT_HOME."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Must be set before Prefect is imported anywhere in this process.
_PREFECT_HOME = tempfile.mkdtemp(prefix="sipflow-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
# napari's vispy canvas needs GLX on a real (virtual) X display; "offscreen" cannot render.
# pytest-xvfb starts the display when Xvfb is installed (`make test` installs it as root).
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
REAL_SCAN = REAL_DIR / "aps34idc_au_bcdi_scan54" / "aps34idc_staff20-1a_S0054.h5"
REAL_SHA256 = "9faefd99c55e2a19330f8ef295ba03f8ad529c5e2709d6852a0ab55cb5f0ce63"

#: A short pipeline that still recovers the noiseless 64x64 test objects (error < 0.05).
FAST_PIPELINE = """\
stages:
  - use: prep.standard
  - use: phase.classic
    with: {schedule: "(sup * ER**5 * HIO**40)**12 * ER**100", runs: 4}
  - use: analyse.metrics
"""


#: what in a test's source (or its parameters) marks it ``prefect`` / ``subprocess``, so that
#: ``make test-fast`` (``-m "not slow and not prefect and not subprocess"``) leaves it out
_PREFECT_WORDS = ("prefect", "orchestration", "deployment", '"serve"')
_SUBPROCESS_WORDS = ("subprocess", "Popen", "sys.executable", "ProcessPool", "multiprocessing",
                     '"batch"', '"watch"', "os.fork", "dask")


def _runs_the_cli_default_engine(src: str) -> bool:
    """``main(["run", ...])`` without ``--engine local`` runs under Prefect (the default)."""
    return '"run"' in src and '"local"' not in src


def pytest_collection_modifyitems(config, items):
    import inspect

    for item in items:
        try:
            src = inspect.getsource(item.function)
        except (OSError, TypeError):
            src = ""
        params = str(getattr(getattr(item, "callspec", None), "params", ""))
        uses = set(getattr(item, "fixturenames", ()))
        if ("prefect_server" in uses or "facility" in uses or "prefect" in params
                or any(w in src for w in _PREFECT_WORDS) or _runs_the_cli_default_engine(src)):
            item.add_marker(pytest.mark.prefect)
        if any(w in src for w in _SUBPROCESS_WORDS) or "dask" in params:
            item.add_marker(pytest.mark.subprocess)


@pytest.fixture(scope="session")
def prefect_server():
    """One private Prefect API server for the whole session (sipflow's embedded server).

    Sets ``PREFECT_API_URL`` for this process and the CLI subprocesses it starts, so
    none of them starts a server of its own. The server dies with the session.
    """
    from sipflow.orchestration import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture(scope="session")
def real_scan() -> Path:
    """The measured APS 34-ID-C gold-crystal scan (skipped when ../shared is absent)."""
    if not REAL_SCAN.is_file():
        pytest.skip(f"real data not found at {REAL_SCAN} (../shared/data/real is not checked "
                    "out beside the project)")
    return REAL_SCAN


@pytest.fixture(scope="session")
def scans(tmp_path_factory) -> dict[str, Path]:
    """Simulated scans written once per session, in each layout."""
    from sipflow.simulate import Simulation, write_scan

    d = tmp_path_factory.mktemp("scans")
    return {
        "2d": write_scan(d / "blob2d.h5", Simulation(shape=(64, 64), photons=None, seed=1)),
        "2d_noisy": write_scan(d / "blob2d_noisy.h5",
                               Simulation(shape=(64, 64), photons=1e8, beamstop=1.5, gaps=2,
                                          seed=2), layout="nexus"),
        "3d": write_scan(d / "crystal3d.h5", Simulation(shape=(32, 32, 32), kind="crystal",
                                                        photons=None, seed=3)),
        "eiger3d": write_scan(d / "eiger3d.h5", Simulation(shape=(40, 48, 48), kind="crystal",
                                                           photons=1e9, seed=4),
                              layout="eiger", frames_per_file=16),
    }


# --- the viewer tests ------------------------------------------------------------------------
#: short, but the 64 × 64 noisy test scan is solved with it (error < 0.1, both seeds below)
VIEWER_PIPELINE = {
    "name": "viewer-test",
    "stages": [
        {"use": "prep.standard"},
        {"use": "phase.classic",
         "with": {"schedule": "(sup * ER**5 * HIO**40)**8 * ER**50", "runs": 2}},
        {"use": "analyse.metrics"},
    ],
}


@pytest.fixture(scope="session")
def viewer_pipeline() -> dict:
    """The short pipeline of the viewer tests (a dict, as YAML would give)."""
    return VIEWER_PIPELINE


@pytest.fixture(scope="session")
def viewer_scan(tmp_path_factory) -> Path:
    """A 64 × 64 noisy scan with a beamstop and a gap (CXI layout)."""
    from sipflow.simulate import Simulation, write_scan

    d = tmp_path_factory.mktemp("viewer-scan")
    return write_scan(d / "blob.h5", Simulation(shape=(64, 64), photons=1e8, beamstop=1.5,
                                                gaps=1, seed=5))


@pytest.fixture(scope="session")
def result_stores(viewer_scan, tmp_path_factory) -> list[Path]:
    """Two finished result stores of `viewer_scan` (seeds 1 and 2)."""
    from sipflow import run_pipeline, save

    d = tmp_path_factory.mktemp("viewer-results")
    stores = []
    for seed in (1, 2):
        ds = run_pipeline(VIEWER_PIPELINE, viewer_scan, device="cpu", seed=seed)
        stores.append(save(ds, d / f"blob_seed{seed}.zarr"))
    return stores


def write_slowly(source, target, pieces=5, pause=0.4):
    """Copy `source` to `target` in `pieces`, `pause` seconds apart (a detector still writing)."""
    import time

    data = source.read_bytes()
    step = len(data) // pieces + 1
    with open(target, "wb") as fh:
        for k in range(0, len(data), step):
            fh.write(data[k:k + step])
            fh.flush()
            time.sleep(pause)


@pytest.fixture(scope="session")
def real_spec_tree(real_scan, tmp_path_factory) -> Path:
    """The measured gold scan as the beamline wrote it: ``example.spec`` (the real file
    and scan headers, the scan's 25 columns), ``AD34idcTIM2_example/Staff20-1a_S0054/``
    with 201 TIFF frames, and full-detector (512 x 512) ``dark.tif``/``whitefield.tif``
    holding the HDF5 copy's region rows/cols 0-255. Returns the SPEC file."""
    import fabio.tifimage
    import h5py
    import numpy as np

    from sipflow.testing import write_spec_scan

    root = tmp_path_factory.mktemp("spec-tree")
    with h5py.File(real_scan, "r") as f:
        det = f["/entry_1/instrument_1/detector_1"]
        frames, dark, white = det["data"][()], det["darkfield"][()], det["whitefield"][()]
        file_header = f["/entry_1/spec_file_header"][()].decode()
        scan_header = f["/entry_1/spec_scan_header"][()].decode().splitlines()
        labels = scan_header[-1].split(" ", 1)[1].strip().split("  ")
        columns = {k: f[f"/entry_1/measurement/{k.replace(' ', '_')}"][()] for k in labels}
    order = [n for line in file_header.splitlines() if line.startswith("#O")
             for n in line.split(" ", 1)[1].strip().split("  ")]
    values = [float(v) for line in scan_header if line.startswith("#P")
              for v in line.split()[1:]]
    motors = dict(zip(order, values, strict=False))
    spec = root / "example.spec"
    spec.write_text(file_header.rstrip("\n") + "\n\n#S 53  ascan  th 0 1  2 0.25\n#N 1\n"
                    "#L Theta\n0\n0.5\n1\n\n")
    command = scan_header[0].split(None, 2)[2]
    extra = [line for line in scan_header[1:] if not line.startswith(("#P", "#N", "#L"))]
    write_spec_scan(spec, 54, frames, command=command, motors=motors, columns=columns,
                    header_lines=extra, frame_folder=root / "AD34idcTIM2_example",
                    frame_stem="Staff20-1a")
    full_dark = np.zeros((512, 512), dark.dtype)
    full_dark[:256, :256] = dark
    full_white = np.ones((512, 512), white.dtype)
    full_white[:256, :256] = white
    fabio.tifimage.TifImage(data=full_dark).write(str(root / "dark.tif"))
    fabio.tifimage.TifImage(data=full_white).write(str(root / "whitefield.tif"))
    return spec
