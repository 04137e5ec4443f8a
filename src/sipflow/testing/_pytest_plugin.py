"""pytest fixtures for sipflow and plugin authors (loaded through ``pytest11``).

Kept import-light: sipflow itself is imported only when a fixture is used.
"""

from __future__ import annotations

import logging

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Keep standard log records in every test of a session where napari is installed.

    napari's pytest plugin installs, for the whole session, a log-record factory that
    turns every argument that is not a Python int or float into a string, so ``%d`` and
    ``%g`` messages with numpy scalars, and messages with a mapping argument, fail to
    format (and pytest's log capture turns that into a test error). Its fixture sets
    that factory up during setup; this puts the standard one back right after.
    """
    yield
    factory = logging.getLogRecordFactory()
    if getattr(factory, "__name__", "") == "LeakSafeLogRecord":
        logging.setLogRecordFactory(logging.LogRecord)


@pytest.fixture
def sipflow_dataset_2d():
    """A noiseless 32x32 simulated dataset with its truth (``obj_true``)."""
    from sipflow.testing import simulated_dataset

    return simulated_dataset((32, 32))


@pytest.fixture
def sipflow_dataset_3d():
    """A noiseless 24x24x24 simulated crystal with its truth."""
    from sipflow.testing import simulated_dataset

    return simulated_dataset((24, 24, 24))


@pytest.fixture
def sipflow_registry():
    """A freshly built plugin registry (built-ins and installed entry points)."""
    from sipflow.plugins import build_registry

    return build_registry()


def pytest_generate_tests(metafunc):
    """Run tests that use ``sipflow_device`` on the CPU, and on CUDA when there is one."""
    if "sipflow_device" in metafunc.fixturenames:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        metafunc.parametrize("sipflow_device", devices, indirect=True)


@pytest.fixture
def sipflow_device(request) -> str:
    """A torch device name: ``"cpu"``, and ``"cuda"`` too on a machine with a GPU.

    A test that takes this fixture runs once per device, so a plugin's stage is
    checked on the GPU wherever one is present and on the CPU everywhere.
    """
    return request.param


@pytest.fixture
def sipflow_plugins():
    """Build an isolated plugin registry: built-ins plus the plugins you pass.

    Installed entry points are not loaded, so a test sees exactly what it registers
    and nothing leaks into the process-wide registry::

        def test_my_reader(sipflow_plugins, tmp_path):
            reg = sipflow_plugins(my_plugin_module)
            ds = sipflow.load(path, registry=reg)
            pipe = sipflow.Pipeline.load(text, registry=reg)
    """
    from sipflow.plugins import build_registry

    def make(*plugins: object, entry_points: bool = False):
        return build_registry(load_entry_points=entry_points, extra=tuple(plugins))

    return make
