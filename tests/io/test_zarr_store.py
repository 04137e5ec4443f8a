"""Result stores: round trip, completion marker, no overwrite unasked, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import sipflow
from sipflow.errors import OutputError
from sipflow.io import is_complete


def _result(seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    obj = (rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8))).astype(np.complex64)
    return xr.Dataset({"obj": (("y", "x"), obj), "support": (("y", "x"), np.abs(obj) > 1),
                       "llk": (("run", "iter"), rng.random((2, 3)).astype(np.float32))},
                      attrs={"metrics": {"error": np.float64(0.1), "shift_px": (1.0, 2.0)},
                             "provenance": {"seed": 3, "stages": [{"use": "x"}]}})


def test_round_trip_complex_and_attrs(tmp_path):
    ds = _result()
    path = sipflow.save(ds, tmp_path / "r.zarr")
    back = sipflow.open_result(path, load=True)
    assert back["obj"].dtype == np.complex64
    np.testing.assert_array_equal(back["obj"].values, ds["obj"].values)
    assert back["support"].dtype == bool
    assert back.attrs["metrics"] == {"error": 0.1, "shift_px": [1.0, 2.0]}
    meta = json.loads((path / "obj" / "zarr.json").read_text())
    assert meta["data_type"] == "complex64" and meta["dimension_names"] == ["y", "x"]
    assert is_complete(path)


def test_existing_output_is_not_overwritten_unasked(tmp_path):
    path = sipflow.save(_result(0), tmp_path / "r.zarr")
    with pytest.raises(OutputError, match=r"output exists.*--overwrite"):
        sipflow.save(_result(1), path)
    np.testing.assert_array_equal(sipflow.open_result(path)["obj"].values, _result(0)["obj"])
    sipflow.save(_result(1), path, overwrite=True)
    np.testing.assert_array_equal(sipflow.open_result(path)["obj"].values, _result(1)["obj"])


def test_failed_write_keeps_old_result_and_leaves_no_partial(tmp_path):
    path = sipflow.save(_result(0), tmp_path / "r.zarr")
    bad = _result(1).assign(junk=(("k",), np.array([object(), object()], dtype=object)))
    with pytest.raises(OutputError, match="dtype object"):
        sipflow.save(bad, path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]
    np.testing.assert_array_equal(sipflow.open_result(path)["obj"].values, _result(0)["obj"])


def test_incomplete_store_is_refused(tmp_path):
    path = tmp_path / "crashed.zarr"
    _result().to_zarr(path, zarr_format=3)  # written, but never marked complete
    assert not is_complete(path)
    with pytest.raises(OutputError, match="incomplete sipflow store"):
        sipflow.open_result(path)
    with pytest.raises(OutputError, match="not a Zarr v3 store"):
        sipflow.open_result(tmp_path)


def test_unwritable_output(tmp_path):
    with pytest.raises(OutputError, match="not writable"):
        sipflow.save(_result(), "/proc/sipflow-result.zarr")
    with pytest.raises(OutputError, match="does not exist"):
        sipflow.save(_result(), tmp_path / "no" / "such" / "dir.zarr")


@pytest.mark.parametrize("checksums", [{"../../outside": "0" * 64}, {"/": "0" * 64},
                                       {"": "0" * 64}, "notadict", [1, 2]])
def test_tampered_checksum_keys_are_refused_without_reading_outside(tmp_path, checksums):
    """Keys of sipflow_checksums must name arrays of the store: a key such as ``../../x``
    or ``/`` would make verification hash trees outside it (the whole file system)."""
    from sipflow.cli import main
    from sipflow.io import verify_store

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"x" * 100)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    store = sipflow.save(_result(), tmp_path / "deep" / "er" / "r.zarr")
    if isinstance(checksums, dict) and "../../outside" in checksums:
        checksums = {"../../../outside": "0" * 64}  # from the store: tmp_path/outside
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["sipflow_checksums"] = checksums
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(OutputError, match="cannot be verified"):  # not "do not match"
        verify_store(store)
    assert main(["evaluate", str(store)]) == 2


@pytest.mark.parametrize(("key", "value", "says"), [
    ("provenance", [1, 2], "provenance is a list, expected a mapping"),
    ("provenance", {"stages": "x"}, "provenance.stages is not a list of mappings"),
    ("metrics", "x", "metrics is a str, expected a mapping"),
])
def test_structurally_wrong_metadata_is_named(tmp_path, key, value, says, capsys):
    """Reliability round 3, defect 17: a store's provenance [1, 2] gave internal errors."""
    from sipflow.cli import main

    store = sipflow.save(_result(), tmp_path / "r.zarr")
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"][key] = value
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(OutputError, match=says):
        sipflow.io.open_result(store)
    assert main(["evaluate", str(store)]) == 2
    assert says in capsys.readouterr().err
