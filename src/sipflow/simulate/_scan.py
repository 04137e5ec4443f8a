"""Write simulated scans to HDF5 in the CXI, NeXus or Eiger (master + data) layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ..errors import OutputError
from ..physics import FarField, gaussian_kernel, kernel_coherence, point_mirror
from ._objects import make_object

_HC = 6.62607015e-34 * 299792458.0


@dataclass(frozen=True)
class Simulation:
    """What to simulate.

    Parameters
    ----------
    shape : tuple of int
        Detector / array shape: (rows, cols) or (frames, rows, cols) [pixels].
    kind : str
        Object shape (see :func:`sipflow.simulate.make_object`).
    extent : float
        Object size as a fraction of the array (1/oversampling per axis).
    phase_amplitude : float
        Peak of the object's phase field [rad].
    photons : float or None
        Expected total counts; Poisson noise is drawn. None: noiseless float data.
    beamstop : float
        Radius of the central beamstop (masked, zero counts) [pixels]; 0 for none.
    beamstop_size : tuple of int, optional
        A rectangular beamstop instead: its full size (rows, cols) [pixels], centred on
        q = 0 (as on a forward-CDI detector, where a rectangle hides several speckles
        along one axis).
    masked_squares : int
        Number of small masked squares (4-8 px wide) scattered within a quarter of the
        array around q = 0 (bad regions a provider masked).
    processed : bool
        The pattern as a data provider hands it out: centro-symmetrised about q = 0
        (the mean of I(q) and I(-q) where both are measured; a pixel whose mirror is
        unmeasured is unmeasured too), rescaled by a non-integer factor (a flux
        normalisation), float32, zero at unmeasured pixels. Not integer counts: Poisson
        statistics no longer hold.
    gaps : int
        Width of one horizontal and one vertical detector gap [pixels]; 0 for none.
    hot_pixels : int
        Number of hot pixels: very large counts on valid pixels, *not* flagged in
        the mask (their positions are returned by :func:`simulate` as ``hot``).
    dead_pixels : float
        Share of pixels that are dead (zero counts, flagged in the mask), scattered.
    centre_offset : tuple of int
        Position of q = 0 relative to the array centre (rows, cols) [pixels]; the
        beamstop sits on it, the gaps stay where the detector has them.
    background : float
        Incoherent background [photons per pixel], added with its own Poisson noise.
    coherence_sigma : float
        Partial coherence: the pattern is ``K ⊛ |F obj|^2`` with a Gaussian kernel of
        this width [detector pixels] (per frame axis too in 3-D); 0 for a coherent beam.
    energy_eV, distance_m, pixel_size_m : float
        Geometry written to the file.
    delta_deg, gamma_deg, rocking_step_deg : float, optional
        Diffractometer angles of a Bragg rocking scan, written where the reader finds
        them (detector arm angles; the rocking motor's position per frame, from 0).
    rocking_axis : str
        Lab axis of the rocking rotation (``x``, ``y``, ``z``, with an optional ``-``),
        written as the rotation's ``vector`` in the NeXus layout.
    beam_centre : {None, "pixel", "m"}
        Write the beam centre (q = 0, see `centre_offset`) as the detector's
        ``beam_center_x``/``beam_center_y``, in pixels or in metres; None: not written.
    seed : int
    """

    shape: tuple[int, ...] = (128, 128)
    kind: str = "blob"
    extent: float = 0.4
    phase_amplitude: float = 1.0
    photons: float | None = 1e9
    beamstop: float = 0.0
    beamstop_size: tuple[int, int] | None = None
    masked_squares: int = 0
    processed: bool = False
    gaps: int = 0
    hot_pixels: int = 0
    dead_pixels: float = 0.0
    centre_offset: tuple[int, ...] = (0, 0)
    background: float = 0.0
    coherence_sigma: float = 0.0
    energy_eV: float = 8000.0
    distance_m: float = 2.0
    pixel_size_m: float = 75e-6
    delta_deg: float | None = None
    gamma_deg: float | None = None
    rocking_step_deg: float | None = None
    rocking_axis: str = "y"
    beam_centre: str | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)


def simulate(sim: Simulation) -> dict[str, np.ndarray]:
    """Arrays of a simulated measurement: intensity, mask (True = valid), obj, support, hot.

    The truth ``obj`` is scaled so that ``|F obj|^2`` (unitary FFT) is the expected
    intensity: it is directly comparable to a reconstruction from these data.
    """
    if len(sim.shape) not in (2, 3):
        raise ValueError(f"shape must be 2-D or 3-D, got {sim.shape}")
    rng = np.random.default_rng(sim.seed)
    obj = make_object(tuple(sim.shape), sim.kind, extent=sim.extent,
                      phase_amplitude=sim.phase_amplitude, rng=rng)
    support = np.abs(obj) > 0
    offset = tuple(int(v) for v in sim.centre_offset)
    if len(offset) != 2:
        raise ValueError(f"centre_offset needs (rows, cols), got {sim.centre_offset}")
    if any(offset):
        # q = 0 off the array centre: a phase ramp on the object moves the pattern
        # exactly (integer pixels), so |F obj|^2 stays the expected intensity
        ramp = sum(o * (np.arange(n) - n // 2).reshape([-1 if a == ax else 1
                                                        for a in range(obj.ndim)]) / n
                   for ax, (o, n) in enumerate(zip(offset, obj.shape[-2:], strict=True),
                                               start=obj.ndim - 2))
        obj = obj * np.exp(2j * np.pi * ramp)
    coherence = None
    if sim.coherence_sigma > 0:
        coherence = kernel_coherence(gaussian_kernel(tuple(sim.shape), sim.coherence_sigma))
    intensity, scale = FarField(ndim=len(sim.shape), coherence=coherence).simulate(
        obj, sim.photons, rng)
    obj = obj * np.sqrt(scale)
    if sim.background > 0:
        intensity = intensity + (rng.poisson(sim.background, intensity.shape)
                                 if sim.photons is not None else sim.background)
    mask = np.ones(sim.shape[-2:], bool)
    centre = [n // 2 + o for n, o in zip(sim.shape[-2:], offset, strict=True)]
    yy, xx = np.meshgrid(*[np.arange(n) - c for n, c in zip(sim.shape[-2:], centre,
                                                              strict=True)], indexing="ij")
    if sim.beamstop > 0:
        mask &= yy**2 + xx**2 > sim.beamstop**2
    if sim.beamstop_size is not None:
        rows, cols = (int(v) for v in sim.beamstop_size)
        mask &= ~((yy >= -(rows // 2)) & (yy < rows - rows // 2)
                  & (xx >= -(cols // 2)) & (xx < cols - cols // 2))
    for _ in range(sim.masked_squares):
        width = int(rng.integers(4, 9))
        reach = [n // 4 for n in sim.shape[-2:]]
        y0, x0 = (int(rng.integers(-r, r - width)) for r in reach)
        mask &= ~((yy >= y0) & (yy < y0 + width) & (xx >= x0) & (xx < x0 + width))
    if sim.gaps > 0:  # fixed on the detector, whatever the pattern's centre
        row = sim.shape[-2] // 2 + sim.shape[-2] // 6
        col = sim.shape[-1] // 2 - sim.shape[-1] // 5
        mask[row:row + sim.gaps, :] = False
        mask[:, col:col + sim.gaps] = False
    if sim.dead_pixels > 0:
        dead = rng.random(mask.shape) < sim.dead_pixels
        mask &= ~dead
    full_mask = np.broadcast_to(mask, sim.shape).copy()
    if sim.processed:
        intensity, full_mask = _symmetrised(intensity.astype(np.float64), full_mask, centre)
        factor = 37.18 * float(rng.uniform(0.9, 1.1))  # a gain and a flux normalisation
        intensity *= factor
        obj = obj * np.sqrt(factor)
    intensity[~full_mask] = 0
    hot = np.zeros(sim.shape, bool)
    if sim.hot_pixels:
        # hot pixels the detector mask does not know about (as on a real detector)
        flat = rng.choice(np.flatnonzero(full_mask), sim.hot_pixels, replace=False)
        hot.flat[flat] = True
        intensity[hot] = intensity[hot] + rng.uniform(1e3, 1e5, sim.hot_pixels) * max(
            float(intensity.max()) / 1e5, 1.0)
    return {"intensity": intensity, "mask": full_mask, "obj": obj.astype(np.complex64),
            "support": support, "hot": hot}


def _symmetrised(intensity: np.ndarray, mask: np.ndarray, centre: list[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Centro-symmetrise the last two axes about `centre`: the mean of I(q) and I(-q)
    where both are measured; a pixel whose mirror is unmeasured or off the array is
    unmeasured. (A 3-D stack is symmetrised frame by frame.)"""
    axes = (intensity.ndim - 2, intensity.ndim - 1)
    mirror_i, inside = point_mirror(intensity, centre, axes)
    mirror_m, _ = point_mirror(mask, centre, axes)
    both = mask & mirror_m & inside
    return np.where(both, 0.5 * (intensity + mirror_i), 0.0), both


def _write_geometry(f: h5py.File, sim: Simulation, detector: str, source: str) -> None:
    wavelength = _HC / (sim.energy_eV * 1.602176634e-19)
    f[f"{source}/energy"] = sim.energy_eV * 1.602176634e-19
    f[f"{source}/energy"].attrs["units"] = "J"
    f[f"{source}/wavelength"] = wavelength
    f[f"{source}/wavelength"].attrs["units"] = "m"
    f[f"{detector}/distance"] = sim.distance_m
    f[f"{detector}/distance"].attrs["units"] = "m"
    for axis in ("x", "y"):
        f[f"{detector}/{axis}_pixel_size"] = sim.pixel_size_m
        f[f"{detector}/{axis}_pixel_size"].attrs["units"] = "m"
    if sim.beam_centre is not None:
        if sim.beam_centre not in ("pixel", "m"):
            raise ValueError(f"beam_centre must be 'pixel' or 'm', got {sim.beam_centre!r}")
        offset = (*sim.centre_offset, 0, 0)
        row, col = (n // 2 + o for n, o in zip(sim.shape[-2:], offset[:2], strict=True))
        scale = 1.0 if sim.beam_centre == "pixel" else sim.pixel_size_m
        for axis, value in (("x", col), ("y", row)):
            f[f"{detector}/beam_center_{axis}"] = float(value) * scale
            f[f"{detector}/beam_center_{axis}"].attrs["units"] = sim.beam_centre
    cxi = detector.startswith("/entry_1")
    if cxi:  # the fixed paths of CXI files (and of the APS 34-ID-C repackaging)
        for name, value in (("delta", sim.delta_deg), ("gamma", sim.gamma_deg)):
            if value is not None:
                f[f"/entry_1/instrument_1/positioners/{name}"] = float(value)
                f[f"/entry_1/instrument_1/positioners/{name}"].attrs["units"] = "degree"
        if sim.rocking_step_deg is not None and len(sim.shape) == 3:
            f["/entry_1/measurement/Theta"] = np.arange(sim.shape[0]) * float(
                sim.rocking_step_deg)
            f["/entry_1/measurement/Theta"].attrs["units"] = "degree"
        return
    # NeXus: rotations in NXtransformations groups, with their axes (z downstream, y up)
    arm = f.require_group(f"{detector}/transformations")
    arm.attrs["NX_class"] = "NXtransformations"
    for name, value, vector in (("delta", sim.delta_deg, (0.0, 1.0, 0.0)),
                                ("gamma", sim.gamma_deg, (-1.0, 0.0, 0.0))):
        if value is not None:
            arm[name] = np.radians(float(value))
            arm[name].attrs.update({"units": "rad", "transformation_type": "rotation",
                                    "vector": np.array(vector), "depends_on": "."})
    if sim.rocking_step_deg is not None and len(sim.shape) == 3:
        sample = f.require_group("/entry/sample/transformations")
        sample.attrs["NX_class"] = "NXtransformations"
        axis = {"x": (1.0, 0, 0), "y": (0, 1.0, 0), "z": (0, 0, 1.0)}[
            sim.rocking_axis.lstrip("-")]
        sign = -1.0 if sim.rocking_axis.startswith("-") else 1.0
        sample["theta"] = np.arange(sim.shape[0]) * float(sim.rocking_step_deg)
        sample["theta"].attrs.update({"units": "degree", "transformation_type": "rotation",
                                      "vector": sign * np.array(axis), "depends_on": "."})


def write_scan(path: str | Path, sim: Simulation | None = None, *, layout: str = "cxi",
               overwrite: bool = False, frames_per_file: int = 64) -> Path:
    """Simulate a scan and write it to `path` with the truth under
    ``/entry_1/sample_1/sipflow_truth`` (``obj``, ``support``).

    Parameters
    ----------
    path : str or Path
        Output HDF5 file (for ``eiger``: the master file; data files are written
        beside it as ``<stem>_data_NNNNNN.h5``).
    sim : Simulation
    layout : {"cxi", "nexus", "eiger"}
        ``cxi``: ``/entry_1/instrument_1/detector_1/data`` with a mask; ``nexus``:
        an ``NXdata`` group with ``signal``; ``eiger``: frames in bitshuffle/LZ4
        data files behind external links, with ``detectorSpecific/pixel_mask``.
        Counts are uint32 with noise and float32 when noiseless or processed.
    overwrite : bool
        Replace an existing file.
    """
    sim = sim or Simulation()
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist")
    arrays = simulate(sim)
    intensity, mask = arrays["intensity"], arrays["mask"]
    counts = (intensity.astype(np.uint32) if sim.photons is not None and not sim.processed
              else intensity.astype(np.float32))
    bad = (~mask).astype(np.uint32)  # NeXus/CXI: non-zero = bad pixel
    mask2d = bad if bad.ndim == 2 else (bad if not np.all(bad == bad[0]) else bad[0])
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["creator"] = "sipflow simulate"
            if layout == "cxi":
                f["cxi_version"] = 150
                f["/entry_1/instrument_1/detector_1/data"] = counts
                f["/entry_1/instrument_1/detector_1/mask"] = mask2d
                f["/entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
                _write_geometry(f, sim, "/entry_1/instrument_1/detector_1",
                                "/entry_1/instrument_1/source_1")
            elif layout == "nexus":
                entry = f.create_group("entry")
                entry.attrs["NX_class"] = "NXentry"
                data = entry.create_group("measurement")
                data.attrs["NX_class"] = "NXdata"
                data.attrs["signal"] = "counts"
                data["counts"] = counts
                f["/entry/instrument/detector/pixel_mask"] = mask2d
                _write_geometry(f, sim, "/entry/instrument/detector", "/entry/instrument/source")
            elif layout == "eiger":
                frames = counts if counts.ndim == 3 else counts[None]  # uint32 unless noiseless
                f["/entry/instrument/detector/detectorSpecific/pixel_mask"] = mask2d
                _write_geometry(f, sim, "/entry/instrument/detector", "/entry/instrument/source")
                for k, start in enumerate(range(0, frames.shape[0], frames_per_file), start=1):
                    dname = path.with_name(f"{path.stem}_data_{k:06d}.h5")
                    with h5py.File(dname, "w") as d:
                        d.create_dataset("/entry/data/data", data=frames[start:start +
                                                                         frames_per_file],
                                         chunks=(1, *frames.shape[1:]),
                                         **hdf5plugin.Bitshuffle(cname="lz4"))
                    f[f"/entry/data/data_{k:06d}"] = h5py.ExternalLink(dname.name,
                                                                       "/entry/data/data")
            else:
                raise ValueError(f"unknown layout {layout!r}; choose cxi, nexus or eiger")
            truth = f.create_group("/entry_1/sample_1/sipflow_truth")
            truth["obj"] = arrays["obj"]
            truth["support"] = arrays["support"]
            truth.attrs["description"] = ("ground truth: |F obj|^2 (unitary FFT, centred) is the "
                                          "expected intensity")
            truth.attrs["simulation"] = repr(sim)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
