"""Symmetry breaking makes end-to-end phase retrieval learnable: two tables.

1. **Real Gaussian phase retrieval** (``y = |A x|^2``, x ∈ R^5 i.i.d. N(0, 1), A 20×5
   i.i.d. Gaussian; the ambiguity is the global sign): relative error modulo the sign
   on 5000 held-out pairs of a fully connected network (3 × 256, Adam, cosine decay,
   ``steps = max(20000, 20 epochs of 512)``) and of a 5-nearest-neighbour regressor,
   trained on raw targets ("before") and on targets moved to the half-space
   ``x_1 >= 0`` ("after", :class:`sipflow.symmetry.SignGroup`), per training-set size,
   beside the table of SCIENCE.md §3.
2. **Far field** (32² patterns, objects ``blob``/``cells`` of sipflow.simulate on a
   random point of their orbit, 1e7 photons): the ``phase.learned`` network trained
   with and without symmetry breaking on the same pairs and budget, scored on held-out
   scans by the error modulo phase, translation and twin; beside ``phase.classic``
   with its defaults on the same scans, and ``phase.classic`` started from the
   learned object (``initial_object: input``).

Usage::

    python benchmarks/bench_symmetry.py [--sizes 2e4 5e4 1e5 1e6] [--skip-gaussian]
        [--skip-far-field] [--samples 3000] [--epochs 12] [--width 16] [--test 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from sipflow import run_pipeline, schema
from sipflow.learned import LearnedModel, TrainConfig, draw, gaussian, train
from sipflow.pipeline import Pipeline
from sipflow.symmetry import get_group

#: SCIENCE.md §3 (relative error %, dim 5)
REFERENCE = {20_000: (85.37, 68.26, 4.08, 11.82), 50_000: (90.51, 66.58, 2.20, 9.41),
             100_000: (96.66, 66.18, 1.30, 7.98), 1_000_000: (122.71, 65.08, 0.37, 4.71)}


def gaussian_table(sizes: list[int], test: int, seed: int) -> None:
    print("\n## Real Gaussian phase retrieval (dim 5, 20 measurements), relative error % "
          "modulo the sign\n")
    print("| samples | steps | DNN before | K-NN before | DNN after | K-NN after | "
          "reference (DNN/K-NN before, DNN/K-NN after) | wall [s] |")
    print("|---|---|---|---|---|---|---|---|")
    problem = gaussian.GaussianPR(dim=5, measurements=20, seed=seed)
    y_test, x_test = problem.pairs(test, seed + 10_000)
    for n in sizes:
        t0 = time.perf_counter()
        y, x = problem.pairs(n, seed)
        steps = max(20_000, 20 * n // 512)
        cells = []
        for targets in (x, gaussian.break_symmetry(x)):
            net = gaussian.fit_mlp(y, targets, steps=steps, seed=seed)
            cells.append(gaussian.relative_error(gaussian.predict_mlp(net, y_test), x_test))
            cells.append(gaussian.relative_error(gaussian.knn_predict(y, targets, y_test, 5),
                                                 x_test))
        ref = REFERENCE.get(n)
        ref_text = " / ".join(f"{v:.2f}" for v in ref) if ref else "–"
        print(f"| {n:.0e} | {steps} | " + " | ".join(f"{100 * c:.2f}" for c in cells)
              + f" | {ref_text} | {time.perf_counter() - t0:.0f} |", flush=True)


def _scan(obj: np.ndarray, counts: np.ndarray, index: int) -> xr.Dataset:
    ddims, rdims = schema.detector_dims(2), schema.real_dims(2)
    return xr.Dataset({schema.INTENSITY: (ddims, counts.astype(np.float32)),
                       schema.MASK: (ddims, np.ones(counts.shape, bool)),
                       schema.OBJ_TRUE: (rdims, obj.astype(np.complex64))},
                      attrs={"source": f"held-out scan {index}"})


def far_field_table(samples: int, epochs: int, width: int, test: int, seed: int,
                    folder: Path) -> None:
    base = TrainConfig(shape=(32, 32), samples=samples, validation=100, epochs=epochs,
                       width=width, depth=4, batch_size=32, lr=3e-3, seed=seed)
    group = get_group("farfield")
    models, train_s = {}, {}
    for broken in (True, False):
        t0 = time.perf_counter()
        result = train(base.model_copy(update={"symmetry_break": broken}),
                       folder / f"broken-{broken}")
        train_s[broken] = time.perf_counter() - t0
        models[broken] = LearnedModel.load(result.path)
        print(f"trained symmetry_break={broken}: {train_s[broken]:.0f} s, validation error "
              f"{result.val_error:.3f}", flush=True)
    classic = Pipeline.load({"stages": [{"use": "phase.classic"}]})
    refined = Pipeline.load({"stages": [
        {"use": "phase.learned", "with": {"model": str(folder / "broken-True" / "model.pt")}},
        {"use": "phase.classic", "with": {"initial_object": "input"}}]})
    errors: dict[str, list[float]] = {k: [] for k in (
        "learned, symmetry broken", "learned, not broken", "phase.classic (defaults)",
        "learned → phase.classic")}
    times: dict[str, list[float]] = {k: [] for k in errors}
    for i in range(test):
        obj, counts = draw(base, seed * 2 + 1000, i)  # a stream the training never saw
        ds = _scan(obj, counts, i)
        for name, broken in (("learned, symmetry broken", True), ("learned, not broken", False)):
            t0 = time.perf_counter()
            x = models[broken].reconstruct(counts)
            times[name].append(time.perf_counter() - t0)
            errors[name].append(group.error(x, obj))
        for name, pipe in (("phase.classic (defaults)", classic),
                           ("learned → phase.classic", refined)):
            t0 = time.perf_counter()
            try:
                out = run_pipeline(pipe, ds, seed=i)
                errors[name].append(group.error(out[schema.OBJ].values, obj))
            except Exception as exc:  # a failed reconstruction counts as error 1
                print(f"  scan {i}: {name} failed: {exc}")
                errors[name].append(1.0)
            times[name].append(time.perf_counter() - t0)
    print(f"\n## Far field, 32², {test} held-out scans (1e7 photons), error modulo phase, "
          f"translation and twin\n\nTraining: {samples} pairs, {epochs} epochs, width {width}; "
          f"{train_s[True]:.0f} s (broken) and {train_s[False]:.0f} s (not broken).\n")
    print("| method | median error | mean error | best | worst | share < 0.3 | time per scan "
          "[s] |")
    print("|---|---|---|---|---|---|---|")
    for name, values in errors.items():
        v = np.asarray(values)
        print(f"| {name} | {np.median(v):.3f} | {v.mean():.3f} | {v.min():.3f} | "
              f"{v.max():.3f} | {np.mean(v < 0.3):.0%} | {statistics.median(times[name]):.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[2e4, 5e4, 1e5, 1e6])
    p.add_argument("--skip-gaussian", action="store_true")
    p.add_argument("--skip-far-field", action="store_true")
    p.add_argument("--samples", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("SIPFLOW_NUM_THREADS", os.cpu_count() or 1)))
    print(f"# bench_symmetry on {platform.node()}: {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_gaussian:
        gaussian_table([int(s) for s in args.sizes], 5000, args.seed)
    if not args.skip_far_field:
        with tempfile.TemporaryDirectory(prefix="bench-symmetry-") as tmp:
            far_field_table(args.samples, args.epochs, args.width, args.test, args.seed,
                            Path(tmp))


if __name__ == "__main__":
    main()
