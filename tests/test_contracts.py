"""Every registered group, constraint and reader honours its contract (built-ins and plugins).

The checks are :mod:`sipflow.testing`'s, the ones a plugin author runs on their own.
"""

from __future__ import annotations

import numpy as np
import pytest

from sipflow.plugins import get_registry
from sipflow.simulate import Simulation, write_scan
from sipflow.testing import (
    assert_constraint_contract,
    assert_group_contract,
    assert_reader_contract,
    refine_problem,
)

REGISTRY = get_registry()
#: parameters a constraint needs beyond its defaults to apply to the test problem
CONSTRAINT_PARAMS = {"tv": {"relative": 1.0}, "phase_smoothness": {"relative": 1.0}}


@pytest.mark.parametrize("name", sorted(REGISTRY.groups))
def test_group_contract(name):
    group = REGISTRY.groups[name]
    x = None
    if name == "sign":  # the sign group acts on real data
        x = np.real(np.asarray(refine_problem().x0)) - 0.1
    assert_group_contract(group, x)


@pytest.mark.parametrize("name", sorted(REGISTRY.constraints))
def test_constraint_contract(name):
    assert_constraint_contract(REGISTRY.constraints[name], CONSTRAINT_PARAMS.get(name))


@pytest.mark.parametrize("layout", ["cxi", "nexus", "eiger"])
@pytest.mark.parametrize("name", sorted(r.name for r in REGISTRY.readers))
def test_reader_contract(name, layout, tmp_path):
    reader = next(r for r in REGISTRY.readers if r.name == name)
    path = write_scan(tmp_path / f"scan-{layout}.h5", Simulation(shape=(32, 32), photons=1e6),
                      layout=layout)
    ds = assert_reader_contract(reader, path)
    assert ds["intensity"].shape == (32, 32)


def test_the_contract_checks_can_fail():
    """A group whose canonical form is not invariant, a non-differentiable constraint."""
    from sipflow.contracts import CanonicalForm, Constraint
    from sipflow.symmetry import FarFieldGroup

    class Biased(FarFieldGroup):
        name = "biased"

        def canonical(self, x):  # the identity: not invariant under the group
            return CanonicalForm(x, None, 1.0, 0.0)

    with pytest.raises(AssertionError, match="canonical"):
        assert_group_contract(Biased())

    class Rough(Constraint):
        name = "rough"
        kind = "inequality"

        def values(self, x, params, problem):
            return x.abs().detach() - 1e9

    with pytest.raises(AssertionError, match="differentiable"):
        assert_constraint_contract(Rough)
