"""The measured APS 34-ID-C gold crystal (skipped when ../shared/data/real is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sipflow

AU_111_NM = 0.4079990459 / np.sqrt(3)  # the spec UB lattice of the scan


def _one_compact_object(support: np.ndarray) -> None:
    labels, _ = ndimage.label(support)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() > 0.95 * support.sum(), f"one connected object, got components {sizes}"


@pytest.mark.realdata
@pytest.mark.slow
def test_bcdi_template_gives_one_compact_crystal_with_its_size_and_strain(real_scan):
    out = sipflow.run_pipeline("bcdi", real_scan, seed=1)
    # the detector frame, where phasing happened
    oblique = out["support_oblique"].values
    assert out["obj_oblique"].shape == (64, 64, 64)
    _one_compact_object(oblique)
    assert 1000 < oblique.sum() < 0.1 * oblique.size, oblique.sum()
    extent = [int(np.ptp(ix)) + 1 for ix in np.nonzero(oblique)]
    assert max(extent) < 48, f"compact: bounding box {extent} of a 64^3 array"
    assert out.attrs["metrics"]["rfactor"] < 0.4
    # the laboratory frame: a crystal inside a few-hundred-nm box (the data README)
    support = out["support"].values
    voxel = out.attrs["voxel_size_m"][0] * 1e9
    assert out["x"].attrs["units"] == "nm" and 5 < voxel < 20
    _one_compact_object(support)
    sizes = [(np.ptp(ix) + 1) * voxel for ix in np.nonzero(support)]
    assert all(100 < s < 800 for s in sizes), sizes
    # the Bragg vector at the peak is the Au 111 reflection (within the detector calibration)
    assert out.attrs["bragg_d_spacing_nm"] == pytest.approx(AU_111_NM, rel=0.01)
    strain = out.attrs["bragg_strain"]
    assert strain["interior_voxels"] > 0.5 * support.sum()
    assert 0 < strain["strain_rms"] < 5e-3 and abs(strain["strain_mean"]) < 1e-3
