"""bragg.orthogonalize → bragg.strain on a simulated crystal with a known displacement."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import sipflow
from sipflow import Context
from sipflow.bragg import Geometry, transfer_matrix
from sipflow.errors import DataError, PipelineError
from sipflow.pipeline import Pipeline
from sipflow.plugins import get_registry

SHAPE = (64, 64, 64)
SIZE = np.array([220.0, 160.0, 250.0])  # crystal box, (z, y, x) [nm]
A = 4e-6  # u = A s² along G [1/nm]: strain 2 A s, up to ±1e-3 over the crystal


def _scan(geometry_in_file: bool = True) -> tuple[xr.Dataset, Geometry]:
    """A phased rocking scan: the object on the detector lattice, as phase.classic leaves it."""
    geo = Geometry(wavelength_nm=0.13776, distance_nm=0.5e9, pixel_nm=(110e3, 110e3),
                   delta_deg=32.174, gamma_deg=12.6346, rocking_step_deg=0.02)
    r = transfer_matrix(geo.q_steps(), SHAPE)
    s = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in SHAPE], indexing="ij"))
    p = np.einsum("ij,j...->i...", r, s)  # lab position of each array element [nm]
    q = geo.q_bragg()
    g_hat = q / np.linalg.norm(q)
    along = np.einsum("i,i...->...", g_hat, p)
    support = np.all(np.abs(p) <= SIZE[:, None, None, None] / 2, axis=0)
    obj = np.where(support, np.exp(1j * (np.linalg.norm(q) * A * along ** 2 + 0.7)), 0)
    attrs = {"source": "simulated_bragg.h5",
             "prep_window": {"centre": [100, 128, 128], "shape": [64, 128, 128],
                             "bin": [1, 2, 2], "detector_shape": [201, 256, 256]}}
    if geometry_in_file:  # as the reader records it: raw pixels, raw rocking step
        attrs.update({"wavelength_m": 0.13776e-9, "distance_m": 0.5, "pixel_size_m": 55e-6,
                      "delta_deg": 32.174, "gamma_deg": 12.6346, "rocking_step_deg": 0.02})
    dims = ("z", "y", "x")
    ds = xr.Dataset({"obj": (dims, obj.astype(np.complex64)), "support": (dims, support)},
                    attrs=attrs)
    return ds, geo


def test_orthogonalised_crystal_has_its_size_and_its_strain():
    ds, geo = _scan()
    spec = {"stages": [{"use": "bragg.orthogonalize"}, {"use": "bragg.strain"}]}
    out = sipflow.run_pipeline(spec, ds, seed=0)
    voxel = out.attrs["voxel_size_m"][0] * 1e9
    assert out.x.attrs["units"] == "nm" and out.obj.dims == ("z", "y", "x")
    sup = out.support.values
    for axis in range(3):  # the crystal's size in nm, within one voxel per side
        other = tuple(a for a in range(3) if a != axis)
        extent = np.flatnonzero(sup.any(axis=other))
        assert abs((extent[-1] - extent[0] + 1) * voxel - SIZE[axis]) <= 2 * voxel
    # edge to edge at half amplitude: the size itself within one voxel
    np.testing.assert_allclose(out.attrs["bragg_crystal_size_nm"], SIZE, atol=voxel)
    q = geo.q_bragg()
    np.testing.assert_allclose(out.attrs["bragg_g_direction"], q / np.linalg.norm(q),
                               atol=1e-12)
    # strain 2 A (r·ĝ) on the lab grid, up to the mean that the ramp removal takes away
    grid = np.stack(np.meshgrid(*[out[d].values for d in ("z", "y", "x")], indexing="ij"))
    truth = 2 * A * np.einsum("i,i...->...", q / np.linalg.norm(q), grid)
    interior = sup & ~out.surface.values & np.isfinite(out.strain.values)
    diff = out.strain.values[interior] - truth[interior]
    rms = float(np.sqrt(np.mean((diff - diff.mean()) ** 2)))
    assert rms < 1e-4, rms
    assert np.ptp(truth[interior]) > 1e-3  # the field is much larger than that error
    assert "obj_oblique" in out and out.obj_oblique.dims == ("oblique_z", "oblique_y",
                                                             "oblique_x")


def test_missing_or_contradictory_geometry_is_a_clear_error_before_any_work():
    ds, _ = _scan(geometry_in_file=False)
    stage = get_registry().stage("bragg.orthogonalize")()
    with pytest.raises(DataError, match=r"simulated_bragg\.h5.*delta_deg.*geometry"):
        stage(ds, {}, Context())
    flat = ds.assign_attrs(wavelength_m=1e-10, distance_m=0.5, pixel_size_m=55e-6,
                           delta_deg=30.0, gamma_deg=10.0, rocking_step_deg=0.0)
    with pytest.raises(DataError, match="rocking step is 0"):
        stage(flat, {}, Context())
    two_d = xr.Dataset({"obj": (("y", "x"), np.ones((8, 8), np.complex64)),
                        "support": (("y", "x"), np.ones((8, 8), bool))}, attrs=flat.attrs)
    with pytest.raises(DataError, match="3-D rocking-scan object"):
        stage(two_d, {"geometry": {"rocking_step_deg": 0.01}}, Context())
    with pytest.raises(PipelineError, match="rocking_axis"):
        Pipeline.load({"stages": [{"use": "bragg.orthogonalize",
                                   "with": {"geometry": {"rocking_axis": "w"}}}]})
    with pytest.raises(PipelineError, match="geometry"):
        Pipeline.load({"stages": [{"use": "bragg.orthogonalize",
                                   "with": {"geometry": {"delta": 3}}}]})


@pytest.mark.prefect
@pytest.mark.slow
def test_the_bcdi_template_runs_through_the_prefect_flow(tmp_path, prefect_server, capsys):
    from sipflow.cli import main
    from sipflow.io import open_result
    from sipflow.simulate import Simulation, write_scan

    scan = write_scan(tmp_path / "bragg.h5", Simulation(
        shape=(64, 128, 128), kind="crystal", photons=1e8, extent=0.25, delta_deg=32.174,
        gamma_deg=12.6346, rocking_step_deg=0.02, seed=1))
    out = tmp_path / "bragg.zarr"
    assert main(["run", "bcdi", str(scan), "-o", str(out), "--engine", "prefect",
                 "--seed", "1"]) == 0
    ds = open_result(out, verify=True)
    assert [s["use"] for s in ds.attrs["provenance"]["stages"]][-2:] == [
        "bragg.orthogonalize", "bragg.strain"]
    assert ds.x.attrs["units"] == "nm" and ds.strain.attrs["units"] == "1"
    assert ds.attrs["bragg_strain"]["interior_voxels"] > 100
    assert ds.attrs["bragg_geometry"]["rocking_step_deg"] == (
        pytest.approx(0.02))
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "crystal size" in shown and "RMS strain" in shown and " nm" in shown


def test_crystal_shape_cuts_a_blurred_box_at_half_height_and_drops_debris():
    from scipy import ndimage

    from sipflow.bragg._ortho_stage import crystal_shape

    box = np.zeros((40, 40, 40))
    box[10:30, 12:28, 8:32] = 1.0
    amp = ndimage.gaussian_filter(box, 1.2)
    amp[2, 2, 2] = 0.9  # a hot voxel apart from the crystal
    loose = ndimage.binary_dilation(amp > 0.05, iterations=2)
    shape = crystal_shape(amp, loose, 0.5)
    assert not shape[2, 2, 2], "debris outside the crystal is dropped"
    for axis, (lo, hi) in enumerate([(10, 30), (12, 28), (8, 32)]):
        other = tuple(a for a in range(3) if a != axis)
        got = np.flatnonzero(shape.any(axis=other))
        assert abs(got[0] - lo) <= 1 and abs(got[-1] + 1 - hi) <= 1, (axis, got[0], got[-1])


def test_crystal_size_finds_sub_voxel_edges_of_a_blurred_box():
    from scipy import ndimage

    from sipflow.bragg._ortho_stage import crystal_shape, crystal_size

    # a box whose faces lie between voxel centres: its true size is not a whole number of
    # voxels, which counting voxels of any binary cut cannot report
    n, spacing = 48, np.array([10.0, 8.0, 12.0])
    edges = [(-9.3, 8.2), (-5.2, 7.9), (-11.55, 10.25)]  # [voxels], (low, high) per axis
    fine = 8  # the box sampled on a grid 8× finer, then averaged: partial-volume voxels
    axes = [(np.arange(n * fine) + 0.5) / fine - 0.5 - n // 2 for _ in range(3)]
    inside = [((a >= lo) & (a <= hi)) for a, (lo, hi) in zip(axes, edges, strict=True)]
    box = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    amp = box.reshape(n, fine, n, fine, n, fine).mean(axis=(1, 3, 5))
    amp = ndimage.gaussian_filter(amp, 0.8) * 3.0 + 0.01  # a blurred edge, a floor of noise
    shape = crystal_shape(amp, amp > 0.3, 0.5)
    sizes = crystal_size(amp, shape, spacing, 0.5)
    truth = [(hi - lo) * s for (lo, hi), s in zip(edges, spacing, strict=True)]
    np.testing.assert_allclose(sizes, truth, atol=0.15 * spacing.min())
    # counting voxels of the binary shape is off by up to a voxel per side
    counted = [(np.ptp(ix) + 1) * s for ix, s in zip(np.nonzero(shape), spacing, strict=True)]
    assert max(abs(c - t) / s for c, t, s in zip(counted, truth, spacing, strict=True)) > 0.3
    assert crystal_size(amp, np.zeros_like(shape), spacing) == [0.0, 0.0, 0.0]
