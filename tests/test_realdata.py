"""The measured APS 34-ID-C gold crystal (skipped when ../shared/data/real is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sipflow


@pytest.mark.realdata
@pytest.mark.slow
def test_bcdi_template_gives_one_compact_crystal(real_scan):
    out = sipflow.run_pipeline("bcdi", real_scan, seed=1)
    support = out["support"].values
    assert out["obj"].dims == ("z", "y", "x") and out["obj"].shape == (64, 64, 64)
    labels, _ = ndimage.label(support)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() > 0.95 * support.sum(), f"one connected object, got components {sizes}"
    assert 1000 < support.sum() < 0.1 * support.size, support.sum()
    extent = [int(np.ptp(ix)) + 1 for ix in np.nonzero(support)]
    assert max(extent) < 48, f"compact: bounding box {extent} of a 64^3 array"
    assert out.attrs["metrics"]["rfactor"] < 0.4
