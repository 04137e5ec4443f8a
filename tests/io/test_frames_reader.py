"""EDF, CBF and TIFF frames through fabio: one file, a folder, a glob; mask, dark and flat
files; the geometry of the frame headers."""

from __future__ import annotations

import fabio.cbfimage
import fabio.edfimage
import fabio.tifimage
import numpy as np
import pytest

import sipflow
from sipflow.errors import DataError, InputError

KINDS = {"edf": fabio.edfimage.EdfImage, "cbf": fabio.cbfimage.CbfImage,
         "tif": fabio.tifimage.TifImage}


def _frames(n=4):
    return np.random.default_rng(2).poisson(20, (n, 24, 32)).astype(np.int32)


@pytest.mark.parametrize("suffix", sorted(KINDS))
def test_a_folder_and_a_glob_of_frames_read_in_natural_order(tmp_path, suffix):
    frames = _frames(11)
    for k, frame in enumerate(frames):  # f_9 before f_10: natural order, not text order
        KINDS[suffix](data=frame).write(str(tmp_path / f"f_{k}.{suffix}"))
    KINDS[suffix](data=np.zeros((24, 32), np.int32)).write(str(tmp_path / f"dark.{suffix}"))
    ds = sipflow.load(tmp_path)
    assert ds.attrs["source_layout"] == "frames" and ds.attrs["source_files"] == 11
    np.testing.assert_array_equal(ds["intensity"].values, frames)  # dark.* left out
    glob = sipflow.load(tmp_path / f"f_1*.{suffix}")  # f_1, f_10
    np.testing.assert_array_equal(glob["intensity"].values, frames[[1, 10]])
    one = sipflow.load(tmp_path / f"f_3.{suffix}")
    np.testing.assert_array_equal(one["intensity"].values, frames[3])
    assert one["intensity"].dims == ("det_y", "det_x")


def test_mask_dark_and_flat_files_and_a_pipeline_input_block(tmp_path):
    frames = _frames()
    for k, frame in enumerate(frames):
        fabio.edfimage.EdfImage(data=frame).write(str(tmp_path / f"s_{k:04d}.edf"))
    bad = np.zeros((24, 32), np.uint8)
    bad[3, 4] = 1
    fabio.edfimage.EdfImage(data=bad).write(str(tmp_path / "mask.edf"))
    fabio.edfimage.EdfImage(data=np.full((24, 32), 2.0, np.float32)).write(
        str(tmp_path / "dark.edf"))
    ds = sipflow.load(tmp_path, mask=str(tmp_path / "mask.edf"),
                      dark=str(tmp_path / "dark.edf"))
    assert not ds["mask"].values[3, 4] and ds["mask"].values.sum() == 24 * 32 - 1
    assert ds["dark"].values.max() == 2.0
    pipe = {"input": {"mask": str(tmp_path / "mask.edf")},
            "stages": [{"use": "prep.standard", "with": {"sum_frames": True}}]}
    out = sipflow.run_pipeline(pipe, tmp_path)
    assert out["intensity"].shape == (24, 32) and not out["mask"].values.all()
    with pytest.raises(DataError, match=r"mask.edf \(mask\) has shape \(24, 32\); expected "
                                        r"the frames' shape \(12, 16\)"):
        for k in range(2):
            fabio.edfimage.EdfImage(data=frames[k, :12, :16]).write(
                str(tmp_path / f"small_{k}.edf"))
        sipflow.load(tmp_path / "small_*.edf", mask=str(tmp_path / "mask.edf"))


def test_geometry_and_beam_centre_from_cbf_and_edf_headers(tmp_path):
    frame = _frames(1)[0]
    cbf = fabio.cbfimage.CbfImage(data=frame)
    cbf.header["_array_data.header_contents"] = (
        "# Detector: PILATUS3 1M\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n"
        "# Wavelength 1.0332 A\r\n# Detector_distance 5.1200 m\r\n"
        "# Beam_xy (15.50, 11.25) pixels\r\n")
    cbf.write(str(tmp_path / "p.cbf"))
    ds = sipflow.load(tmp_path / "p.cbf")
    assert ds.attrs["wavelength_m"] == pytest.approx(1.0332e-10)
    assert ds.attrs["distance_m"] == pytest.approx(5.12)
    assert ds.attrs["pixel_size_m"] == pytest.approx(172e-6)
    assert ds.attrs["beam_centre_px"] == [11.25, 15.5]  # (row, col) from Beam_xy (x, y)
    assert "CBF header Beam_xy" in ds.attrs["geometry_sources"]["beam_centre_px"]
    fabio.edfimage.EdfImage(data=frame, header={"SampleDistance": "2.5", "Center_1": "15.5",
                                                "Center_2": "11", "PSize_1": "7.5e-05",
                                                "WaveLength": "1e-10"}).write(
        str(tmp_path / "e.edf"))
    ds = sipflow.load(tmp_path / "e.edf")
    assert ds.attrs["distance_m"] == 2.5 and ds.attrs["beam_centre_px"] == [11.0, 15.5]
    assert ds.attrs["energy_eV"] == pytest.approx(12398.4, rel=1e-4)


def test_bad_frame_input_is_named(tmp_path):
    frames = _frames(3)
    for k in range(3):
        fabio.tifimage.TifImage(data=frames[k] if k != 1 else frames[k, :10]).write(
            str(tmp_path / f"t_{k}.tif"))
    ds = sipflow.load(tmp_path)  # the shapes are checked as each frame is read
    with pytest.raises(DataError, match=r"t_1.tif: frame 0 has shape \(10, 32\); the first "
                                        r"frame of the scan has \(24, 32\)"):
        ds["intensity"].compute()
    (tmp_path / "broken.cbf").write_bytes(b"###CBF: not really\n" + b"\0" * 64)
    with pytest.raises(InputError, match=r"broken.cbf: cannot be read as a detector frame"):
        sipflow.load(tmp_path / "broken.cbf")
    with pytest.raises(InputError, match="no file matches this pattern"):
        sipflow.load(tmp_path / "nothing_*.edf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no reader recognises it"):
        sipflow.load(empty)
