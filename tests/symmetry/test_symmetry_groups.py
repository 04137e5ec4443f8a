"""Ambiguity groups by name: the sign group, a plugin's group, and ``symmetry.canonicalize``."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sipflow import Context, schema
from sipflow.errors import PipelineError, PluginError
from sipflow.plugins import build_registry
from sipflow.simulate import make_object
from sipflow.symmetry import (
    CanonicalForm,
    FarFieldElement,
    SignElement,
    SignGroup,
    apply,
    available_groups,
    canonical,
    check_group,
    get_group,
)
from sipflow.symmetry._stage import Canonicalize

vectors = arrays(np.float64, st.integers(2, 8),
                 elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(x=vectors, sign=st.sampled_from([-1, 1]))
def test_sign_canonical_is_invariant_and_lies_in_the_half_space(x, sign):
    g = SignGroup()
    c = g.canonical(x)
    assert isinstance(c, CanonicalForm)
    np.testing.assert_allclose(g.canonical(g.apply(x, SignElement(sign))).x, c.x)
    assert c.x[0] >= 0
    np.testing.assert_allclose(g.apply(x, c.element), c.x)
    # the representative is in the orbit, and the error modulo the group is zero on it
    assert g.error(c.x, x) == pytest.approx(0.0, abs=1e-12) or not np.any(x)


def test_sign_near_ties_are_reported_not_hidden():
    g = SignGroup()
    assert g.canonical(np.array([1e-4, 1.0, -2.0])).ambiguous
    clear = g.canonical(np.array([-3.0, 1.0, 0.5]))
    assert not clear.ambiguous and clear.element == SignElement(-1)
    batch = g.canonical(np.array([[1.0, 2.0], [-1.0, 0.5], [1e-5, 1.0]]))
    np.testing.assert_array_equal(batch.element, [1, -1, 1])
    assert batch.ambiguous  # the smallest confidence of the batch decides
    # another half-space: x . v >= 0
    v = SignGroup(direction=[1.0, 1.0])
    assert v.canonical(np.array([-3.0, 1.0])).x.tolist() == [3.0, -1.0]


def test_sign_half_space_is_connected_where_the_data_are():
    """Nearby x (away from the boundary) keep nearby representatives: no jumps in the targets."""
    rng = np.random.default_rng(0)
    g = SignGroup()
    x = rng.normal(size=(2000, 5))
    x = x[np.abs(x[:, 0]) > 0.2]
    near = x + 0.01 * rng.normal(size=x.shape)
    jump = np.linalg.norm(g.canonical(x).x - g.canonical(near).x, axis=1)
    assert jump.max() < 0.1


def test_farfield_group_object_matches_the_functions():
    rng = np.random.default_rng(3)
    x = make_object((32, 32), "cells", extent=0.4, rng=rng)
    g = get_group("farfield")
    c = g.canonical(x)
    np.testing.assert_allclose(c.x, canonical(x).x)
    moved = apply(x, FarFieldElement(0.7, (2.0, -3.0), True))
    np.testing.assert_allclose(g.canonical(moved).x, c.x, atol=1e-5 * np.abs(x).max())
    assert g.error(moved, x) < 1e-6
    e = g.random_element(rng, x)
    assert isinstance(e, FarFieldElement) and all(float(s).is_integer() for s in e.shift)


def test_unknown_group_names_the_valid_ones():
    with pytest.raises(PipelineError, match="Did you mean 'sign'"):
        get_group("sine")


def test_the_example_plugin_registers_a_point_group():
    """A plugin's group is found by name and obeys the defining property."""
    groups = available_groups()
    assert {"farfield", "sign", "mirror_x"} <= set(groups)
    g = get_group("mirror_x")
    x = np.abs(make_object((24, 24), "cells", extent=0.4, rng=np.random.default_rng(1)))
    c = g.canonical(x)
    for element in (g.random_element(np.random.default_rng(s), x) for s in range(4)):
        np.testing.assert_allclose(g.canonical(g.apply(x, element)).x, c.x)


def test_a_broken_group_plugin_is_refused_with_its_name():
    class NoCanonical:
        name = "half"
        description = "lacks canonical"

        def apply(self, x, e):
            return x

    with pytest.raises(PluginError, match="canonical"):
        check_group(NoCanonical(), "sipflow_half")

    from sipflow import hookimpl

    class Plugin:
        @hookimpl
        def sipflow_symmetry_groups(self):
            return [SignGroup()]  # named 'sign': a built-in name

    reg = build_registry(load_entry_points=False, extra=(Plugin(),))
    failed = [p for p in reg.plugins if p.error]
    assert failed and "built in" in failed[0].error
    from sipflow.symmetry import BUILTIN_GROUPS

    assert reg.groups["sign"] is BUILTIN_GROUPS[1]  # the built-in one stays, registered by hook


def _result(objs: np.ndarray, truth: np.ndarray) -> xr.Dataset:
    dims = schema.real_dims(2)
    sups = np.abs(objs) > 0.1 * np.abs(objs).max()
    return xr.Dataset({schema.OBJ: (dims, objs[0]), schema.SUPPORT: (dims, sups[0]),
                       schema.OBJ_RUNS: ((schema.RUN, *dims), objs),
                       schema.SUPPORT_RUNS: ((schema.RUN, *dims), sups),
                       schema.OBJ_TRUE: (dims, truth)}, attrs={"source": "runs.h5"})


def test_canonicalize_brings_every_run_onto_one_form_and_records_the_elements():
    rng = np.random.default_rng(5)
    truth = make_object((48, 48), "blob", extent=0.45, rng=rng)
    truth = truth * (1 + np.linspace(-0.6, 0.6, 48))[:, None]  # a clearly skewed amplitude
    elements = [FarFieldElement(0.3, (1.0, -2.0), False), FarFieldElement(-2.0, (-3.0, 0.0), True),
                FarFieldElement(1.0, (2.0, 2.0), True)]
    runs = np.stack([apply(truth, e) for e in elements]).astype(np.complex64)
    out = Canonicalize()(_result(runs, truth.astype(np.complex64)), {}, Context())
    c = canonical(truth).x
    for r in out[schema.OBJ_RUNS].values:
        assert np.linalg.norm(r - c) / np.linalg.norm(c) < 1e-4
    assert np.linalg.norm(out[schema.OBJ_TRUE].values - c) / np.linalg.norm(c) < 1e-4
    record = out.attrs["symmetry_canonicalize"]
    assert record["group"] == "farfield" and len(record["runs"]) == 3
    assert [r["element"]["twin"] for r in record["runs"]] != [False] * 3
    assert record["ambiguous"] == []
    # the support moved with its run: it matches the moved object's own support
    sup = out[schema.SUPPORT_RUNS].values[1]
    amp = np.abs(out[schema.OBJ_RUNS].values[1])
    own = amp > 0.1 * amp.max()
    assert (sup & own).sum() / (sup | own).sum() > 0.85


def test_canonicalize_reports_a_centro_symmetric_object(caplog):
    ellipse = make_object((32, 32), "ellipse", extent=0.4, phase_amplitude=0.0).real
    ellipse = (ellipse > 0).astype(np.complex64)  # uniform: centro-symmetric amplitude
    out = Canonicalize()(_result(ellipse[None], ellipse), {}, Context())
    record = out.attrs["symmetry_canonicalize"]
    assert record["obj"]["ambiguous"] and "obj" in record["ambiguous"]
    assert "near-tie" in caplog.text
