"""pytest fixtures for sipflow and plugin authors (loaded through ``pytest11``).

Kept import-light: sipflow itself is imported only when a fixture is used.
"""

from __future__ import annotations

import pytest


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
