"""Per-iteration time of HIO: sipflow vs the floor vs NumPy vs cohere-core, one table.

For each size (256², 512², 1024², 128³) and runs (1, 16) it times, on the same
simulated data:

1. ``sipflow``: the ``phase.classic`` engine (:func:`sipflow.reconstruct.iterate`)
   running ``HIO**2n`` with its default settings (LLK every 10 iterations), timed
   between its progress records at iterations n and 2n, so without the set-up;
2. ``floor``: a bare torch loop doing only the unavoidable work — one FFT pair, the
   masked magnitude replacement and the HIO support step — in the fastest
   formulation we know, with the same allocator setting as sipflow; for 16 runs the
   faster of one batch and 16 single runs;
3. ``numpy``: the same iteration written plainly with ``numpy.fft``;
4. ``cohere-np`` / ``cohere-torch``: cohere-core's own HIO iteration (``Rec.iterate``)
   with its numpy and torch libraries, when cohere-core is installed
   (``pip install cohere-core``; a benchmark-only dependency, installed by
   ``make bench``). cohere runs one reconstruction per process, so only runs = 1.
   ``cohere-torch+m`` is cohere's torch back end with sipflow's allocator setting
   (:mod:`sipflow.reconstruct._memory`) switched on first, to show how much of the
   difference is the allocator and how much the iteration itself.

Every implementation is measured in a fresh Python process, so that none inherits
another's allocator state, caches or thread pools; sipflow and the floor share one,
alternating, so that a slow spell of the machine hits both. sipflow, the floor and
cohere-torch are measured in two rounds. Times are the fastest of all repeats (on a
shared machine noise only adds time), in milliseconds per iteration (for 16 runs: per
iteration of all 16). The last row of each size is sipflow's 16-run
time over 16 times its single-run time.

Usage::

    python benchmarks/bench_hio.py [--quick] [--device cuda] [--iterations 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

IMPLEMENTATIONS = ("sipflow", "floor", "numpy", "cohere-np", "cohere-torch", "cohere-torch+m")
SINGLE_RUN_ONLY = {"cohere-np", "cohere-torch", "cohere-torch+m"}
#: processes per table row, in order; sipflow and the floor share one (alternating)
PROCESSES = ("sipflow+floor", "cohere-torch", "cohere-torch+m", "numpy", "cohere-np")
#: measured again in a second round, the best of both kept: the ratios that matter
SECOND_ROUND = ("sipflow+floor", "cohere-torch", "cohere-torch+m")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(fn, device, repeats):
    """Fastest of `repeats` calls, in seconds: on a shared machine, noise only adds time."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _data(shape):
    from sipflow.simulate import Simulation, simulate

    arrays = simulate(Simulation(shape=shape, photons=1e9, kind="blob" if len(shape) == 2
                                 else "crystal", seed=0))
    return arrays["intensity"].astype(np.float32), arrays["mask"], arrays["support"]


def sipflow_timer(intensity, mask, runs, n, device):
    """A function that runs sipflow once and returns seconds per iteration."""
    from sipflow.reconstruct import EngineSettings, iterate, parse

    i = torch.as_tensor(intensity, device=device)
    m = torch.as_tensor(mask, device=device)
    # time between the progress records of iterations n and 2n: no set-up (support,
    # random start) and no final centring; LLKs every 10 iterations as by default
    settings = EngineSettings.from_params(ndim=intensity.ndim, progress_every=n)
    plan = parse(f"HIO**{2 * n}")

    def once():
        stamps = []
        for _ in iterate(i, m, plan, list(range(runs)), settings):
            _sync(device)
            stamps.append(time.perf_counter())
        return (stamps[-1] - stamps[0]) / n

    return once


def floor_timer(intensity, mask, support, runs, n, device):
    """A function that runs the floor loop once and returns seconds per iteration."""
    from sipflow.reconstruct._memory import reuse_freed_memory

    if device == "cpu":
        reuse_freed_memory()
    ndim = intensity.ndim
    dims = tuple(range(-ndim, 0))
    amp = torch.fft.ifftshift(torch.sqrt(torch.as_tensor(intensity, device=device)), dim=dims)
    m = torch.fft.ifftshift(torch.as_tensor(mask, device=device), dim=dims)
    s = torch.fft.ifftshift(torch.as_tensor(support, device=device), dim=dims).float()
    x0 = torch.randn((runs, *intensity.shape), dtype=torch.complex64, device=device)
    beta = 0.9
    # unnormalised FFTs: |f| = sqrt(N) |F x|, folded into the target magnitudes
    target = torch.where(m, amp, 0.0) * float(np.prod(intensity.shape)) ** 0.5
    keep = (~m).float()
    a, b = s * (1 + beta) - beta, 1 - s  # HIO: x' = a d + b x
    tiny = torch.tensor(torch.finfo(torch.float32).tiny, device=device)

    def loop():
        x = x0
        for _ in range(n):
            f = torch.fft.fftn(x, dim=dims)
            power = torch.addcmul(tiny, f.real, f.real).addcmul_(f.imag, f.imag)
            f.mul_(torch.addcmul(keep, target, power.rsqrt_(), out=power))
            x = torch.fft.ifftn(f, dim=dims).mul_(a).addcmul_(x, b)
        return x

    def once():
        _sync(device)
        t0 = time.perf_counter()
        loop()
        _sync(device)
        return (time.perf_counter() - t0) / n

    return once


def time_sipflow_and_floor(intensity, mask, support, runs, n, device, repeats):
    """Both in one process, alternating, so that a slow spell of the machine hits both."""
    timers = {"sipflow": sipflow_timer(intensity, mask, runs, n, device),
              "floor": floor_timer(intensity, mask, support, runs, n, device)}
    for timer in timers.values():
        timer()  # warm-up (FFT plans, allocator)
    best = {name: float("inf") for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name] = min(best[name], timer())
    return best


