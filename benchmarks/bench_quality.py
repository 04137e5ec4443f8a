"""The quality harness of the phase.* stages: error, R-factor, free LLK and time, side by side.

Simulated far-field CDI (``sipflow.simulate``) with a beamstop hiding the central
speckle, a detector gap and dead pixels, at several photon counts. Each method runs
on the same preprocessed data with its **default parameters**:

- ``classic``: ``phase.classic`` as the ``default`` template runs it (8 starts of HIO then
  ER with a tight shrinkwrap, a second generation, set retries; best by free LLK; until
  the 2026-12-02 afternoon, its own defaults with 4 runs of ER/HIO and shrinkwrap);
- ``dip`` / ``double_dip``: ``phase.dip`` / ``phase.double_dip`` with their defaults alone
  on the preprocessed data: the stage runs the same ``phase.classic`` first (``init:
  classic``) and starts from its object (the wall time includes it);
- ``dip:random`` / ``double_dip:random``: the same from random networks (``init: random``,
  autocorrelation support with shrinkwrap), no classical start;
- ``classic→double_dip``: the ``dip`` template, double DIP after a separate
  ``phase.classic`` stage (its object, support and free pixels);
- any other registered ``phase.*`` stage given with ``--methods``.

Columns: error modulo phase, translation and twin (``sipflow.symmetry``) of the
object (``err``), of its amplitude (``err|x|``) and the amplitude-weighted RMS phase
error inside the true support (``φ rms``); R-factor and free LLK of the fit; wall
time; iterations per second of the deep priors; and the iteration at which a deep
prior first reached the classical error (``to classic``) when it did.

Usage::

    python benchmarks/bench_quality.py [--quick] [--size 64] [--seeds 3]
        [--photons 1e9 1e7 1e6 1e5] [--objects crystal hole weak] [--methods ...]

``--quick``: one seed, photons 1e9 and 1e5, the three objects, at 64², without
``phase.dip`` and the random starts (under 15 min on a 2-core CPU; name them with
``--methods`` to add them). A method ``stage:init`` runs a deep-prior
stage with that ``init``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch
import xarray as xr

from sipflow import schema
from sipflow.analyse._fom import rfactor, truth_metrics
from sipflow.physics import FarField, free_llk
from sipflow.plugins import get_registry
from sipflow.stage import Context
from sipflow.templates import stage_params
from sipflow.testing import simulated_dataset

#: a compact crystal with a strain-like phase, a non-convex shape with a hole, a weak-phase
#: low-contrast object
OBJECTS = {
    "crystal": {"kind": "hexagon", "extent": 0.4, "phase_amplitude": 1.5},
    "hole": {"kind": "lithograph", "extent": 0.4, "phase_amplitude": 0.0},
    "weak": {"kind": "blob", "extent": 0.4, "phase_amplitude": 0.3},
}
METHODS = ["classic", "dip", "double_dip", "double_dip:random"]
QUICK_METHODS = ["classic", "double_dip"]


def first_below(out: xr.Dataset, target: float) -> int | None:
    """First recorded iteration whose error curve is below `target` (best run)."""
    if schema.ERROR not in out:
        return None
    attr = next((v for k, v in out.attrs.items() if k in ("phase_dip", "phase_double_dip")),
                None)
    run = attr["best_run"] if attr else 0
    err = out[schema.ERROR].values[run]
    hit = np.nonzero(np.isfinite(err) & (err <= target))[0]
    return int(out[schema.ITER].values[hit[0]]) if hit.size else None


def run_method(method: str, prep: xr.Dataset, seed: int, classic: xr.Dataset | None
               ) -> tuple[xr.Dataset, float]:
    registry = get_registry()
    context = Context(seed=seed)
    t0 = time.perf_counter()
    if method == "classic":
        out = registry.stage("phase.classic")()(prep, stage_params("default", "phase.classic"),
                                                context)
    elif method == "classic→double_dip":
        assert classic is not None
        out = registry.stage("phase.double_dip")()(classic, None, context)
    else:
        name, _, init = method.partition(":")
        name = name if "." in name else f"phase.{name}"
        out = registry.stage(name)()(prep, {"init": init} if init else None, context)
    return out, time.perf_counter() - t0


def scores(out: xr.Dataset, truth: np.ndarray, support_true: np.ndarray) -> dict[str, float]:
    obj = out[schema.OBJ].values.astype(np.complex128)
    m = truth_metrics(obj, truth, support_true)
    counts = out[schema.INTENSITY].values.astype(np.float64)
    mask = out[schema.MASK].values.astype(bool)
    calc = FarField(2).intensity(obj)
    free = out[schema.FREE_MASK].values.astype(bool) if schema.FREE_MASK in out else None
    return {"err": m["error"], "err_amp": m["error_amplitude"], "phase": m["phase_rms_rad"],
            "r": rfactor(counts, calc, mask),
            "free": float(free_llk(calc, counts, free)) if free is not None and free.any()
            else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--photons", nargs="+", type=float, default=[1e9, 1e7, 1e6, 1e5])
    p.add_argument("--objects", nargs="+", default=list(OBJECTS))
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"default: {' '.join(METHODS)} (--quick: {' '.join(QUICK_METHODS)})")
    p.add_argument("--beamstop", type=float, default=2.0, help="radius [pixels]")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.photons = 1, [1e9, 1e5]
    if args.methods is None:
        args.methods = QUICK_METHODS if args.quick else METHODS
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    print(f"# {platform.machine()} CPU, torch threads {torch.get_num_threads()}, "
          f"{args.size}², beamstop r = {args.beamstop:g} px, 2-px gaps, 1 % dead pixels, "
          f"{args.seeds} seed(s); default parameters of every method")
    print("| object | photons | method | err | err\\|x\\| | φ rms [rad] | R | free LLK | "
          "s | it/s | to classic |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary: dict[tuple[str, float, str], list[float]] = {}
    for name in args.objects:
        for photons in args.photons:
            rows: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
            for seed in range(args.seeds):
                ds = simulated_dataset((args.size, args.size), photons=photons,
                                       beamstop=args.beamstop, gaps=2, dead_pixels=0.01,
                                       seed=seed, **OBJECTS[name])
                truth = ds[schema.OBJ_TRUE].values.astype(np.complex128)
                st = ds[schema.SUPPORT_TRUE].values
                prep = get_registry().stage("prep.standard")()(ds)
                classic = None
                for method in args.methods:
                    try:
                        out, wall = run_method(method, prep, seed, classic)
                    except Exception as exc:  # a failed method is a row, not a crash
                        rows[method].append({"failed": 1.0, "wall": float("nan")})
                        print(f"<!-- {name} {photons:.0e} {method} seed {seed}: {exc} -->",
                              flush=True)
                        continue
                    if method == "classic":
                        classic = out
                    s = scores(out, truth, st)
                    s["wall"] = wall
                    attr = out.attrs.get("phase_dip") or out.attrs.get("phase_double_dip")
                    if attr:
                        best = attr["best_run"]
                        steps = sum(attr["stopped_iteration"])
                        s["its"] = steps / wall
                        ref = rows["classic"][-1]["err"] if rows.get("classic") and \
                            "err" in rows["classic"][-1] else None
                        hit = first_below(out, ref) if ref is not None else None
                        s["to_classic"] = float(hit) if hit is not None else float("nan")
                        s["selected"] = float(attr["selected_iteration"][best])
                    rows[method].append(s)
            for method in args.methods:
                done = [r for r in rows[method] if "err" in r]
                if not done:
                    print(f"| {name} | {photons:.0e} | {method} | failed | | | | | | | |")
                    continue

                def med(key: str, fmt: str, done=done) -> str:
                    vals = [r[key] for r in done if key in r and np.isfinite(r[key])]
                    return format(statistics.median(vals), fmt) if vals else "–"

                fails = len(rows[method]) - len(done)
                summary[(name, photons, method)] = [r["err"] for r in done]
                print(f"| {name} | {photons:.0e} | {method}"
                      f"{f' ({fails} failed)' if fails else ''} | {med('err', '.3f')} | "
                      f"{med('err_amp', '.3f')} | {med('phase', '.3f')} | {med('r', '.3f')} | "
                      f"{med('free', '.3f')} | {med('wall', '.1f')} | {med('its', '.0f')} | "
                      f"{med('to_classic', '.0f')} |", flush=True)
    print()
    print("Error relative to classic (median error of the method / median of classic; "
          "< 0.75 is the low-dose target):")
    for (name, photons, method), errs in summary.items():
        base = summary.get((name, photons, "classic"))
        if method != "classic" and base:
            print(f"- {name} {photons:.0e} {method}: "
                  f"{statistics.median(errs) / max(statistics.median(base), 1e-12):.2f}")
    print(f"\nwhole benchmark: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
