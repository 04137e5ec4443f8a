"""A SPEC scan and its frame folder, as APS 34-ID-C (and other SPEC beamlines) write them.

The SPEC file (read with silx's ``SpecFile``) holds many scans; the frames of scan
``N`` are image files in a folder named ``<sample>_S<NNNN>`` below the SPEC file's
folder (or given). Energy, distance, detector angles, the rocking motor and its steps,
and the detector region the frames hold come from the scan's header, motor positions
and data columns, read through a beamline preset's keys (``aps-34idc`` by default);
dark and white field are found by name (``dark*``, ``white*``/``flat*``) beside the
SPEC file or given.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..contracts import BeamlinePreset
from ..errors import DataError, InputError
from ._frames import frame_files, frame_number, is_frame_file, read_image, stack
from ._units import apply_preset


def _spec_file(path: Path) -> Any:
    from silx.io.specfile import SfErrFileOpen, SpecFile

    try:
        sf = SpecFile(str(path))
    except (SfErrFileOpen, OSError, IndexError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as a SPEC file ({exc})") from exc
    if not len(sf.list()):
        raise InputError(f"{path}: no scan (#S line) in this SPEC file")
    return sf


def _spans(numbers: list[int]) -> str:
    """'1-53, 55' for [1, ..., 53, 55]."""
    out: list[str] = []
    for n in sorted(set(numbers)):
        if out and n == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def _scan(sf: Any, path: Path, scan: int | None) -> Any:
    numbers = [int(n) for n in sf.list()]
    if scan is None:
        if len(set(numbers)) > 1:
            raise InputError(f"{path}: the SPEC file holds {len(set(numbers))} scans "
                             f"({_spans(numbers)}); choose one with --scan N (scan: N)")
        scan = numbers[0]
    if int(scan) not in numbers:
        raise InputError(f"{path}: scan {scan} is not in this SPEC file; its scans: "
                         f"{_spans(numbers)}")
    # a number used twice (a restarted scan): the last one, as SPEC users expect
    order = numbers.count(int(scan))
    return sf[f"{int(scan)}.{order}"], int(scan)


def _mnemonics(sf: Any, scan: Any) -> dict[str, str]:
    """SPEC motor mnemonic -> motor name (``th`` -> ``Theta``) from ``#o``/``#O`` lines."""
    names: list[str] = []
    mnems: list[str] = []
    for line in scan.file_header:
        if re.match(r"^#O\d+ ", line):
            names += [n.strip() for n in re.split(r"\s{2,}", line.split(" ", 1)[1].strip())]
        elif re.match(r"^#o\d+ ", line):
            mnems += line.split()[1:]
    return dict(zip(mnems, names, strict=False))


def _header_numbers(scan: Any, key: str) -> list[float] | None:
    value = scan.scan_header_dict.get(key)
    if value is None:
        return None
    try:
        return [float(v) for v in str(value).split()]
    except ValueError:
        return None


def _frames_folder(path: Path, scan: int, frames: str | Path | None) -> Path:
    if frames is not None:
        folder = Path(frames)
        if not folder.is_dir():
            raise InputError(f"{folder}: the frames folder given does not exist")
        return folder
    pattern = re.compile(rf"_S0*{scan}$", re.IGNORECASE)
    base = path.resolve().parent
    found = sorted(d for depth in ("*", "*/*", "*/*/*") for d in base.glob(depth)
                   if d.is_dir() and pattern.search(d.name))
    if not found:
        raise InputError(f"{path}: no folder of frames named *_S{scan:04d} below {base}; "
                         "give it with --frames DIR (frames: DIR)")
    if len(found) > 1:
        raise InputError(f"{path}: several frame folders for scan {scan}: "
                         f"{', '.join(map(str, found))}; choose one with --frames DIR")
    return found[0]


def _checked_frames(folder: Path, points: int, where: str) -> list[Path]:
    files = frame_files(folder)
    numbers = [frame_number(f) for f in files]
    if len(files) != points:
        msg = (f"{where}: the scan has {points} points but {folder} holds {len(files)} "
               "frame files")
        if None not in numbers:
            first = min(n for n in numbers if n is not None)
            missing = sorted(set(range(first, first + points)) - set(numbers))
            if missing:
                msg += f"; missing frame numbers: {_spans(missing)}"
        raise DataError(msg + ". Every point of the scan needs its frame.")
    return files


def _find_aux(path: Path, folder: Path, given: str | bool | None, names: tuple[str, ...]
              ) -> Path | None:
    if given is False:
        return None
    if isinstance(given, str):
        return Path(given)
    for base in (path.resolve().parent, folder.parent):
        for f in sorted(base.iterdir()):
            if is_frame_file(f) and f.name.lower().startswith(names):
                return f
    return None


