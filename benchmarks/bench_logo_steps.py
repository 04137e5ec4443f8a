"""Which step of the ``cdi`` recipe loses a many-part object: each against a known support.

The class of a real, provider-processed forward-CDI pattern (``bench_robustness.py
--logo``): a 512² logo of 29 disconnected parts behind a 20 x 12 px beamstop, four
masked squares and gaps, symmetrised and rescaled, with and without partial coherence.
One generation of the ``cdi`` plan (``(sup * HIO**50)**12 * (sup * ER**50)**4``,
positivity) is run from a series of first supports, from the true support to the
template's own, and with variants of the steps that follow (shrinkwrap threshold and
reference, RAAR, the ``psf`` coherence model), and the two generations of ``cdi`` as it
is now (in that row the runs counted are generation 2's). For each row: the share of runs whose
support IoU with the truth (aligned for shift and twin) is at least 0.8, and the free
LLKs (Poisson on the rescaled counts) of the runs that did and did not reach it.

Usage::

    python benchmarks/bench_logo_steps.py [--seeds 2] [--runs 8] [--coherence 0 0.5]
        [--only "cdi now"]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from scipy import ndimage

import sipflow
from sipflow.simulate import Simulation, simulate
from sipflow.symmetry import align

PLAN = "(sup * HIO**50)**12 * (sup * ER**50)**4"
BASE = {"schedule": PLAN, "positivity": True, "shrinkwrap_threshold": 0.1,
        "support_threshold": [0.1, 0.5], "restarts": 0, "set_retries": 0}

#: first supports given to the runs: the truth, grown, its bounding box, grown (None: the
#: template's own, from the autocorrelation or circles)
STARTS = ["true", "true + 3 px", "true + 8 px", "bounding box", "bounding box + 5 px", None]
#: variants of the steps after the template's first supports
VARIANTS = {
    "threshold 0.05": {"shrinkwrap_threshold": 0.05},
    "threshold: rms 0.25": {"shrinkwrap_method": "rms", "shrinkwrap_threshold": 0.25},
    "RAAR": {"schedule": PLAN.replace("HIO", "RAAR")},
    "psf (coherence model)": {"schedule": "(psf * sup * HIO**50)**12 * (psf * sup * ER**50)**4",
                              "psf_sigma": 0.5},
    # the fix: generation 1 at half the threshold, generation 2 in the best run's support
    "cdi now: generation 1 at 0.05, generation 2 at 0.1": {
        "generations": 2, "generation_start": "support", "first_threshold_factor": 0.5,
        "generation_schedules": ["HIO**200 * (sup * HIO**50)**8 * (sup * ER**50)**4"]},
}


def _start(truth: np.ndarray, kind: str) -> np.ndarray:
    if kind.startswith("true"):
        grow = int(kind.split("+")[1].split()[0]) if "+" in kind else 0
        return ndimage.binary_dilation(truth, iterations=grow) if grow else truth
    rows, cols = np.nonzero(truth)
    box = np.zeros_like(truth)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    grow = int(kind.split("+")[1].split()[0]) if "+" in kind else 0
    return ndimage.binary_dilation(box, iterations=grow) if grow else box


def _prepared(seed: int, coherence: float):
    a = simulate(Simulation(shape=(512, 512), kind="logo", extent=0.28, phase_amplitude=0.0,
                            photons=1e9, beamstop_size=(20, 12), masked_squares=4, gaps=3,
                            processed=True, coherence_sigma=coherence, seed=seed))
    import xarray as xr

    from sipflow import schema

    dims = schema.detector_dims(2)
    ds = xr.Dataset({schema.INTENSITY: (dims, a["intensity"].astype(np.float32)),
                     schema.MASK: (dims, a["mask"]),
                     schema.OBJ_TRUE: (schema.real_dims(2), a["obj"]),
                     schema.SUPPORT_TRUE: (schema.real_dims(2), a["support"])},
                    attrs={"source": f"logo seed {seed}"})
    return sipflow.run_pipeline({"stages": ["prep.standard"]}, ds, seed=seed, device="cpu")


def _runs(prepared, params: dict, seed: int) -> tuple[list[float], list[float]]:
    out = sipflow.run_pipeline({"stages": [{"use": "phase.classic", "with": params}]},
                               prepared, seed=seed, device="cpu")
    truth = out["obj_true"].values.astype(np.complex128)
    st = np.abs(truth) > 0.1 * np.abs(truth).max()
    ious = []
    for x in out["obj_runs"].values:
        a = np.abs(align(truth, x.astype(np.complex128)).aligned)
        sr = a > 0.1 * a.max()
        ious.append(float((st & sr).sum() / max((st | sr).sum(), 1)))
    return ious, list(out.attrs["phase_classic"]["final_llk_free"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--coherence", nargs="+", type=float, default=[0.0, 0.5])
    p.add_argument("--only", default=None, help="only the rows whose steps contain this")
    args = p.parse_args()
    print(f"# {platform.machine()}, logo 512², processed, 1e9 photons, {args.runs} runs x "
          f"{args.seeds} seeds per row, plan {PLAN}")
    print("| coherence σ [px] | first support | steps | runs IoU >= 0.8 | free LLK, those | "
          "free LLK, the others | s / set |")
    print("|---|---|---|---|---|---|---|")
    rows = [(s, "cdi's") for s in STARTS] + [(None, v) for v in VARIANTS]
    rows = [r for r in rows if args.only is None or args.only in r[1]]
    for coherence in args.coherence:
        prepared = {seed: _prepared(seed, coherence) for seed in range(args.seeds)}
        for start, steps in rows:
            ious, free, walls = [], [], []
            for seed, ds in prepared.items():
                params = {**BASE, "runs": args.runs, **VARIANTS.get(steps, {})}
                if start is not None:
                    ds = ds.assign(support=(ds["support_true"].dims,
                                            _start(ds["support_true"].values, start)))
                    params["initial_support"] = "input"
                t0 = time.perf_counter()
                i, f = _runs(ds, params, seed)
                walls.append(time.perf_counter() - t0)
                ious += i
                free += f
            good = [f for i, f in zip(ious, free, strict=True) if i >= 0.8 and f == f]
            bad = [f for i, f in zip(ious, free, strict=True) if i < 0.8 and f == f]

            def span(v: list[float]) -> str:
                return f"{min(v):.0f}-{max(v):.0f}" if v else "-"

            print(f"| {coherence:g} | {start or 'template (autocorrelation / circles)'} | "
                  f"{steps} | {len(good)}/{len(ious)} | {span(good)} | {span(bad)} | "
                  f"{statistics.median(walls):.0f} |", flush=True)


if __name__ == "__main__":
    main()
