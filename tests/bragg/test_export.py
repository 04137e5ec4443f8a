"""``sipflow export``: a lab-frame result as a VTK image, read back with VTK's own reader."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from test_chain import SIZE, _scan

import sipflow
from sipflow.cli import main
from sipflow.io import export_vti, open_result, save

vtk_xml = pytest.importorskip("vtkmodules.vtkIOXML", reason="VTK (test extra) reads .vti back")


def _read_vti(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Grid and point arrays of a .vti file, arrays as (z, y, x) numpy arrays."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    reader = vtk_xml.vtkXMLImageDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    nx, ny, nz = image.GetDimensions()
    grid = {"dims": (nx, ny, nz), "spacing": image.GetSpacing(), "origin": image.GetOrigin()}
    points = image.GetPointData()
    arrays = {points.GetArrayName(i): vtk_to_numpy(points.GetArray(i)).reshape(nz, ny, nx)
              for i in range(points.GetNumberOfArrays())}
    return grid, arrays


@pytest.fixture(scope="module")
def strain_store(tmp_path_factory) -> tuple:
    ds, _ = _scan()
    out = sipflow.run_pipeline({"stages": [{"use": "bragg.orthogonalize"},
                                           {"use": "bragg.strain"}]}, ds, seed=0)
    path = save(out, tmp_path_factory.mktemp("export") / "crystal.zarr")
    return path, open_result(path, load=True)


def test_the_cli_writes_a_vti_that_vtk_reads_with_the_lab_grid_and_every_field(
        strain_store, tmp_path, capsys):
    path, ds = strain_store
    target = tmp_path / "crystal.vti"
    assert main(["export", str(path), "-o", str(target)]) == 0
    assert str(target) in capsys.readouterr().out
    grid, arrays = _read_vti(target)
    nz, ny, nx = ds.obj.shape
    assert grid["dims"] == (nx, ny, nz)  # VTK's X, Y, Z are the lab x, y, z
    voxel = ds.attrs["voxel_size_m"][0] * 1e9
    np.testing.assert_allclose(grid["spacing"], [voxel] * 3, rtol=1e-6)
    np.testing.assert_allclose(grid["origin"], [ds[d].values[0] for d in ("x", "y", "z")],
                               rtol=1e-6)
    assert {"amplitude", "phase", "support", "surface", "displacement", "strain"} <= set(arrays)
    np.testing.assert_allclose(arrays["amplitude"], np.abs(ds.obj.values), rtol=1e-6)
    np.testing.assert_array_equal(arrays["support"], ds.support.values.astype(np.uint8))
    np.testing.assert_array_equal(arrays["strain"], ds.strain.values)  # NaN where NaN
    np.testing.assert_array_equal(arrays["phase"], ds.phase.values)  # the ramp removed
    # the crystal in the file has its size in nm: the support's extent along x
    xs = np.flatnonzero(arrays["support"].any(axis=(0, 1)))
    assert abs((xs[-1] - xs[0] + 1) * grid["spacing"][0] - SIZE[2]) <= 2 * voxel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crystal.vti"]  # no leftovers


def test_export_refuses_to_overwrite_unasked_and_selects_variables(strain_store, tmp_path,
                                                                   capsys):
    path, _ = strain_store
    target = tmp_path / "crystal.vti"
    target.write_text("someone's file")
    assert main(["export", str(path), "-o", str(target)]) != 0
    assert "exists" in capsys.readouterr().err
    assert target.read_text() == "someone's file"
    assert main(["export", str(path), "-o", str(tmp_path / "strain"), "--vars", "strain",
                 "support"]) == 0
    _, arrays = _read_vti(tmp_path / "strain.vti")  # the suffix is added
    assert sorted(arrays) == ["strain", "support"]
    assert main(["export", str(path), "-o", str(target), "--vars", "strain",
                 "--overwrite"]) == 0
    assert sorted(_read_vti(target)[1]) == ["strain"]


def test_a_detector_frame_result_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    ds = xr.Dataset({"obj": (("y", "x"), np.ones((8, 8), np.complex64))},
                    attrs={"source": "scan.h5"})
    store = save(ds, tmp_path / "r.zarr")
    assert main(["export", str(store), "-o", str(tmp_path / "r.vti")]) != 0
    err = capsys.readouterr().err
    assert str(store) in err and "bragg.orthogonalize" in err and "('y', 'x')" in err
    assert not (tmp_path / "r.vti").exists()
    with pytest.raises(sipflow.errors.DataError, match="no coordinates in nm"):
        export_vti(xr.Dataset({"obj": (("z", "y", "x"), np.ones((4, 4, 4)))}),
                   tmp_path / "s.vti")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_export_refuses_a_path_inside_a_store_or_a_device_folder(strain_store, capsys):
    """Reliability round 3: ``export -o PATH`` wrote inside a store or under /dev."""
    path, _ = strain_store
    before = sorted(p.name for p in path.iterdir())
    assert main(["export", str(path), "-o", str(path / "obj" / "x.vti")]) == 2
    assert f"is inside the Zarr store {path}" in capsys.readouterr().err
    assert sorted(p.name for p in path.iterdir()) == before
    assert main(["export", str(path), "-o", "/dev/shm/sipflow-x.vti"]) == 2
    assert "not a folder for files" in capsys.readouterr().err
