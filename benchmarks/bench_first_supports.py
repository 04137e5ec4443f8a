"""Which first supports let a ``cdi`` run find the object behind a beamstop: runs within 0.1.

The first generation of the ``cdi`` template alone (its first schedule, 8 runs,
``generations: 1``) on ``bench_robustness.py``'s simulated patterns, with the first
support varied. Every run (not only the selected one) is compared with the truth
(relative error modulo phase, translation and twin, ``sipflow.symmetry``), so the table
gives the success rate of one random start, which decides how many runs a set needs.

Variants (one or more, ``;``-separated; ``+`` combines them):

- ``cdi``: the template as it is (autocorrelation at 0.1–0.5 of its maximum; a run whose
  support is too small starts from a circle of radius 0.10–0.25 of the array);
- ``auto``: autocorrelation only (the circle rule disabled);
- ``ra`` / ``rb`` / ``rc``: circles of radius 0.10–0.15 / 0.15–0.20 / 0.20–0.25;
- ``sw05``: shrinkwrap threshold 0.05; ``rms``: PyNX's rms reference at 0.2.

Usage::

    python benchmarks/bench_first_supports.py [--object lithograph] [--photons 1e7]
        [--seeds 10] [--beamstop 10] [--variants "cdi;auto;ra;rb;rc"]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from bench_robustness import OBJECTS, dataset, realistic

import sipflow
from sipflow import schema
from sipflow.symmetry import align

#: the first generation of the cdi template
BASE = {"schedule": "(sup * HIO**50)**12 * (sup * ER**50)**4", "runs": 8, "positivity": True,
        "shrinkwrap_threshold": 0.1, "support_threshold": [0.1, 0.5]}
VARIANTS = {
    "cdi": {},
    "auto": {"support_radius": [0.01, 0.011]},
    "ra": {"support_radius": [0.1, 0.15]},
    "rb": {"support_radius": [0.15, 0.2]},
    "rc": {"support_radius": [0.2, 0.25]},
    "sw05": {"shrinkwrap_threshold": 0.05},
    "rms": {"shrinkwrap_method": "rms", "shrinkwrap_threshold": 0.2},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--object", default="lithograph", choices=list(OBJECTS))
    p.add_argument("--photons", type=float, default=1e7)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--beamstop", type=float, default=10.0, help="radius [pixels]")
    p.add_argument("--variants", default="cdi;auto;ra;rb;rc")
    args = p.parse_args()
    variants = args.variants.split(";")
    print(f"# {platform.machine()}, {args.object}, {args.size}², {args.photons:.0e} photons, "
          f"beamstop r = {args.beamstop:g} px, {args.seeds} seeds")
    print("| variant | runs within 0.1 | sets solved | starts (restarts included) | s / set |")
    print("|---|---|---|---|---|")
    for v in variants:
        params = dict(BASE)
        for part in v.split("+"):
            params.update(VARIANTS[part])
        good = runs = solved = starts = 0
        walls = []
        for seed in range(args.seeds):
            sim = realistic(args.object, args.size, args.photons, args.beamstop, seed)
            pipe = {"stages": [{"use": "prep.standard", "with": {"centre": "auto"}},
                               {"use": "phase.classic", "with": params}]}
            t0 = time.perf_counter()
            try:
                out = sipflow.run_pipeline(pipe, dataset(sim), seed=seed, device="cpu")
            except sipflow.SipflowError:  # every run and restart failed
                walls.append(time.perf_counter() - t0)
                continue
            walls.append(time.perf_counter() - t0)
            pc = out.attrs["phase_classic"]
            truth = out[schema.OBJ_TRUE].values.astype(np.complex128)
            errors = [align(truth, r.astype(np.complex128)).error
                      for r in out[schema.OBJ_RUNS].values]
            good += sum(e < 0.1 for e in errors)
            runs += len(errors)
            starts += sum(pc.get("run_attempts", [1] * len(errors)))
            solved += errors[pc["best_run"]] < 0.1
        print(f"| {v} | {good} / {runs} | {solved} / {args.seeds} | {starts} | "
              f"{float(np.median(walls)):.1f} |", flush=True)


if __name__ == "__main__":
    main()
