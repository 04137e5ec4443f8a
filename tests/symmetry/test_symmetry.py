"""The far-field ambiguity group: transforms, inverses, align, canonical forms (properties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipflow.physics import FarField
from sipflow.symmetry import (
    FarFieldElement,
    align,
    apply,
    canonical,
    circular_centroid,
    twin,
)

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def smooth_object(shape: tuple[int, ...], seed: int, asymmetric: bool = True) -> np.ndarray:
    """A compact, band-limited complex object well inside the array (no wrap-around).

    With `asymmetric`, a bright off-centre lobe makes its amplitude clearly skewed.
    """
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*[(np.arange(n) - n // 2) / n for n in shape], indexing="ij")
    r2 = sum(c**2 for c in coords)
    amp = np.exp(-r2 / (2 * 0.08**2))
    if asymmetric:  # a lobe off-centre along one axis
        axis = rng.integers(len(shape))
        lobe = [c - (0.1 * rng.choice([-1, 1]) if a == axis else 0)
                for a, c in enumerate(coords)]
        amp = amp + (1.0 + rng.random()) * np.exp(-sum(c**2 for c in lobe) / (2 * 0.06**2))
    phase = sum(rng.normal() * 3 * c for c in coords) + rng.normal() * 5 * r2
    return (amp * np.exp(1j * phase)).astype(np.complex128)


elements = st.builds(
    lambda ph, tw, sh: (ph, tw, sh),
    st.floats(-np.pi, np.pi), st.booleans(),
    st.lists(st.floats(-4.0, 4.0), min_size=3, max_size=3))


def _element(params, ndim):
    phase, is_twin, shift = params
    return FarFieldElement(phase, tuple(shift[:ndim]), is_twin)


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@SETTINGS
@given(params=elements, seed=st.integers(0, 10_000), shape=st.sampled_from(
    [(32, 32), (31, 34), (16, 16, 16)]))
def test_canonical_is_invariant_under_the_group(params, seed, shape):
    x = smooth_object(shape, seed)
    g = _element(params, len(shape))
    c0, c1 = canonical(x), canonical(apply(x, g))
    assert not c0.ambiguous_twin
    assert _rel(c1.x, c0.x) < 1e-3, _rel(c1.x, c0.x)  # sub-pixel resampling only
    # the element it reports is the one it applied
    assert _rel(apply(x, c0.element), c0.x) < 1e-9


@SETTINGS
@given(params=elements, seed=st.integers(0, 10_000), shape=st.sampled_from(
    [(32, 32), (16, 16, 16)]))
def test_every_element_has_an_inverse(params, seed, shape):
    x = smooth_object(shape, seed)
    g = _element(params, len(shape))
    back = apply(apply(x, g), g.inverse())
    assert _rel(back, x) < 1e-9


@SETTINGS
@given(params=elements, seed=st.integers(0, 10_000))
def test_the_measurement_cannot_see_the_group(params, seed):
    x = smooth_object((32, 30), seed)
    model = FarField(ndim=2)
    gx = apply(x, _element(params, 2))
    np.testing.assert_allclose(model.intensity(gx), model.intensity(x), atol=1e-9)


@SETTINGS
@given(params=elements, seed=st.integers(0, 10_000), shape=st.sampled_from(
    [(32, 32), (16, 16, 16)]))
def test_align_recovers_a_known_element(params, seed, shape):
    x = smooth_object(shape, seed)
    g = _element(params, len(shape))
    a = align(x, apply(x, g), precision=0.002)
    assert a.error < 5e-3, a.error  # the translation is found to 0.002 px
    assert a.twin == g.twin
    # the recovered element undoes g: a.element · g · x == x
    np.testing.assert_allclose(apply(apply(x, g), a.element), x, atol=5e-3 * np.abs(x).max())


def test_twin_is_an_exact_involution_about_the_centre():
    x = smooth_object((9, 10), 0)
    assert np.array_equal(twin(twin(x)), x)
    point = np.zeros((9, 10), complex)
    point[4, 5] = 1j  # at the centre: its own twin up to conjugation
    np.testing.assert_array_equal(twin(point), np.conj(point))


def test_near_centrosymmetric_objects_are_flagged():
    sym = smooth_object((32, 32), 3, asymmetric=False)
    sym = np.abs(sym)  # centro-symmetric amplitude, flat phase
    assert canonical(sym).ambiguous_twin
    assert not canonical(smooth_object((32, 32), 3)).ambiguous_twin


def test_batched_torch_align_and_centroid():
    x = torch.from_numpy(smooth_object((24, 24), 1))
    runs = torch.stack([x, torch.from_numpy(apply(x.numpy(), FarFieldElement(0.5, (2.0, -1.0),
                                                                             True)))])
    out = align(x, runs)
    assert [a.twin for a in out] == [False, True]
    assert all(a.error < 1e-3 for a in out)
    assert isinstance(out[0].aligned, torch.Tensor)
    w = torch.zeros((2, 16, 16))
    w[0, 3, 5] = w[1, 10, 12] = 1
    np.testing.assert_allclose(circular_centroid(w, 2).numpy(), [[3, 5], [10, 12]], atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_canonical_on_cuda():
    x = torch.from_numpy(smooth_object((32, 32), 2)).cuda()
    c = canonical(x)
    assert c.x.is_cuda
    np.testing.assert_allclose(c.x.cpu().numpy(), canonical(x.cpu().numpy()).x, atol=1e-9)
