"""bragg.strain: phase ramps are not strain, known displacement fields give known strain."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sipflow import Context
from sipflow.bragg import strain_from_object, surface_layer
from sipflow.errors import DataError, PipelineError
from sipflow.pipeline import Pipeline
from sipflow.plugins import get_registry

SPACING = np.array([2.0, 1.5, 1.0])  # nm, deliberately anisotropic
G = 2 * np.pi / 0.2355 * np.array([0.0, 0.6, 0.8])  # Au 111, |G| = 26.7 / nm


def _crystal(shape=(24, 28, 32)) -> tuple[np.ndarray, list[np.ndarray]]:
    """A faceted crystal (an octahedron cut by a cube) and the voxel coordinates [nm]."""
    r = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, SPACING, strict=True)],
                    indexing="ij")
    octa = np.abs(r[0]) / 16 + np.abs(r[1]) / 15 + np.abs(r[2]) / 13 <= 1.0
    cube = (np.abs(r[0]) < 14) & (np.abs(r[1]) < 12) & (np.abs(r[2]) < 11)
    return octa & cube, r


def test_a_phase_ramp_and_offset_are_not_strain():
    support, r = _crystal()
    ramp = np.array([0.31, -0.22, 0.47])  # rad/nm: the phase wraps many times
    phase = 1.3 + sum(k * x for k, x in zip(ramp, r, strict=True))
    assert np.ptp(phase[support]) > 3 * np.pi
    obj = np.where(support, 2.0 * np.exp(1j * phase), 0)
    out = strain_from_object(obj, support, SPACING, G)
    np.testing.assert_allclose(out.ramp, ramp, atol=1e-9)
    assert np.nanmax(np.abs(out.strain)) < 1e-9
    assert np.nanmax(np.abs(out.phase[support])) < 1e-9


def test_a_known_linear_displacement_gives_the_known_strain():
    support, r = _crystal()
    g_hat = G / np.linalg.norm(G)
    eps0 = 3e-3
    u = eps0 * sum(gh * x for gh, x in zip(g_hat, r, strict=True))  # homogeneous strain along G
    phase = np.linalg.norm(G) * u
    obj = np.where(support, np.exp(1j * phase), 0)
    # a homogeneous strain is a ramp: kept without ramp removal, removed with it
    kept = strain_from_object(obj, support, SPACING, G, remove_ramp=False)
    interior = support & ~kept.surface
    np.testing.assert_allclose(kept.strain[interior], eps0, rtol=1e-9)
    edge = kept.strain[support]  # one-sided on the surface; NaN where a voxel has no
    # support neighbour along an axis (tips and one-voxel ridges of the facets)
    assert np.isfinite(edge).mean() > 0.95
    np.testing.assert_allclose(edge[np.isfinite(edge)], eps0, rtol=1e-9)


def test_a_strain_gradient_survives_ramp_removal():
    # u = a (r·ĝ)²: strain 2a (r·ĝ) + const, wrapping several times over the crystal
    support, r = _crystal()
    g_hat = G / np.linalg.norm(G)
    s = sum(gh * x for gh, x in zip(g_hat, r, strict=True))
    a = 2e-4  # strain varies by 2a × 30 nm ≈ 1.2e-2 across the crystal
    obj = np.where(support, np.exp(1j * np.linalg.norm(G) * a * s ** 2), 0)
    out = strain_from_object(obj, support, SPACING, G)
    interior = support & ~out.surface
    truth = 2 * a * s
    diff = out.strain[interior] - truth[interior]
    # central differences of a quadratic are exact; the ramp only shifts the mean
    assert np.ptp(diff) < 1e-8
    stats = out.summary(support, SPACING)
    assert stats["interior_voxels"] == int(interior.sum())
    assert stats["strain_rms"] == pytest.approx(np.std(truth[interior]), rel=1e-6)


def test_the_surface_is_the_outer_layer_and_2d_works():
    support = np.zeros((10, 12), bool)
    support[2:8, 3:10] = True
    surface = surface_layer(support)
    assert surface.sum() == support.sum() - 4 * 5
    assert not surface[~support].any()
    edge = np.ones((4, 4), bool)  # touching the array's edge is a surface too
    assert surface_layer(edge).sum() == 12
    y = np.meshgrid(np.arange(10.0), np.arange(12.0), indexing="ij")[0]
    obj = np.where(support, np.exp(1j * 0.3 * y), 0)
    out = strain_from_object(obj, support, [1.0, 1.0], [2 * np.pi / 0.3, 0.0],
                             remove_ramp=False)
    np.testing.assert_allclose(out.strain[support], 0.3 ** 2 / (2 * np.pi), rtol=1e-9)


def _dataset(obj, support, coords_nm=True):
    dims = ("z", "y", "x")
    coords = ({d: (d, np.arange(n) * s, {"units": "nm"})
               for d, n, s in zip(dims, obj.shape, SPACING, strict=True)} if coords_nm else {})
    return xr.Dataset({"obj": (dims, obj.astype(np.complex64)), "support": (dims, support)},
                      coords=coords, attrs={"source": "crystal.h5"})


def test_the_stage_writes_strain_with_units_and_a_summary():
    support, r = _crystal()
    g_hat = G / np.linalg.norm(G)
    s = sum(gh * x for gh, x in zip(g_hat, r, strict=True))
    phase = np.linalg.norm(G) * 2e-4 * s ** 2 + 0.2 * r[2]
    obj = np.where(support, np.exp(1j * phase), 0)
    stage = get_registry().stage("bragg.strain")()
    out = stage(_dataset(obj, support), {"d_spacing_nm": 0.2355,
                                         "g_direction": g_hat.tolist()}, Context(seed=0))
    assert out.strain.attrs["units"] == "1" and out.displacement.attrs["units"] == "nm"
    info = out.attrs["bragg_strain"]
    assert info["voxel_size_nm"] == pytest.approx(SPACING.tolist())
    assert info["ramp_rad_per_nm"][2] == pytest.approx(0.2, abs=0.05)
    interior = support & ~out.surface.values
    assert info["strain_rms"] == pytest.approx(np.std(4e-4 * s[interior]), rel=1e-3)
    assert np.isnan(out.strain.values[~support]).all()


def test_missing_geometry_and_bad_parameters_are_clear_errors():
    support, _ = _crystal((8, 8, 8))
    obj = support.astype(np.complex64)
    stage = get_registry().stage("bragg.strain")()
    with pytest.raises(DataError, match=r"crystal\.h5.*voxel size.*nm"):
        stage(_dataset(obj, support, coords_nm=False),
              {"d_spacing_nm": 0.2, "g_direction": [0, 0, 1]}, Context())
    with pytest.raises(DataError, match="d spacing"):
        stage(_dataset(obj, support), {"g_direction": [0, 0, 1]}, Context())
    with pytest.raises(DataError, match="g_direction has 2 components"):
        stage(_dataset(obj, support), {"d_spacing_nm": 0.2, "g_direction": [0, 1]},
              Context())
    with pytest.raises(PipelineError, match="g_direction"):
        Pipeline.load({"stages": [{"use": "bragg.strain", "with": {"g_direction": [0, 0]}}]})
    with pytest.raises(PipelineError, match="d_spacing_nm"):
        Pipeline.load({"stages": [{"use": "bragg.strain", "with": {"d_spacing_nm": -1}}]})
