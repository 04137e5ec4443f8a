"""How exact a support a complex object needs behind a beamstop: error in fixed supports.

``phase.classic`` without positivity and without shrinkwrap (``HIO**600 * ER**300``, 2
runs, ``initial_support: input``) on ``bench_robustness.py``'s simulated patterns, in the
true support (amplitude above 10 % of its maximum, on the preprocessed grid) and in that
support grown by 1, 2, ... pixels. The table gives the selected run's error modulo
phase, translation and twin (``sipflow.symmetry``): how far a support update must get
before the data alone pin the hidden low frequencies of a complex object. It is why the
``default`` template ends its shrinkwrap with a blur of 0.4 px (benchmarks/README.md).

Usage::

    python benchmarks/bench_fixed_support.py [--objects lithograph cells] [--photons 1e8]
        [--seeds 2] [--beamstop 10] [--grow 0 1 2]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
from bench_robustness import OBJECTS, dataset, realistic
from scipy import ndimage

import sipflow
from sipflow import schema
from sipflow.reconstruct import Classic
from sipflow.symmetry import align

PARAMS = {"schedule": "HIO**600 * ER**300", "runs": 2, "initial_support": "input",
          "restarts": 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", nargs="+", default=["lithograph", "cells"],
                   choices=list(OBJECTS))
    p.add_argument("--photons", type=float, default=1e8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--beamstop", type=float, default=10.0, help="radius [pixels]")
    p.add_argument("--grow", nargs="+", type=int, default=[0, 1, 2],
                   help="dilations of the true support [pixels]")
    args = p.parse_args()
    print(f"# {platform.machine()}, {args.size}², beamstop r = {args.beamstop:g} px, "
          f"{args.photons:.0e} photons, {PARAMS['schedule']}, no positivity")
    print("| object | seed | " + " | ".join(f"+{g} px: support / error" for g in args.grow)
          + " |")
    print("|---|---|" + "---|" * len(args.grow))
    for name in args.objects:
        for seed in range(args.seeds):
            sim = realistic(name, args.size, args.photons, args.beamstop, seed)
            prep = sipflow.run_pipeline({"stages": ["prep.standard"]}, dataset(sim),
                                        seed=seed, device="cpu")
            amp = np.abs(prep[schema.OBJ_TRUE].values)
            true = amp > 0.1 * amp.max()
            cells = []
            for g in args.grow:
                support = ndimage.binary_dilation(true, iterations=g) if g else true
                ds = prep.assign({schema.SUPPORT: (schema.real_dims(2), support)})
                try:
                    out = Classic()(ds, PARAMS, sipflow.Context(seed=seed, device="cpu"))
                    err = align(prep[schema.OBJ_TRUE].values.astype(np.complex128),
                                out[schema.OBJ].values.astype(np.complex128)).error
                    cells.append(f"{int(support.sum())} / {err:.3f}")
                except sipflow.SipflowError as exc:
                    cells.append(f"{int(support.sum())} / failed ({type(exc).__name__})")
            print(f"| {name} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