def time_numpy(intensity, mask, support, runs, n):
    axes = tuple(range(-intensity.ndim, 0))
    amp = np.fft.ifftshift(np.sqrt(intensity))
    m = np.fft.ifftshift(mask)
    s = np.fft.ifftshift(support)
    rng = np.random.default_rng(0)
    x0 = (rng.standard_normal((runs, *intensity.shape))
          + 1j * rng.standard_normal((runs, *intensity.shape))).astype(np.complex64)
    n = max(2, n // 4)  # slow: fewer iterations, one repeat

    def loop():
        x = x0
        for _ in range(n):
            f = np.fft.fftn(x, axes=axes)
            mag = np.abs(f)
            f = np.where(m, amp * f / np.maximum(mag, 1e-12), f)
            d = np.fft.ifftn(f, axes=axes)
            x = np.where(s, d, x - 0.9 * d)
        return x

    loop()
    return _best(loop, "cpu", 1) / n


def time_cohere(intensity, n, pkg, repeats, tuned):
    """cohere-core's own HIO iteration (``Rec.iterate``) with its numpy or torch library.

    Returns None when cohere-core is not installed. cohere reads the centred amplitudes
    from a .npy file and runs ``algorithm_sequence`` on them; its per-call overhead
    (one final normalisation) is included, as a user of it would pay it.
    """
    try:
        from cohere_core.controller.phasing import Rec
    except ImportError:
        return None
    if tuned:
        from sipflow.reconstruct._memory import reuse_freed_memory

        reuse_freed_memory()
    path = Path(tempfile.mkdtemp(prefix="sipflow-bench-")) / "amplitudes.npy"
    np.save(path, np.sqrt(intensity).astype(np.float32))
    params = {"algorithm_sequence": f"{n}*HIO", "hio_beta": 0.9,
              "initial_support_area": [0.5] * intensity.ndim}
    with contextlib.redirect_stdout(io.StringIO()):
        rec = Rec(params, str(path), pkg)
        if rec.init_dev(-1) != 0 or rec.init_iter_loop() != 0:
            return None

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                rec.iterate()

        run()
        return _best(run, "cpu", repeats) / n


def measure_one(impl, shape, runs, n, device, repeats):
    """Seconds per iteration of one implementation, or None if it cannot run."""
    intensity, mask, support = _data(shape)
    if impl == "sipflow+floor":
        return time_sipflow_and_floor(intensity, mask, support, runs, n, device, repeats)
    if impl == "numpy":
        return time_numpy(intensity, mask, support, runs, n)
    pkg = "np" if impl == "cohere-np" else "torch"
    return time_cohere(intensity, n, pkg, repeats, tuned=impl.endswith("+m"))


def _in_fresh_process(impl, shape, runs, args):
    cmd = [sys.executable, __file__, "--one", impl, "x".join(map(str, shape)), str(runs),
           "--iterations", str(args.iterations), "--repeats", str(args.repeats),
           "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  ({impl} {shape} x{runs} failed: {out.stderr.strip().splitlines()[-1:]})",
              file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="256² and 64³ only")
    p.add_argument("--sizes", nargs="+", metavar="SHAPE",
                   help="shapes to measure, e.g. 128x128 64x64x64 (default: the issue's four)")
    p.add_argument("--one", nargs=3, metavar=("IMPL", "SHAPE", "RUNS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        impl, shape, runs = args.one
        t = measure_one(impl, tuple(int(v) for v in shape.split("x")), int(runs),
                        args.iterations, args.device, args.repeats)
        print(json.dumps(t))
        return
    sizes = [(256, 256), (512, 512), (1024, 1024), (128, 128, 128)]
    if args.quick:
        sizes = [(256, 256), (64, 64, 64)]
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"numpy {np.__version__}, device {args.device}")
    header = ("size", "runs", *IMPLEMENTATIONS, "sipflow/floor", "numpy/sipflow",
              "cohere-np/sipflow", "cohere-torch/sipflow", "cohere-torch+m/sipflow")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)

    def ms(t):
        return "n/a" if t is None else f"{1e3 * t:.2f}"

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}"

    for shape in sizes:
        single = None
        for runs in (1, 16):
            t = dict.fromkeys(IMPLEMENTATIONS)
            for round_ in (1, 2):
                for proc in PROCESSES:
                    if (runs > 1 and proc in SINGLE_RUN_ONLY) or (
                            round_ == 2 and proc not in SECOND_ROUND):
                        continue
                    got = _in_fresh_process(proc, shape, runs, args)
                    if not isinstance(got, dict):
                        got = {proc: got}
                    for impl, value in got.items():
                        if value is not None:
                            t[impl] = value if t[impl] is None else min(t[impl], value)
            if runs == 1:
                single = t
            elif t["floor"] is not None and single["floor"] is not None:
                t["floor"] = min(t["floor"], 16 * single["floor"])  # batch or 16 single runs
            sip = t["sipflow"]
            cells = [ms(t[impl]) for impl in IMPLEMENTATIONS]
            ratios = [ratio(sip, t["floor"]), ratio(t["numpy"], sip), ratio(t["cohere-np"], sip),
                      ratio(t["cohere-torch"], sip), ratio(t["cohere-torch+m"], sip)]
            print(f"| {'x'.join(map(str, shape))} | {runs} | " + " | ".join(cells + ratios)
                  + " |", flush=True)
        batched = ratio(t["sipflow"], 16 * single["sipflow"] if single["sipflow"] else None)
        print(f"| {'x'.join(map(str, shape))} | 16 batched / 16 sequential | {batched} |"
              + " |" * (len(header) - 3), flush=True)


if __name__ == "__main__":
    main()
