"""Bragg geometry: q steps from the angles, the transfer matrix, and orthogonalisation."""

from __future__ import annotations

import numpy as np
import pytest

from sipflow.bragg import Geometry, orthogonalize, to_detector_frame, transfer_matrix

# the shared gold scan's geometry (APS 34-ID-C, 9 keV, 55 µm pixels binned 2×, 0.5 m)
AU = Geometry(wavelength_nm=0.137760, distance_nm=0.5e9, pixel_nm=(110e3, 110e3),
              delta_deg=32.174, gamma_deg=12.6346, rocking_step_deg=0.005)


def test_q_steps_follow_the_arm_and_the_bragg_angle():
    q = AU.q_bragg()
    k = 2 * np.pi / AU.wavelength_nm
    two_theta = np.arccos(np.cos(np.radians(AU.delta_deg)) * np.cos(np.radians(AU.gamma_deg)))
    assert np.degrees(two_theta) == pytest.approx(34.3, abs=0.05)  # the data README's
    assert np.linalg.norm(q) == pytest.approx(2 * k * np.sin(two_theta / 2), rel=1e-12)
    assert 2 * np.pi / np.linalg.norm(q) == pytest.approx(0.2335, abs=2e-4)  # Au 111 region
    steps = AU.q_steps()
    n = (q + np.array([k, 0, 0])) / k  # exit direction, (z, y, x)
    rock, row, col = steps.T
    for v in (row, col):  # pixel steps lie on the detector, perpendicular to the exit beam
        assert abs(v @ n) < 1e-12 * np.linalg.norm(v)
        assert np.linalg.norm(v) == pytest.approx(k * 110e3 / 0.5e9, rel=1e-12)
    assert abs(row @ col) < 1e-12 * np.linalg.norm(row) ** 2
    # the rocking step is perpendicular to q and to the rocking axis, of length |q| dθ
    assert abs(rock @ q) < 1e-12 * np.linalg.norm(rock) * np.linalg.norm(q)
    assert abs(rock[1]) < 1e-15
    assert np.linalg.norm(rock) == pytest.approx(np.linalg.norm(q[[0, 2]]) * np.radians(0.005))


def test_transfer_matrix_is_the_dual_lattice():
    shape = (64, 60, 56)
    r = transfer_matrix(AU.q_steps(), shape)
    np.testing.assert_allclose(r.T @ AU.q_steps() * np.array(shape)[None, :],
                               2 * np.pi * np.eye(3), atol=1e-9)
    with pytest.raises(ValueError, match="coplanar"):
        flat = Geometry(0.1, 1e9, (5e4, 5e4), 30.0, 0.0, 0.0)
        transfer_matrix(flat.q_steps(), shape)


# the gold scan's lattice is 47 nm along the rocking direction (0.005° steps, 64 frames);
# a 4× coarser rocking step gives ~12 nm in every direction, so that small test objects
# are well sampled
FINE = Geometry(wavelength_nm=0.137760, distance_nm=0.5e9, pixel_nm=(110e3, 110e3),
                delta_deg=32.174, gamma_deg=12.6346, rocking_step_deg=0.02)


def _sample(r: np.ndarray, shape: tuple[int, ...], f) -> np.ndarray:
    """f(p) at the detector-frame lattice points p = R (s − centre) [nm]."""
    s = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij"))
    p = np.einsum("ij,j...->i...", r, s)
    return f(p)


def test_orthogonalisation_recovers_a_lab_frame_object_and_inverts():
    shape = (48, 40, 44)
    r = transfer_matrix(FINE.q_steps(), shape)

    def blob(p):  # a smooth complex object known in the lab frame (σ 60, 40, 50 nm)
        w = np.array([60.0, 40.0, 50.0])[:, None, None, None]
        return (np.exp(-0.5 * ((p / w) ** 2).sum(axis=0))
                * np.exp(1j * 0.01 * (p[0] - 0.5 * p[2])))

    det = _sample(r, shape, blob)
    lab, voxel = orthogonalize(det, r, shape=(48, 48, 48))
    grid = np.stack(np.meshgrid(*[(np.arange(48) - 24) * voxel] * 3, indexing="ij"))
    truth = blob(grid)
    err = np.linalg.norm(lab - truth) / np.linalg.norm(truth)
    assert err < 0.03, err
    back = to_detector_frame(lab, r, voxel, shape)
    core = tuple(slice(n // 4, 3 * n // 4) for n in shape)
    # two linear interpolations: a few per cent on a lattice of ~12 nm for σ = 40 nm
    assert np.linalg.norm(back[core] - det[core]) / np.linalg.norm(det[core]) < 0.05


def test_a_box_crystal_keeps_its_size_in_nm():
    shape = (64, 64, 64)
    r = transfer_matrix(FINE.q_steps(), shape)
    size = np.array([220.0, 160.0, 250.0])  # z, y, x [nm]

    def box(p):
        return np.all(np.abs(p) <= size[:, None, None, None] / 2, axis=0)

    det = _sample(r, shape, box)
    assert det.sum() > 1000  # the crystal is well sampled on the oblique grid
    lab, voxel = orthogonalize(det, r)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        extent = np.flatnonzero(lab.any(axis=other))
        measured = (extent[-1] - extent[0] + 1) * voxel
        assert abs(measured - size[axis]) <= 2 * voxel, (axis, measured, size[axis], voxel)


def test_q_vectors_in_inverse_angstrom():
    """q at the array centre is the Bragg vector (Au 111: |q| = 2π/d ≈ 2.69 1/Å) and one
    index along each axis moves q by that axis's step."""
    q = AU.q_vectors((8, 10, 12))
    assert q.shape == (3, 8, 10, 12)
    np.testing.assert_allclose(q[:, 4, 5, 6], AU.q_bragg() / 10, rtol=1e-12)
    assert np.linalg.norm(q[:, 4, 5, 6]) == pytest.approx(2 * np.pi / 2.335, rel=1e-3)
    steps = AU.q_steps() / 10
    np.testing.assert_allclose(q[:, 5, 5, 6] - q[:, 4, 5, 6], steps[:, 0], rtol=1e-9)
    np.testing.assert_allclose(q[:, 4, 5, 7] - q[:, 4, 5, 6], steps[:, 2], rtol=1e-9)
    with pytest.raises(ValueError, match="3-D"):
        AU.q_vectors((8, 8))
