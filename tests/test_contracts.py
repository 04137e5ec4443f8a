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


def _sample(layout: str, tmp_path):
    """A file of `layout` holding a 32x32 pattern (one frame; a SPEC scan of 3)."""
    if layout in ("cxi", "nexus", "eiger"):
        return write_scan(tmp_path / f"scan-{layout}.h5",
                          Simulation(shape=(32, 32), photons=1e6), layout=layout)
    frame = np.random.default_rng(0).poisson(5, (32, 32)).astype(np.int32)
    if layout == "spec":
        from sipflow.testing import write_spec_scan

        write_spec_scan(tmp_path / "s.spec", 1, np.stack([frame] * 3),
                        command="ascan  theta 0 1  2 1", motors={"Theta": 0.0},
                        columns={"Theta": [0.0, 0.5, 1.0]})
        return tmp_path / "s.spec"
    import fabio.cbfimage
    import fabio.edfimage
    import fabio.tifimage

    kind = {"edf": fabio.edfimage.EdfImage, "cbf": fabio.cbfimage.CbfImage,
            "tif": fabio.tifimage.TifImage}[layout]
    kind(data=frame).write(str(tmp_path / f"frame.{layout}"))
    return tmp_path / f"frame.{layout}"


READER_LAYOUTS = {"hdf5": ("cxi", "nexus", "eiger"), "spec": ("spec",),
                  "frames": ("edf", "cbf", "tif")}


@pytest.mark.parametrize(("name", "layout"), [(r.name, layout) for r in REGISTRY.readers
                                              for layout in READER_LAYOUTS.get(r.name, ())])
def test_reader_contract(name, layout, tmp_path):
    reader = next(r for r in REGISTRY.readers if r.name == name)
    ds = assert_reader_contract(reader, _sample(layout, tmp_path))
    assert ds["intensity"].shape[-2:] == (32, 32)


def test_every_builtin_reader_has_sample_files():
    builtin = [r.name for r in REGISTRY.readers
               if REGISTRY.reader_plugin(r).startswith("sipflow.")]
    assert sorted(builtin) == sorted(READER_LAYOUTS)


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
