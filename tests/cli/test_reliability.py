"""Nothing lost, nothing orphaned, no internal errors: bad input, faults and load, both engines.

Every bad input is run through the real CLI under ``--engine local`` and
``--engine prefect`` and must give: the documented exit status, one paragraph that
names the file / array / parameter, no traceback, no "internal error", and nothing
written or changed next to the output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FAST_PIPELINE

import sipflow
from sipflow.errors import OutputError

ENGINES = ["local", "prefect"]


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "sipflow.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _cxi(path: Path, data, mask=None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=data)
        if mask is not None:
            f.create_dataset("entry_1/instrument_1/detector_1/mask", data=mask)
    return path


def _good(shape=(64, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.poisson(50, size=shape).astype(np.float32)


def _pipeline(tmp: Path, text: str, name="p.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def _bad_pipeline(text: str):
    """A case whose input is fine and whose pipeline text is not."""
    def build(t):
        return _cxi(t / "ok.h5", _good()), _pipeline(t, text), []

    return build


#: a pipeline whose one stage is phase.classic, its parameters to be appended
CLASSIC = "stages:\n  - use: phase.classic\n    with: "


# --- each case: builds (input, pipeline, extra args) in tmp; expected (status, message) ---

def _nan(t):
    d = _good()
    d[3, 4] = np.nan
    return _cxi(t / "nan.h5", d), "default", []


def _negative(t):
    d = _good()
    d[5, 6] = -3
    return _cxi(t / "neg.h5", d), "default", []


def _zero(t):
    return _cxi(t / "zero.h5", np.zeros((64, 64), np.float32)), "default", []


def _one_d(t):
    return _cxi(t / "oned.h5", np.ones(4096, np.float32)), "default", []


def _four_d(t):
    return _cxi(t / "fourd.h5", np.ones((2, 2, 16, 16), np.float32)), "default", []


def _bad_mask(t):
    return _cxi(t / "mask.h5", _good(), mask=np.zeros((32, 32), np.uint8)), "default", []


def _complex(t):
    return _cxi(t / "cplx.h5", _good().astype(np.complex64)), "default", []


def _tiny(t):
    return _cxi(t / "tiny.h5", np.ones((4, 4), np.float32)), "default", []


def _text(t):
    p = t / "text.h5"
    p.write_text("not hdf5 at all")
    return p, "default", []


def _truncated(t, scans=None):
    src = _cxi(t / "full.h5", np.random.default_rng(1).poisson(5, (16, 64, 64)).astype("f4"))
    data = src.read_bytes()
    p = t / "truncated.h5"
    p.write_bytes(data[: len(data) // 2])
    src.unlink()
    return p, "default", []


def _directory(t):
    d = t / "adir.h5"
    d.mkdir()
    return d, "default", []


def _missing(t):
    return t / "missing.h5", "default", []


def _dangling(t):
    p = t / "dangling.h5"
    with h5py.File(p, "w") as f:
        f["entry_1/data_1/data"] = h5py.ExternalLink("gone.h5", "/data")
    return p, "default", []


def _eiger_missing(t):
    p = t / "master.h5"
    with h5py.File(p, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink("master_data_000001.h5", "/entry/data/data")
    return p, "default", []


def _ambiguous(t):
    p = t / "two.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=_good())
        f.create_dataset("entry_2/data_1/data", data=_good())
    return p, "default", []


def _no_such_dataset(t):
    return _cxi(t / "ok.h5", _good()), "default", ["--dataset", "/nope"]


def _huge(t):
    p = t / "huge.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", shape=(100000, 4096, 4096), dtype="u4",
                         chunks=(1, 256, 256))
    return p, "default", []


def _too_many_runs(t):
    p = t / "big2d.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", shape=(2048, 2048), dtype="f4",
                         chunks=(256, 256))
    pipe = _pipeline(t, "stages:\n  - use: phase.classic\n    with: {runs: 1024}\n")
    return p, pipe, []


def _bad_device(t):
    return _cxi(t / "ok.h5", _good()), "default", ["--device", "gpu9"]


def _cuda_missing(t):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the case is about machines without one")
    return _cxi(t / "ok.h5", _good()), "default", ["--device", "cuda"]


def _pipeline_is_dir(t):
    d = t / "pipe.yaml"
    d.mkdir()
    return _cxi(t / "ok.h5", _good()), d, []


def _output_is_input(t):
    p = _cxi(t / "ok.h5", _good())
    return p, "default", ["-o", p, "--overwrite"]


def _output_contains_input(t):
    p = _cxi(t / "ok.h5", _good())
    return p, "default", ["-o", t, "--overwrite"]


def _overwrite_foreign_dir(t):
    d = t / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    return _cxi(t / "ok.h5", _good()), "default", ["-o", d, "--overwrite"]


def _output_exists(t):
    (t / "o.zarr").mkdir()
    return _cxi(t / "ok.h5", _good()), "default", []


def _output_parent_missing(t):
    return _cxi(t / "ok.h5", _good()), "default", ["-o", t / "no" / "such" / "o.zarr"]


def _output_unwritable(t):
    return _cxi(t / "ok.h5", _good()), "default", ["-o", "/proc/sipflow-o.zarr"]


def _dataset_is_group(t):
    return _cxi(t / "ok.h5", _good()), "default", ["--dataset", "/entry_1"]


def _dark_shape(t):
    p = t / "dark.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=_good())
        f.create_dataset("entry_1/instrument_1/detector_1/data_dark", data=np.ones((16, 16)))
    return p, _pipeline(t, "input: {dark: /entry_1/instrument_1/detector_1/data_dark}\n"
                           "stages:\n  - use: prep.standard\n"), []


def _nan_in_3d(t):
    d = np.random.default_rng(0).poisson(20, (6, 32, 32)).astype(np.float32)
    d[4, 10, 11] = np.inf
    return _cxi(t / "stack.h5", d), "default", []


def _mask_all_bad(t):
    return _cxi(t / "masked.h5", _good(), mask=np.ones((64, 64), np.uint8)), "default", []


def _string_dataset(t):
    p = t / "strings.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=np.array([b"a"] * 64))
    return p, "default", []


def _empty_file(t):
    p = t / "empty.h5"
    p.write_bytes(b"")
    return p, "default", []


def _hdf5_without_frames(t):
    p = t / "noframes.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("entry/sample/temperature", data=300.0)
    return p, "default", []


def _broken_link_input(t):
    p = t / "link.h5"
    p.symlink_to(t / "nowhere.h5")
    return p, "default", []


CASES = {
    # name: (builder, exit status, message fragments)
    "nan": (_nan, 2, ["nan.h5", "NaN or Inf", "intensity"]),
    "negative": (_negative, 2, ["neg.h5", "negative", "intensity"]),
    "all-zero": (_zero, 2, ["zero.h5", "zero on every valid pixel"]),
    "1-d": (_one_d, 2, ["oned.h5", "(4096,)", "expected a 2-D"]),
    "4-d": (_four_d, 2, ["fourd.h5", "4-D"]),
    "mask-shape": (_bad_mask, 2, ["mask.h5", "mask", "(32, 32)", "expected the detector shape"]),
    "complex": (_complex, 2, ["cplx.h5", "complex64", "expected real photon counts"]),
    "tiny-frames": (_tiny, 2, ["tiny.h5", "at least 8x8"]),
    "not-hdf5": (_text, 2, ["text.h5", "not an HDF5 file"]),
    "truncated": (_truncated, 2, ["truncated.h5", "truncated"]),
    "directory": (_directory, 2, ["adir.h5", "is a directory"]),
    "missing": (_missing, 2, ["missing.h5", "no such file"]),
    "dangling-link": (_dangling, 2, ["dangling.h5", "gone.h5", "missing"]),
    "eiger-missing-data": (_eiger_missing, 2, ["master.h5", "master_data_000001.h5"]),
    "ambiguous": (_ambiguous, 2, ["two.h5", "several datasets", "--dataset"]),
    "no-such-dataset": (_no_such_dataset, 2, ["ok.h5", "'/nope' not found"]),
    "huge-declared": (_huge, 2, ["huge.h5", "(100000, 4096, 4096)", "available"]),
    "memory-estimate": (_too_many_runs, 2, ["phase.classic", "needs about", "free"]),
    "bad-yaml": (_bad_pipeline("stages: [\n  - use: x\n"), 2, ["p.yaml", "invalid YAML"]),
    "unknown-stage": (_bad_pipeline("stages:\n  - use: phase.clasic\n"),
        2, ["p.yaml", "phase.clasic", "phase.classic"]),
    "unknown-param": (_bad_pipeline(CLASSIC + "{rnus: 3}"), 2, ["p.yaml", "rnus", "runs"]),
    "out-of-range": (_bad_pipeline(CLASSIC + "{runs: 0}"),
        2, ["p.yaml", "runs", "greater than or equal to 1"]),
    "bad-schedule": (_bad_pipeline(CLASSIC + "{schedule: 'HIO**'}"),
        2, ["p.yaml", "phase.classic", "schedule", "HIO**"]),
    "endless-schedule": (_bad_pipeline(CLASSIC + "{schedule: 'ER**1000000000'}"),
        2, ["p.yaml", "schedule", "1,000,000,000"]),
    "deep-schedule": (_bad_pipeline(CLASSIC + "{schedule: '" + "(" * 500 + "ER" + ")" * 500 + "'}"),
        2, ["p.yaml", "schedule", "nested deeper"]),
    "unknown-input-key": (_bad_pipeline("input: {datset: /entry_1/data_1/data}\n"
                                        "stages:\n  - use: prep.standard\n"),
        2, ["p.yaml", "datset", "dataset"]),
    "bad-device": (_bad_device, 2, ["gpu9", "torch device"]),
    "cuda-missing": (_cuda_missing, 2, ["cuda", "no usable CUDA device"]),
    "pipeline-is-dir": (_pipeline_is_dir, 2, ["pipe.yaml", "not found"]),
    "output-is-input": (_output_is_input, 2, ["ok.h5", "is the input"]),
    "output-contains-input": (_output_contains_input, 2, ["contain", "ok.h5"]),
    "overwrite-foreign-dir": (_overwrite_foreign_dir, 2, ["precious", "not a sipflow result"]),
    "output-exists": (_output_exists, 2, ["o.zarr", "output exists"]),
    "output-parent-missing": (_output_parent_missing, 2, ["does not exist"]),
    "output-unwritable": (_output_unwritable, 2, ["sipflow-o.zarr"]),
    "dataset-is-group": (_dataset_is_group, 2, ["ok.h5", "'/entry_1' not found"]),
    "dark-shape": (_dark_shape, 2, ["dark.h5", "data_dark", "(16, 16)", "detector shape"]),
    "unknown-reader": (_bad_pipeline("input: {reader: tiff}\nstages:\n  - use: prep.standard\n"),
        2, ["tiff", "hdf5"]),
    "empty-stages": (_bad_pipeline("stages: []\n"), 2, ["p.yaml", "non-empty list"]),
    "unknown-top-key": (_bad_pipeline("stagse:\n  - use: prep.standard\n"),
        2, ["p.yaml", "stagse"]),
    "with-not-mapping": (_bad_pipeline(CLASSIC + "[1, 2]"),
        2, ["p.yaml", "phase.classic", "mapping"]),
    "keep-best-too-many": (_bad_pipeline(CLASSIC + "{runs: 2, keep_best: 3}"),
        2, ["p.yaml", "keep_best (3)", "runs (2)"]),
    "support-threshold-order": (_bad_pipeline(CLASSIC + "{support_threshold: [0.3, 0.1]}"),
        2, ["p.yaml", "support_threshold"]),
    "bad-generation-schedule": (_bad_pipeline(
        CLASSIC + "{generations: 2, generation_schedules: ['HIO * * ER']}"),
        2, ["p.yaml", "generation_schedules"]),
    "wrong-type-param": (_bad_pipeline(CLASSIC + "{runs: many}"), 2, ["p.yaml", "runs", "'many'"]),
    "step-unknown-key": (_bad_pipeline("stages:\n  - use: phase.classic\n    wiht: {runs: 2}\n"),
        2, ["p.yaml", "wiht"]),
    "inf-in-3d": (_nan_in_3d, 2, ["stack.h5", "NaN or Inf", "(4, 10, 11)"]),
    "mask-all-bad": (_mask_all_bad, 2, ["masked.h5", "zero on every valid pixel"]),
    "string-frames": (_string_dataset, 2, ["strings.h5"]),
    "empty-file": (_empty_file, 2, ["empty.h5", "not an HDF5 file"]),
    "no-frames": (_hdf5_without_frames, 2, ["noframes.h5", "no detector frames",
                                            "temperature"]),
    "broken-symlink-input": (_broken_link_input, 2, ["link.h5", "nowhere.h5",
                                                      "does not exist"]),
}


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.lstat().st_mtime for p in folder.rglob("*")}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, engine, tmp_path, prefect_server, capsys):
    """The real CLI entry point, in this process (the same code as the `sipflow` command;
    the cases that need processes of their own are below)."""
    from sipflow.cli import main

    build, status, fragments = CASES[case]
    inp, pipe, extra = build(tmp_path)
    args = ["run", pipe, inp, *extra]
    if "-o" not in extra:
        args += ["-o", tmp_path / "o.zarr"]
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main([str(a) for a in [*args, "--engine", engine]])
    err = capsys.readouterr().err
    assert code == status, (code, err)
    assert err.startswith("sipflow: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1, f"one paragraph, got:\n{err}"
    assert _snapshot(tmp_path) == before, "nothing created, changed or deleted"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", ["nan", "truncated", "output-is-input", "bad-schedule"])
def test_bad_input_as_a_command(case, engine, tmp_path, prefect_server):
    """A few of the cases through the installed command, in a process of its own."""
    build, status, fragments = CASES[case]
    inp, pipe, extra = build(tmp_path)
    args = ["run", pipe, inp, *extra]
    if "-o" not in extra:
        args += ["-o", tmp_path / "o.zarr"]
    before = _snapshot(tmp_path)
    out = cli(*args, "--engine", engine)
    assert out.returncode == status, (out.returncode, out.stderr)
    assert all(f in out.stderr for f in fragments), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_permission_denied_is_named(engine, tmp_path, prefect_server):
    scan = _cxi(tmp_path / "secret.h5", _good())
    scan.chmod(0o000)
    prefix = []
    if os.geteuid() == 0:  # root reads anything; drop the capabilities that allow it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    out = subprocess.run([*prefix, sys.executable, "-m", "sipflow.cli", "run", "default", scan,
                          "-o", tmp_path / "o.zarr", "--engine", engine],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "secret.h5: permission denied" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.zarr").exists()


# --- plugins that misbehave -------------------------------------------------------------

def _plugin_env(tmp_path, source: str) -> dict[str, str]:
    from test_plugins import _fake_dist

    root = tmp_path / "site"
    root.mkdir()
    _fake_dist(root, "naughty", "sipflow_naughty", textwrap.dedent(source))
    return os.environ | {"PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.parametrize("engine", ENGINES)
def test_stage_returning_the_wrong_type_is_named(engine, tmp_path, scans, prefect_server):
    env = _plugin_env(tmp_path, """
        from sipflow import Stage, StageParams, hookimpl

        class Bad(Stage):
            name = "prep.naughty"
            version = "1"
            Params = StageParams

            def run(self, ds, params, context):
                return ds.intensity.values

        @hookimpl
        def sipflow_stages():
            return [Bad]
    """)
    pipe = _pipeline(tmp_path, "stages:\n  - use: prep.naughty\n")
    out = cli("run", pipe, scans["2d"], "-o", tmp_path / "o.zarr", "--engine", engine, env=env)
    assert out.returncode == 2, out.stderr
    assert "stage 'prep.naughty'" in out.stderr and "returned ndarray" in out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.zarr").exists()
    assert not Path(str(tmp_path / "o.zarr") + ".sipflow-work").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_reader_whose_can_read_raises_is_skipped_and_named(engine, tmp_path, scans,
                                                            prefect_server):
    env = _plugin_env(tmp_path, """
        from sipflow import hookimpl

        class Grumpy:
            name = "grumpy"
            options = ()

            def can_read(self, path):
                raise RuntimeError("I never expected a file")

            def read(self, path, **options):
                raise AssertionError("never called")

        @hookimpl
        def sipflow_readers():
            return [Grumpy()]
    """)
    out = cli("run", FAST_PIPELINE_FILE(tmp_path), scans["2d"], "-o", tmp_path / "o.zarr",
              "--engine", engine, "--seed", 1, env=env)
    assert out.returncode == 0, out.stderr
    assert "reader 'grumpy' of plugin 'naughty' failed" in out.stderr
    assert sipflow.open_result(tmp_path / "o.zarr")["obj"].shape == (64, 64)


def FAST_PIPELINE_FILE(tmp_path: Path) -> Path:
    return _pipeline(tmp_path, FAST_PIPELINE, "fast.yaml")


# --- data loss ---------------------------------------------------------------------------

def test_two_writers_of_one_output_never_both_succeed(tmp_path, scans):
    out = tmp_path / "same.zarr"
    pipe = FAST_PIPELINE_FILE(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "sipflow.cli", "run", pipe, scans["2d"],
                               "-o", out, "--engine", "local", "--seed", str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(e for c, e in results if c == 2)
    assert "another sipflow process" in loser or "appeared" in loser, loser
    winner_seed = 1 if results[0][0] == 0 else 2
    ds = sipflow.open_result(out, verify=True)
    assert ds.attrs["provenance"]["seed"] == winner_seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.yaml", "same.zarr"]


def test_the_final_rename_never_replaces_a_store_that_appeared(tmp_path):
    import xarray as xr

    from sipflow.io import OutputLock

    ds = xr.Dataset({"obj": (("y", "x"), np.ones((4, 4), np.complex64))})
    target = tmp_path / "r.zarr"
    first = sipflow.save(ds, target)
    # the same check that save() does last, against a store that appeared meanwhile
    from sipflow.io._fs import rename_noreplace

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FileExistsError):
        rename_noreplace(other, first)
    assert sipflow.open_result(first, verify=True)["obj"].shape == (4, 4)
    with OutputLock(tmp_path / "locked.zarr"):
        code = ("import sipflow, xarray as xr, numpy as np; sipflow.save(xr.Dataset("
                "{'a': ('x', np.ones(3))}), r'%s')" % (tmp_path / "locked.zarr"))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert res.returncode != 0 and "another sipflow process" in res.stderr
    assert not (tmp_path / "locked.zarr").exists()
    assert not list(tmp_path.glob(".*lock"))


def test_corrupted_chunk_is_detected(tmp_path, scans):
    out = tmp_path / "r.zarr"
    res = cli("run", FAST_PIPELINE_FILE(tmp_path), scans["2d"], "-o", out, "--engine", "local",
              "--seed", 1)
    assert res.returncode == 0, res.stderr
    chunk = next(p for p in sorted((out / "obj").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    ev = cli("evaluate", out)
    assert ev.returncode == 2, ev.stdout
    assert "obj" in ev.stderr and "do not match the checksums" in ev.stderr
    with pytest.raises(OutputError, match="do not match"):
        sipflow.open_result(out, verify=True)


def test_stale_partial_of_a_killed_run_is_removed(tmp_path):
    import xarray as xr

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".r.zarr.partial-{dead.pid}-0123abcd"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    alive = tmp_path / f".r.zarr.partial-{os.getpid()}-0123abcd"
    alive.mkdir()  # a writer that is still running keeps its folder
    sipflow.save(xr.Dataset({"a": ("x", np.ones(3))}), tmp_path / "r.zarr")
    assert not stale.exists() and alive.exists()


def test_disk_full_names_the_path_and_keeps_the_old_result(tmp_path):
    import xarray as xr

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        small = xr.Dataset({"a": ("x", np.ones(8))})
        sipflow.save(small, mnt / "r.zarr")
        big = xr.Dataset({"a": ("x", np.random.default_rng(0).random(200_000))})
        with pytest.raises(OutputError, match=r"r\.zarr: cannot write the store: no space left"):
            sipflow.save(big, mnt / "r.zarr", overwrite=True)
        assert sipflow.open_result(mnt / "r.zarr", verify=True)["a"].shape == (8,)
        assert sorted(p.name for p in mnt.iterdir()) == ["r.zarr"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- the embedded Prefect server ------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _no_api_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return env | {"PREFECT_HOME": str(home)}


@pytest.mark.slow
def test_kill_9_leaves_no_server_behind(tmp_path, scans):
    pipe = _pipeline(tmp_path, FAST_PIPELINE.replace("**12", "**2000"))
    proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "run", pipe, scans["2d"], "-o",
                             tmp_path / "o.zarr", "--seed", "1"],
                            env=_no_api_env(Path(os.environ["PREFECT_HOME"])),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    deadline = time.time() + 120
    while server is None and time.time() < deadline and proc.poll() is None:
        server = next((c for c in _children(proc.pid) if "uvicorn" in _cmdline(c)), None)
        time.sleep(0.2)
    assert server is not None, "the embedded server was started as a child"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while Path(f"/proc/{server}").exists() and time.time() < deadline:
        time.sleep(0.2)
        try:
            os.waitpid(server, os.WNOHANG)
        except ChildProcessError:
            pass
    state = Path(f"/proc/{server}/stat")
    alive = state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    assert not alive, "the server outlived sipflow"


def test_server_start_timeout_is_a_clear_error_and_leaves_nothing(tmp_path, scans):
    env = _no_api_env(Path(os.environ["PREFECT_HOME"])) | {"SIPFLOW_PREFECT_STARTUP_S": "1"}
    before = {p for p in Path("/proc").glob("[0-9]*") if "uvicorn" in _cmdline(int(p.name))}
    out = cli("run", FAST_PIPELINE_FILE(tmp_path), scans["2d"], "-o", tmp_path / "o.zarr",
              env=env)
    assert out.returncode == 4, out.stderr
    assert "embedded Prefect server could not be started" in out.stderr
    assert "SIPFLOW_PREFECT_STARTUP_S" in out.stderr and "internal error" not in out.stderr
    time.sleep(0.5)
    after = {p for p in Path("/proc").glob("[0-9]*") if "uvicorn" in _cmdline(int(p.name))}
    assert after <= before, "no server left running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.yaml"]


def test_resume_without_seed_reuses_the_drawn_seed(tmp_path, scans, prefect_server):
    from sipflow.errors import ReconstructionError
    from sipflow.orchestration import process_scan

    out = tmp_path / "resume.zarr"
    bad = FAST_PIPELINE.replace("runs: 4", "runs: 2, shrinkwrap_threshold: 5")
    with pytest.raises(ReconstructionError):
        process_scan(str(scans["2d"]), bad, str(out))
    work = Path(str(out) + ".sipflow-work")
    drawn = json.loads((work / "seed.json").read_text())["seed"]
    res = process_scan(str(scans["2d"]), FAST_PIPELINE, str(out))
    prov = sipflow.open_result(res["output"]).attrs["provenance"]
    assert prov["seed"] == drawn
    assert [s["reused"] for s in prov["stages"]] == [True, False, False]
    assert not work.exists()


def test_failed_input_leaves_no_work_folder(tmp_path, prefect_server):
    from sipflow.errors import DataError
    from sipflow.orchestration import process_scan

    d = _good()
    d[0, 0] = np.nan
    scan = _cxi(tmp_path / "nan.h5", d)
    with pytest.raises(DataError, match="NaN"):
        process_scan(str(scan), FAST_PIPELINE, str(tmp_path / "o.zarr"), seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.h5"]


def test_empty_frames_are_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.poisson(20, (8, 32, 32)).astype(np.float32)
    stack[[2, 5]] = 0
    scan = _cxi(tmp_path / "stack.h5", stack)
    pipe = _pipeline(tmp_path, "stages:\n  - use: prep.standard\n")
    out = cli("run", pipe, scan, "-o", tmp_path / "o.zarr", "--engine", "local")
    assert out.returncode == 0, out.stderr
    assert "2 of 8 frames of intensity are zero everywhere (frame 2, 5)" in out.stderr


# --- limits at validation -------------------------------------------------------------------

@pytest.mark.parametrize("schedule, message", [
    ("ER**1000000000", "at most 1,000,000 iterations"),
    ("(" * 200 + "ER" + ")" * 200, "nested deeper than 32"),
    ("ER * " * 1000 + "ER", "longer than the 2000 allowed"),
])
def test_validate_bounds_schedules(tmp_path, schedule, message):
    pipe = _pipeline(tmp_path, "stages:\n  - use: phase.classic\n"
                               f"    with: {{schedule: '{schedule}'}}\n")
    out = cli("validate", pipe)
    assert out.returncode == 2 and message in out.stderr and "p.yaml" in out.stderr, out.stderr
    assert "schedule" in out.stderr and "Traceback" not in out.stderr


# --- threads under load -------------------------------------------------------------------

def test_concurrent_runs_share_the_cores(tmp_path):
    """Runs computing at the same time split the cores; a lone run uses them all."""
    code = textwrap.dedent("""
        import sys, time, torch
        from sipflow._resources import cpu_threads, rebalance_threads, usable_cores
        with cpu_threads() as n:
            print(n, usable_cores(), flush=True)
            time.sleep(float(sys.argv[1]))
            rebalance_threads()
            print(torch.get_num_threads(), flush=True)
    """)
    env = os.environ | {"SIPFLOW_TOKEN_DIR": str(tmp_path / "tokens")}
    env.pop("SIPFLOW_NUM_THREADS", None)
    first = subprocess.Popen([sys.executable, "-c", code, "8"], stdout=subprocess.PIPE,
                             text=True, env=env)
    n1, cores = map(int, first.stdout.readline().split())
    assert n1 == cores, "alone, a run uses every core it may run on"
    second = subprocess.Popen([sys.executable, "-c", code, "10"], stdout=subprocess.PIPE,
                              text=True, env=env)
    n2 = int(second.stdout.readline().split()[0])
    later1 = int(first.stdout.readline())
    first.wait()
    later2 = int(second.stdout.readline())
    second.wait()
    assert n2 == max(1, cores // 2), "the second run takes its share"
    assert later1 == max(1, cores // 2), "the first run gives cores back when it recounts"
    assert later2 == cores, "and the second takes them when the first has finished"


@pytest.mark.slow
def test_readme_quick_start_under_a_cpu_hog(tmp_path):
    """`sipflow demo` (what `make demo` runs) next to two busy processes, fresh Prefect home.

    A fresh home makes the embedded server migrate its database first: the slowest start.
    """
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        env = _no_api_env(tmp_path / "prefect-home")
        t0 = time.time()
        out = cli("demo", "--out", tmp_path / "demo", env=env, timeout=900)
        took = time.time() - t0
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Error logging to API" not in out.stderr
    ds = sipflow.open_result(tmp_path / "demo" / "demo_result.zarr", verify=True)
    assert ds.attrs["metrics"]["error"] < 0.05
    assert ds.attrs["provenance"]["engine"] == "prefect"
    print(f"demo under two CPU hogs: {took:.0f} s")
