"""The loop's fast projection and updates equal their reference definitions.

The iteration loop runs :class:`FourierModulus` and the linear form ``a d + b x`` of
the updates (fewer memory passes on CPU); :func:`modulus_projection` and
:func:`update` are the definitions in docs/design.md. A difference beyond rounding
means the fast path computes another algorithm.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sipflow.physics import free_llk, normalised_llk
from sipflow.reconstruct._projections import (
    FourierModulus,
    PoissonScore,
    apply_update,
    modulus_projection,
    update,
    update_factors,
)


def _problem(dtype, shape=(3, 24, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    x = torch.randn(shape, generator=g, dtype=cdtype)
    amplitude = 5 * torch.rand(shape[1:], generator=g, dtype=dtype)
    amplitude[0, 0] = 0.0  # a zero measured amplitude
    valid = torch.rand(shape[1:], generator=g) > 0.1  # unmeasured pixels keep their value
    support = torch.rand(shape, generator=g) > 0.6
    x[1, 2, 3] = 0  # a zero pixel
    return x, amplitude, valid, support


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_fourier_modulus_is_the_modulus_projection(dtype, tol):
    x, amplitude, valid, _ = _problem(dtype)
    d_ref, mag = modulus_projection(x, amplitude, valid, ndim=2)
    d, calc = FourierModulus(amplitude, valid)(x, with_calc=True)
    scale = d_ref.abs().max()
    assert torch.allclose(d, d_ref, atol=tol * scale, rtol=0)
    assert torch.allclose(calc, mag**2, rtol=tol * 10, atol=tol * float(mag.max() ** 2))
    assert FourierModulus(amplitude, valid)(x)[1] is None


def test_fourier_modulus_3d_and_zero_object():
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 8, 6, 10), generator=g, dtype=torch.complex64)
    amplitude = torch.rand((8, 6, 10), generator=g)
    valid = torch.ones((8, 6, 10), dtype=torch.bool)
    d_ref, _ = modulus_projection(x, amplitude, valid, ndim=3)
    d, _ = FourierModulus(amplitude, valid)(x)
    assert torch.allclose(d, d_ref, atol=2e-5 * float(d_ref.abs().max()))
    zero, _ = FourierModulus(amplitude, valid)(torch.zeros_like(x))
    assert torch.isfinite(torch.view_as_real(zero)).all()


@pytest.mark.parametrize("name", ["ER", "HIO", "RAAR"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_updates_are_the_updates(name, dtype):
    x, amplitude, valid, support = _problem(dtype, seed=2)
    d, _ = modulus_projection(x, amplitude, valid, ndim=2)
    expected = update(name, x, d, support, beta=0.8, positivity=False)
    a, b = update_factors(name, support, 0.8, dtype)
    assert (b is None) == (name == "ER")
    got = apply_update(d.clone(), x, a, b)
    assert torch.allclose(got, expected, atol=1e-6 * float(expected.abs().max()), rtol=0)


def test_unknown_update_is_refused():
    _, _, _, support = _problem(torch.float32)
    with pytest.raises(ValueError, match="unknown update 'XYZ'"):
        update_factors("XYZ", support, 0.9, torch.float32)


def _allocator_state(env):
    code = ("from sipflow.reconstruct._memory import reuse_freed_memory, release_freed_memory;"
            "print(reuse_freed_memory()); release_freed_memory()")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning")
def test_allocator_tuning_can_be_switched_off():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not a glibc system")
    assert _allocator_state({}) == "True"
    assert _allocator_state({"SIPFLOW_MALLOC_TUNING": "0"}) == "False"


@pytest.mark.parametrize("free_share", [0.0, 0.05])
def test_poisson_score_is_the_normalised_deviance(free_share):
    g = torch.Generator().manual_seed(3)
    obs = torch.poisson(1e3 * torch.rand((32, 30), generator=g) ** 4, generator=g)
    calc = obs[None] * (1 + 0.1 * torch.rand((3, 32, 30), generator=g)) + 0.01
    measured = torch.rand((32, 30), generator=g) > 0.05
    held = measured & (torch.rand((32, 30), generator=g) < free_share)
    valid = measured & ~held
    support_size = torch.tensor([100, 150, 200])
    llk, free = PoissonScore(obs, valid, held)(calc.clone(), support_size)
    expected = normalised_llk(calc, obs, valid, 2, dof=valid.sum() - support_size)
    assert torch.allclose(llk, expected, rtol=1e-3)
    if free_share:
        assert torch.allclose(free, free_llk(calc, obs, held, 2), rtol=1e-3)
    else:
        assert torch.isnan(free).all()
