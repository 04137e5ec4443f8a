"""The plugin manager: built-ins via the same hooks, entry points, broken plugins skipped."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sipflow.plugins import build_registry


def test_builtins_registered_through_hooks():
    reg = build_registry(load_entry_points=False)
    assert {"prep.standard", "phase.classic", "analyse.metrics"} <= set(reg.stages)
    assert [r.name for r in reg.readers] == ["hdf5", "spec", "frames"]
    assert list(reg.beamlines) == ["aps-34idc", "id01", "p10", "nanomax"]
    assert {"default", "cdi", "bcdi"} <= set(reg.templates)
    assert all(p.origin == "builtin" and p.error is None for p in reg.plugins)


def _fake_dist(root, name, module, source):
    """Install a plugin distribution by hand: a module plus a dist-info with an entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[sipflow]\n{name} = {module}\n")


@pytest.fixture
def plugin_path(tmp_path):
    _fake_dist(tmp_path, "broken", "sipflow_broken_plugin", "raise RuntimeError('boom')\n")
    _fake_dist(tmp_path, "misspelled", "sipflow_misspelled", """
        from sipflow import hookimpl

        @hookimpl
        def sipflow_stagez():
            return []
    """)
    _fake_dist(tmp_path, "dupe", "sipflow_dupe", """
        from sipflow import hookimpl
        from sipflow.reconstruct import Classic

        class Again(Classic):
            pass

        @hookimpl
        def sipflow_stages():
            return [Again]
    """)
    return tmp_path


def _plugins_json(plugin_path, **env):
    import os

    out = subprocess.run([sys.executable, "-m", "sipflow.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True,
                         env=os.environ | {"PYTHONPATH": str(plugin_path)} | env)
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_broken_plugins_are_reported_and_skipped(plugin_path):
    plugins = _plugins_json(plugin_path)
    assert plugins["broken"]["error"] == "RuntimeError: boom"
    assert "sipflow_stagez" in plugins["misspelled"]["error"]
    assert "provided by both" in plugins["dupe"]["error"]
    assert plugins["sipflow.reconstruct._stage"]["stages"] == ["phase.classic"]
    assert plugins["broken"]["origin"] == "entry point of broken"


def test_allow_list(plugin_path):
    plugins = _plugins_json(plugin_path, SIPFLOW_LOAD_PLUGINS="broken")
    assert "broken" in plugins and "dupe" not in plugins and "misspelled" not in plugins


def test_bad_hook_result_is_a_plugin_error():
    class Bad:
        __name__ = "bad"

        from sipflow import hookimpl

        @hookimpl
        def sipflow_stages(self):
            return [object]

    reg = build_registry(load_entry_points=False, extra=(Bad(),))
    failed = {p.name: p.error for p in reg.failures}
    assert "expected subclasses of sipflow.Stage" in failed["bad"]
    assert "phase.classic" in reg.stages, "the other plugins still load"


def test_import_sipflow_stays_light():
    code = ("import sys, sipflow; "
            "print(sorted(m for m in ('torch', 'prefect', 'napari', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_hooks_are_called_through_pluggy(sipflow_plugins):
    """A hook wrapper sees the calls: sipflow does not bypass pluggy's machinery."""
    import pluggy

    calls = []

    class Spy:
        @pluggy.HookimplMarker("sipflow")(wrapper=True)
        def sipflow_stages(self):
            calls.append("stages")
            return (yield)

    reg = sipflow_plugins(Spy())
    assert "phase.classic" in reg.stages
    assert calls, "the wrapper ran around the stages hook"


def test_reader_protocol_is_what_readers_follow():
    from sipflow.io import HDF5Reader, Reader

    assert isinstance(HDF5Reader(), Reader)
    assert {"dataset", "mask"} <= set(HDF5Reader.options)


def test_an_isolated_registry_validates_and_runs_its_own_constraint_and_group(sipflow_plugins):
    """Pipeline.load(text, registry=reg) checks constraint and group names against `reg`.

    The constraint and group here exist only in the isolated registry: the process-wide
    one refuses the same text, and the run uses `reg` for the group (through Context).
    """
    import numpy as np
    import xarray as xr
    from sipflow_hotpixels import MirrorX, ZeroMeanPhase

    import sipflow
    from sipflow import hookimpl, schema
    from sipflow.errors import PipelineError

    class OnlyHereMirror(MirrorX):
        name = "only_here_mirror"

    class OnlyHereZeroPhase(ZeroMeanPhase):
        name = "only_here_zero_phase"

    class Plugin:
        @hookimpl
        def sipflow_constraints(self):
            return [OnlyHereZeroPhase]

        @hookimpl
        def sipflow_symmetry_groups(self):
            return [OnlyHereMirror()]

    reg = sipflow_plugins(Plugin())
    assert {"farfield", "sign", "only_here_mirror"} <= set(reg.groups)  # built-ins by hook too
    constraint = ("stages: [{use: refine.constrained, with: {constraints: "
                  "[support, only_here_zero_phase]}}]")
    group = "stages: [{use: symmetry.canonicalize, with: {group: only_here_mirror}}]"
    for text, name in ((constraint, "only_here_zero_phase"), (group, "only_here_mirror")):
        assert sipflow.Pipeline.load(text, registry=reg).registry is reg
        with pytest.raises(PipelineError, match=name):  # the process-wide one lacks it
            sipflow.Pipeline.load(text)
    # the stage run gets the pipeline's registry: the group is found there
    canon = sipflow.Pipeline.load(group, registry=reg)
    x = np.zeros((16, 16), np.complex64)
    x[6:9, 2:5] = 1  # mass left of centre: the canonical form mirrors it
    ds = xr.Dataset({schema.OBJ: (schema.real_dims(2), x)})
    out = sipflow.run_pipeline(canon, ds, device="cpu", seed=0)
    assert out.attrs["symmetry_canonicalize"]["group"] == "only_here_mirror"
    assert out.attrs["symmetry_canonicalize"]["obj"]["element"] == {"mirrored": True}
