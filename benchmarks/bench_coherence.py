"""Partial coherence: phase.classic with and without the ``psf`` kernel estimate, side by side.

Simulated far-field patterns blurred by a known Gaussian kernel (``coherence_sigma``,
the partially coherent beam) with Poisson noise; ``phase.classic`` runs the coherent
schedule and the same number of iterations with ``psf`` steps (Richardson–Lucy
updates of an incoherent kernel on the intensity, as PyNX and cohere do). Columns:
free LLK of the best run (about 1 when the model fits the data), error modulo
phase, translation and twin, the recovered kernel's RMS width against the true one,
and the wall time.

Usage::

    python benchmarks/bench_coherence.py [--seeds 3] [--blur 0 0.7 1 1.5] [--size 64]
        [--with-3d]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from sipflow import run_pipeline, schema
from sipflow.pipeline import Pipeline
from sipflow.symmetry import get_group
from sipflow.testing import simulated_dataset

COHERENT = "(sup * ER**5 * HIO**40)**20 * ER**100"
PSF = "(sup * ER**5 * HIO**40)**4 * (sup * psf * ER**5 * HIO**40)**16 * (psf * ER**20)**5"


def run(ds, schedule: str, seed: int) -> tuple[float, float, list[float] | None, float]:
    t0 = time.perf_counter()
    pipe = Pipeline.load({"stages": [{"use": "phase.classic",
                                      "with": {"schedule": schedule, "runs": 4}}]})
    try:
        out = run_pipeline(pipe, ds, seed=seed)
    except Exception:  # every run failed: the worst score
        return float("inf"), 1.0, None, time.perf_counter() - t0
    pc = out.attrs["phase_classic"]
    err = get_group("farfield").error(out[schema.OBJ].values, out[schema.OBJ_TRUE].values)
    return (pc["final_llk_free"][pc["best_run"]], err, pc.get("coherence_kernel_rms_px"),
            time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--blur", type=float, nargs="+", default=[0.0, 0.7, 1.0, 1.5])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--kinds", nargs="+", default=["cells", "blob"])
    p.add_argument("--with-3d", action="store_true", help="also a 32³ crystal (slow)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("SIPFLOW_NUM_THREADS", os.cpu_count() or 1)))
    print(f"# bench_coherence on {platform.node()}: {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; medians over "
          f"{args.seeds} seeds, 1e8 photons, 4 runs each\n")
    print("| object | blur σ [px] | free LLK coherent | free LLK psf | error coherent | "
          "error psf | kernel RMS [px] | psf better (free LLK, error) | time coherent / psf "
          "[s] |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [(k, (args.size, args.size)) for k in args.kinds]
    if args.with_3d:
        cases.append(("crystal", (32, 32, 32)))
    for kind, shape in cases:
        for sigma in args.blur:
            rows = []
            for seed in range(args.seeds):
                ds = simulated_dataset(shape, photons=1e8, kind=kind, seed=seed,
                                       coherence_sigma=sigma, extent=0.4)
                rows.append((run(ds, COHERENT, seed), run(ds, PSF, seed)))
            med = statistics.median
            widths = [float(sum(w) / len(w)) for _, (_, _, w, _) in rows if w]
            better = (sum(a[0] < c[0] for c, a in rows), sum(a[1] < c[1] for c, a in rows))
            print(f"| {kind} {'×'.join(map(str, shape))} | {sigma:g} | "
                  f"{med(c[0] for c, _ in rows):.3g} | {med(a[0] for _, a in rows):.3g} | "
                  f"{med(c[1] for c, _ in rows):.3f} | {med(a[1] for _, a in rows):.3f} | "
                  f"{med(widths):.2f} | {better[0]}/{len(rows)}, {better[1]}/{len(rows)} | "
                  f"{med(c[3] for c, _ in rows):.1f} / {med(a[3] for _, a in rows):.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
