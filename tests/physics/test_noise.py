"""What the measured values are: counts, scaled counts, processed (sipflow.physics.noise_model)."""

from __future__ import annotations

import numpy as np
import pytest

from sipflow.physics import FarField, noise_model, normalised_llk, symmetric_share
from sipflow.simulate import Simulation, simulate


def _pattern(processed: bool, seed: int = 0, **options):
    a = simulate(Simulation(shape=(128, 128), kind="logo", extent=0.3, phase_amplitude=0.0,
                            photons=1e8, beamstop_size=(6, 4), processed=processed, seed=seed,
                            **options))
    return a["intensity"], a["mask"], a["obj"]


def test_counts_are_recognised_as_counts():
    intensity, mask, _ = _pattern(False)
    nm = noise_model(intensity, mask)
    assert nm.kind == "counts" and nm.quantum == 1.0 and nm.likelihood == "poisson"
    assert not nm.symmetrised  # Poisson noise breaks I(q) = I(-q)
    assert "counts" in nm.describe()


def test_a_processed_pattern_is_scaled_symmetrised_counts_and_scored_as_counts():
    """The simulator's provider processing: symmetrised, times a non-integer gain. The
    values are whole multiples of gain / 2, and Poisson on I / (gain / 2) puts the
    truth's LLK near 1, where Poisson on the values as given puts it near gain / 2."""
    intensity, mask, obj = _pattern(True)
    assert not np.allclose(intensity[mask], np.round(intensity[mask]))  # not counts
    nm = noise_model(intensity, mask)
    assert nm.kind == "scaled counts" and nm.symmetrised
    assert nm.symmetric_share > 0.99
    gain = 2 * nm.quantum
    assert 30 < gain < 45  # the simulator's 37.18 x U(0.9, 1.1)
    calc = FarField(2).intensity(obj.astype(np.complex128))
    rescaled = normalised_llk(calc / nm.scale, intensity / nm.scale, mask)
    as_given = normalised_llk(calc, intensity, mask)
    assert 0.3 < rescaled < 1.5
    assert as_given > 10 * rescaled
    assert "centro-symmetrised" in nm.describe() and "Poisson on I /" in nm.describe()


def test_background_subtracted_values_have_no_photon_scale():
    intensity, mask, _ = _pattern(True)
    shifted = np.where(mask, np.clip(intensity - 3.3, 0, None), 0)  # background removed
    nm = noise_model(shifted, mask)
    assert nm.kind == "processed" and nm.quantum is None and nm.likelihood == "gaussian"
    assert nm.scale == 1.0


def test_the_user_says_what_the_data_are():
    intensity, mask, _ = _pattern(True)
    nm = noise_model(intensity, mask, photon_scale=5.0)
    assert nm.quantum == 5.0 and nm.source == "user" and nm.likelihood == "poisson"
    assert noise_model(intensity, mask, likelihood="gaussian").likelihood == "gaussian"


def test_symmetric_share_of_a_symmetrised_pattern_with_an_off_array_mirror():
    rng = np.random.default_rng(0)
    a = rng.random((9, 8)) + 0.1
    mask = np.ones(a.shape, bool)
    assert symmetric_share(a, mask) < 0.1
    sym = a.copy()
    for i in range(9):
        for j in range(8):
            mi, mj = 2 * 4 - i, 2 * 4 - j
            if 0 <= mi < 9 and 0 <= mj < 8:
                sym[i, j] = sym[mi, mj] = 0.5 * (a[i, j] + a[mi, mj])
    assert symmetric_share(sym, mask) == pytest.approx(1.0, abs=0.2)
