"""Reading a rocking scan as beamlines write it: HDF5, SPEC + TIFF, EDF and CBF folders.

The measured APS 34-ID-C gold scan (201 frames of 256 x 256 int32; ../shared/data/real) is
written here as a SPEC + TIFF tree (as the beamline wrote it), as EDF and CBF folders,
and read back with ``sipflow.load`` into memory (every frame decoded and checked), against
the floor: the same bytes read with h5py in one call, and fabio frame by frame with no
sipflow around it. Prints one table; nothing is asserted.

    python benchmarks/bench_io.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import fabio
import fabio.cbfimage
import fabio.edfimage
import fabio.tifimage
import h5py
import numpy as np

import sipflow
from sipflow.testing import write_spec_scan

REAL = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
        / "aps34idc_au_bcdi_scan54" / "aps34idc_staff20-1a_S0054.h5")


def _best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not REAL.is_file():
        raise SystemExit(f"{REAL}: the shared gold scan is not here")
    with h5py.File(REAL, "r") as f:
        frames = f["/entry_1/instrument_1/detector_1/data"][()]
    root = Path(tempfile.mkdtemp(prefix="sipflow-bench-io-"))
    spec = root / "example.spec"
    write_spec_scan(spec, 54, frames, command="ascan  theta -0.28 0.72  200 0.25",
                    motors={"Theta": 0.0, "Delta": 32.174, "Gamma": 12.6346,
                            "Energy": 9.0, "camdist": 500.0},
                    columns={"Theta": np.linspace(-0.28, 0.72, len(frames))},
                    frame_stem="Staff20-1a")
    for suffix, kind in ((".edf", fabio.edfimage.EdfImage), (".cbf", fabio.cbfimage.CbfImage)):
        folder = root / suffix[1:]
        folder.mkdir()
        for k, frame in enumerate(frames):
            kind(data=frame).write(str(folder / f"f_{k:05d}{suffix}"))
    tif_dir = root / "Staff20-1a_S0054"
    mb = frames.nbytes / 2**20

    def h5py_floor():
        with h5py.File(REAL, "r") as f:
            return f["/entry_1/instrument_1/detector_1/data"][()]

    def fabio_floor():
        return np.stack([fabio.open(str(p)).data for p in sorted(tif_dir.iterdir())])

    rows = [("h5py, one call (floor)", h5py_floor),
            ("fabio TIFF loop (floor)", fabio_floor),
            ("sipflow.load HDF5", lambda: sipflow.load(REAL)["intensity"].values),
            ("sipflow.load SPEC + TIFF", lambda: sipflow.load(spec, scan=54, dark=False,
                                                               flat=False)["intensity"].values),
            ("sipflow.load EDF folder", lambda: sipflow.load(root / "edf")["intensity"].values),
            ("sipflow.load CBF folder", lambda: sipflow.load(root / "cbf")["intensity"].values)]
    print(f"{len(frames)} frames of {frames.shape[1]} x {frames.shape[2]} int32 "
          f"({mb:.1f} MiB), best of {args.repeat}; sipflow.load includes the SHA-256 of "
          "the files")
    print(f"{'reader':30s} {'wall [s]':>9s} {'MiB/s':>8s} {'equal':>6s}")
    for name, fn in rows:
        t, out = _best(fn, args.repeat)
        same = bool(np.array_equal(np.asarray(out), frames))
        print(f"{name:30s} {t:9.3f} {mb / t:8.1f} {same!s:>6s}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