def _motion(sf: Any, scan: Any, preset: BeamlinePreset
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Positioners (moving motors per point) and the rocking motor and step."""
    positioners: dict[str, Any] = {}
    for name, value in zip(scan.motor_names, scan.motor_positions, strict=False):
        if np.isfinite(value):
            positioners[name] = float(value)
    # "#S 54  ascan  th -0.28 0.72  200 0.25": number, command, first motor's mnemonic
    words = str(scan.scan_header_dict.get("S", "")).split()
    mnem = _mnemonics(sf, scan)
    moved = mnem.get(words[2], words[2]) if len(words) > 2 else None
    if moved is not None and moved not in scan.labels:  # "theta" for a column "Theta"
        moved = next((lb for lb in scan.labels if lb.lower() == moved.lower()), moved)
    out: dict[str, Any] = {}
    for label in scan.labels:
        column = np.asarray(scan.data_column_by_name(label), np.float64)
        if label in positioners or label == moved:
            positioners[label] = [float(v) for v in column]
    if moved in positioners and isinstance(positioners[moved], list):
        values = np.asarray(positioners[moved])
        step = float(np.mean(np.diff(values))) if values.size > 1 else 0.0
        circle = next((c.name for c in preset.sample_circles
                       if c.file_key.lower() == moved.lower()), moved.lower())
        if step:
            out = {"rocking_step_deg": step, "rocking_motor": circle}
    return positioners, out


def read_spec(path: str | Path, *, scan: int | None = None, frames: str | None = None,
              dark: str | bool | None = None, flat: str | bool | None = None,
              mask: str | None = None, preset: BeamlinePreset, checksum: bool = True
              ) -> xr.Dataset:
    """Read one scan of a SPEC file with its frames.

    Parameters
    ----------
    path : str or Path
        The SPEC file.
    scan : int, optional
        Scan number (``#S N``); required when the file holds several.
    frames : str, optional
        Folder of the scan's frame files; default: the folder named ``*_S<NNNN>``
        below the SPEC file's folder.
    dark, flat : str or bool, optional
        Image files of the dark frame and the white field; default: ``dark*`` and
        ``white*``/``flat*`` beside the SPEC file or the frames folder; ``False``: none.
        A full-detector image is cropped to the scan's detector region.
    mask : str, optional
        Image file of the pixel mask (non-zero = bad).
    preset : BeamlinePreset
        Whose keys name the energy, distance and circle motors and the region header.

    Returns
    -------
    xarray.Dataset
        As :func:`sipflow.io.read_hdf5`: ``intensity`` (lazy, ``(frame, det_y,
        det_x)``), ``mask``, ``dark``/``flat``; energy, wavelength, distance, pixel size,
        detector angles, rocking motor and step, ``positioners``, ``detector_roi``
        (row0, rows, col0, cols) and ``detector_full_shape`` in attrs, each geometry
        value's source in ``attrs["geometry_sources"]``.
    """
    path = Path(path)
    sf = _spec_file(path)
    sc, number = _scan(sf, path, scan)
    where = f"{path} #S {number}"
    points = int(np.asarray(sc.data).shape[-1]) if np.asarray(sc.data).size else 0
    if points == 0:
        raise DataError(f"{where}: the scan has no data points (aborted before its first "
                        "point?)")
    folder = _frames_folder(path, number, frames)
    files = _checked_frames(folder, points, where)
    intensity, _header = stack(files, str(folder))
    shape = tuple(intensity.shape[1:])
    dims = schema.detector_dims(3)
    attrs: dict[str, Any] = {"source": str(path.resolve()), "source_dataset": f"#S {number}",
                             "source_layout": "spec", "frames_folder": str(folder.resolve()),
                             "spec_command": str(sc.scan_header_dict.get("S", "")).split(
                                 None, 1)[-1].strip(),
                             "beamline": preset.name}
    src: dict[str, str] = {}
    roi = _header_numbers(sc, preset.roi_key) if preset.roi_key else None
    roi_box = None
    if roi is not None and len(roi) >= 4:
        # areaDetector order: minX sizeX minY sizeY (X: columns)
        roi_box = (int(roi[2]), int(roi[3]), int(roi[0]), int(roi[1]))
        attrs["detector_roi"] = list(roi_box)
        src["detector_roi"] = f"{where} #{preset.roi_key}"
        readout = _header_numbers(sc, "Readout")
        if readout is not None and len(readout) >= 4:
            attrs["detector_full_shape"] = [int(readout[3]), int(readout[1])]
    data_vars: dict[str, Any] = {schema.INTENSITY: (dims, intensity)}
    valid = np.ones(shape, bool) if mask is None else read_image(mask, shape, "mask",
                                                                 roi_box) == 0
    data_vars[schema.MASK] = (dims[-2:], valid)
    for key, given, names in ((schema.DARK, dark, ("dark",)),
                              (schema.FLAT, flat, ("white", "flat"))):
        found = _find_aux(path, folder, given, names)
        if found is not None:
            data_vars[key] = (dims[-2:], read_image(found, shape, key, roi_box)
                              .astype(np.float32))
            attrs[f"{key}_source"] = str(found)
    positioners, rocking = _motion(sf, sc, preset)
    apply_preset(attrs, src, preset, positioners, f"{where} motor")
    attrs["positioners"] = positioners
    attrs.update(rocking)
    for c in preset.detector_circles:  # the two-arm model's angles, where they apply
        if c.name in ("delta", "gamma") and isinstance(positioners.get(c.file_key), float):
            attrs[f"{c.name}_deg"] = positioners[c.file_key]
    attrs["geometry_sources"] = src
    if checksum:
        h = hashlib.sha256(path.read_bytes())
        for f in files:
            h.update(f.read_bytes())
        attrs["source_sha256"] = h.hexdigest()
    return xr.Dataset(data_vars, attrs=attrs)
