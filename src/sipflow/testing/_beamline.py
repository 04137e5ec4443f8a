"""Beamline files for tests (a SPEC scan with its frame folder) and the golden check of a
beamline preset against xrayutilities (an optional, GPL test-only dependency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..beamlines import Diffractometer
from ..contracts import BeamlinePreset


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_spec_scan(spec: str | Path, number: int, frames: np.ndarray, *,
                    command: str, motors: Mapping[str, float],
                    columns: Mapping[str, Sequence[float]],
                    header_lines: Sequence[str] = (), file_header: str | None = None,
                    frame_folder: str | Path | None = None, frame_stem: str = "scan",
                    suffix: str = ".tif") -> Path:
    """Append scan `number` to the SPEC file `spec` and write its frames, as a beamline
    does: ``<frame_folder>/<frame_stem>_S<NNNN>/<frame_stem>_S<NNNN>_<kkkkk><suffix>``.

    Parameters
    ----------
    spec : path
        The SPEC file; created with `file_header` (or a minimal one with ``#O0``/``#o0``
        lines naming `motors`) when absent.
    number : int
        The scan number.
    frames : ndarray, (points, rows, cols)
        Written with fabio in the format of `suffix`.
    command : str
        The scan command (``"ascan  th -0.28 0.72  200 0.25"``).
    motors : mapping of str to float
        Motor positions at the scan's start (``#P0``), in the ``#O`` order.
    columns : mapping of str to sequence of float
        The data columns (``#L``), one value per point.
    header_lines : sequence of str
        More scan-header lines (``"#UIMR5  0 256 0 256 1"``, ...).

    Returns
    -------
    Path
        The frames folder.
    """
    import fabio.cbfimage
    import fabio.edfimage
    import fabio.tifimage

    spec = Path(spec)
    if not spec.exists():
        names = list(motors)
        text = file_header or ("#F " + spec.name + "\n#E 0\n#D Thu Jan 01 00:00:00 2026\n"
                               "#O0 " + "  ".join(names) + "\n#o0 "
                               + " ".join(n.lower() for n in names) + "\n")
        spec.write_text(text.rstrip("\n") + "\n\n")
    labels = list(columns)
    points = len(next(iter(columns.values())))
    lines = [f"#S {number}  {command}", "#D Thu Jan 01 00:00:00 2026",
             "#P0 " + " ".join(_number(v) for v in motors.values()), *header_lines,
             f"#N {len(labels)}", "#L " + "  ".join(labels)]
    lines += [" ".join(_number(columns[k][i]) for k in labels) for i in range(points)]
    with open(spec, "a") as fh:
        fh.write("\n".join(lines) + "\n\n")
    folder = Path(frame_folder or spec.parent) / f"{frame_stem}_S{number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    kind = {".tif": fabio.tifimage.TifImage, ".edf": fabio.edfimage.EdfImage,
            ".cbf": fabio.cbfimage.CbfImage}[suffix]
    for k, frame in enumerate(np.asarray(frames)):
        kind(data=np.ascontiguousarray(frame)).write(
            str(folder / f"{frame_stem}_S{number:04d}_{k:05d}{suffix}"))
    return folder


def xu_q_sample(preset: BeamlinePreset, angles: Mapping[str, float], rows: np.ndarray,
                cols: np.ndarray, centre: Sequence[float], distance: float,
                pixel: Sequence[float], shape: Sequence[int], energy_ev: float) -> np.ndarray:
    """q (n, 3) [1/Å] of pixels (`rows`, `cols`) in the sample frame by xrayutilities'
    ``QConversion`` (beam along z, the preset's axis strings), the field's reference."""
    import xrayutilities as xu

    qc = xu.experiment.QConversion([c.axis for c in preset.sample_circles],
                                   [c.axis for c in preset.detector_circles], [0, 0, 1],
                                   en=energy_ev)
    qc.init_area(preset.pixel_directions[0], preset.pixel_directions[1], cch1=centre[0],
                 cch2=centre[1], Nch1=int(shape[0]), Nch2=int(shape[1]), distance=distance,
                 pwidth1=pixel[0], pwidth2=pixel[1])
    circles = (*preset.sample_circles, *preset.detector_circles)
    qx, qy, qz = qc.area(*[angles[c.name] + c.offset_deg for c in circles])
    return np.stack([qx[rows, cols], qy[rows, cols], qz[rows, cols]], axis=1)


def assert_beamline(preset: BeamlinePreset, *, seed: int = 0, rtol: float = 1e-6,
                    reference: BeamlinePreset | None = None) -> None:
    """Check a preset's q against xrayutilities' ``QConversion`` (when installed).

    At random circle positions, a detector of 300 x 400 pixels with an off-centre beam
    and unequal pixels, q of three pixels in the sample frame from
    :class:`sipflow.beamlines.Diffractometer` must equal xrayutilities' to `rtol`
    (xrayutilities set up from `reference`, default `preset` itself). xrayutilities
    (GPL) is only a test extra: the test is skipped without it.
    """
    import pytest

    xu = pytest.importorskip("xrayutilities")
    rng = np.random.default_rng(seed)
    circles = (*preset.sample_circles, *preset.detector_circles)
    angles = {c.name: float(rng.uniform(-25, 35)) for c in circles}
    energy_ev = 9000.0
    wavelength_a = float(xu.en2lam(energy_ev))
    centre, distance, pixel, shape = (140.5, 210.25), 0.8, (55e-6, 75e-6), (300, 400)
    rows, cols = np.array([0, 150, 299]), np.array([0, 333, 17])
    expected = xu_q_sample(reference or preset, angles, rows, cols, centre, distance, pixel,
                           shape, energy_ev)
    got = Diffractometer(preset, angles).q_sample(rows, cols, centre, distance, pixel,
                                                 wavelength_a)
    err = np.abs(got - expected).max() / np.abs(expected).max()
    pixels = list(zip(rows.tolist(), cols.tolist(), strict=True))
    assert err < rtol, (f"beamline {preset.name!r}: q of pixels {pixels} "
                        f"differ from xrayutilities by {err:.2e} (relative)\n"
                        f"sipflow: {got}\nxrayutilities: {expected}")
