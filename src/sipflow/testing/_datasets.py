"""Small simulated datasets shaped like a reader's output, for tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .. import schema


def simulated_dataset(shape: tuple[int, ...] = (32, 32), *, photons: float | None = None,
                      kind: str | None = None, seed: int = 0, with_obj: bool = False,
                      **sim_options: Any) -> xr.Dataset:
    """A small in-memory dataset shaped like a reader's output (no file involved).

    Parameters
    ----------
    shape : tuple of int
        (rows, cols) or (frames, rows, cols) [pixels].
    photons : float, optional
        Total counts with Poisson noise; None for noiseless data.
    kind : str, optional
        Object shape (default ``blob`` in 2-D, ``crystal`` in 3-D).
    with_obj : bool
        Also set ``obj``/``support`` to the truth, for stages that need an object.
    """
    from ..simulate import Simulation, simulate

    kind = kind or ("blob" if len(shape) == 2 else "crystal")
    arrays = simulate(Simulation(shape=tuple(shape), kind=kind, photons=photons, seed=seed,
                                 **sim_options))
    ddims = schema.detector_dims(len(shape))
    rdims = schema.real_dims(len(shape))
    ds = xr.Dataset({
        schema.INTENSITY: (ddims, arrays["intensity"].astype(np.float32)),
        schema.MASK: (ddims, arrays["mask"]),
        schema.OBJ_TRUE: (rdims, arrays["obj"]),
        schema.SUPPORT_TRUE: (rdims, arrays["support"]),
    }, attrs={"source": f"simulated {kind} {tuple(shape)}", "wavelength_m": 1.55e-10,
              "energy_eV": 8000.0, "distance_m": 2.0, "pixel_size_m": 75e-6})
    if with_obj:
        ds[schema.OBJ] = ds[schema.OBJ_TRUE]
        ds[schema.SUPPORT] = ds[schema.SUPPORT_TRUE]
    return ds
