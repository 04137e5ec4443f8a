"""Per-iteration time of HIO: sipflow vs the floor vs NumPy vs cohere-core, one table.

For each size (256², 512², 1024², 128³) and runs (1, 16) it times, on the same
simulated data and in the same process:

1. ``sipflow``: the ``phase.classic`` engine (:func:`sipflow.reconstruct.iterate`)
   running ``HIO**n`` with its default settings (LLK every 10 iterations);
2. ``floor``: a bare torch loop doing only the unavoidable work — one FFT pair, the
   masked magnitude replacement and the HIO support step;
3. ``numpy``: the same iteration written plainly with ``numpy.fft``;
4. ``cohere-np`` / ``cohere-torch``: cohere-core's own HIO iteration (``Rec.iterate``)
   with its numpy and torch libraries, when cohere-core is installed
   (``pip install cohere-core``; a benchmark-only dependency, installed by
   ``make bench``). cohere runs one reconstruction per process, so only runs = 1.

It also prints "16 batched / 16 sequential" for sipflow. Times are medians of
repeats, in milliseconds per iteration (for 16 runs: per iteration of all 16).

Usage::

    python benchmarks/bench_hio.py [--quick] [--device cuda] [--iterations 10]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sipflow.reconstruct import EngineSettings, iterate, parse
from sipflow.simulate import Simulation, simulate


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _data(shape):
    arrays = simulate(Simulation(shape=shape, photons=1e9, kind="blob" if len(shape) == 2
                                 else "crystal", seed=0))
    return arrays["intensity"].astype(np.float32), arrays["mask"], arrays["support"]


def time_sipflow(intensity, mask, runs, n, device, repeats):
    i = torch.as_tensor(intensity, device=device)
    m = torch.as_tensor(mask, device=device)
    plan = parse(f"HIO**{n}")
    settings = EngineSettings(progress_every=10**9)

    def once():
        for _ in iterate(i, m, plan, list(range(runs)), settings):
            pass

    once()  # warm-up (plans, allocator)
    # subtract the fixed set-up cost (autocorrelation support, random start) measured at n=1
    plan_setup = parse("HIO")

    def setup():
        for _ in iterate(i, m, plan_setup, list(range(runs)), settings):
            pass

    t_setup = _median(setup, device, repeats)
    return max(_median(once, device, repeats) - t_setup, 0.0) / (n - 1)


def _median(fn, device, repeats):
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_floor(intensity, mask, support, runs, n, device, repeats):
    ndim = intensity.ndim
    dims = tuple(range(-ndim, 0))
    amp = torch.fft.ifftshift(torch.sqrt(torch.as_tensor(intensity, device=device)), dim=dims)
    m = torch.fft.ifftshift(torch.as_tensor(mask, device=device), dim=dims)
    s = torch.fft.ifftshift(torch.as_tensor(support, device=device), dim=dims)
    x0 = torch.randn((runs, *intensity.shape), dtype=torch.complex64, device=device)
    beta = 0.9

    sv, mv = s, m

    def loop():
        # the fastest formulation we know on CPU torch: real multiply through a real view,
        # fused x - beta d, and where() on the complex64 bits viewed as float64
        x = x0
        for _ in range(n):
            f = torch.fft.fftn(x, dim=dims, norm="ortho")
            scale = torch.where(mv, amp / f.abs().clamp_min(1e-12), 1.0)
            f = torch.view_as_complex(torch.view_as_real(f) * scale.unsqueeze(-1))
            d = torch.fft.ifftn(f, dim=dims, norm="ortho")
            out = torch.add(x, d, alpha=-beta)
            x = torch.where(sv, d.view(torch.float64), out.view(torch.float64)).view(
                torch.complex64)
        return x

    loop()
    return _median(loop, device, repeats) / n


def time_numpy(intensity, mask, support, runs, n, repeats):
    axes = tuple(range(-intensity.ndim, 0))
    amp = np.fft.ifftshift(np.sqrt(intensity))
    m = np.fft.ifftshift(mask)
    s = np.fft.ifftshift(support)
    rng = np.random.default_rng(0)
    x0 = (rng.standard_normal((runs, *intensity.shape))
          + 1j * rng.standard_normal((runs, *intensity.shape))).astype(np.complex64)

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
    return _median(loop, "cpu", repeats) / n


def time_cohere(intensity, n, pkg, repeats, workdir):
    """cohere-core's own HIO iteration (``Rec.iterate``) with its numpy or torch library.

    Returns None when cohere-core is not installed. cohere reads the centred amplitudes
    from a .npy file and runs ``algorithm_sequence`` on them; its per-call overhead
    (one final normalisation) is included, as a user of it would pay it.
    """
    try:
        from cohere_core.controller.phasing import Rec
    except ImportError:
        return None
    path = Path(workdir) / f"amplitudes_{'x'.join(map(str, intensity.shape))}.npy"
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
        return _median(run, "cpu", repeats) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="256² and 64³ only")
    args = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    sizes = [(256, 256), (64, 64, 64)] if args.quick else [(256, 256), (512, 512),
                                                            (1024, 1024), (128, 128, 128)]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"numpy {np.__version__}, device {args.device}")
    header = ("size", "runs", "sipflow", "floor", "numpy", "cohere-np", "cohere-torch",
              "sipflow/floor", "numpy/sipflow", "cohere-np/sipflow", "cohere-torch/sipflow")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    n, rep = args.iterations, args.repeats
    workdir = tempfile.mkdtemp(prefix="sipflow-bench-")

    def ms(t):
        return "n/a" if t is None else f"{1e3 * t:.2f}"

    def ratio(a, b):
        return "n/a" if a is None or b is None else f"{a / b:.2f}"

    for shape in sizes:
        intensity, mask, support = _data(shape)
        single = floor_single = None
        for runs in (1, 16):
            t_sip = time_sipflow(intensity, mask, runs, n, args.device, rep)
            t_floor = time_floor(intensity, mask, support, runs, n, args.device, rep)
            if runs == 1:
                single, floor_single = t_sip, t_floor
            else:  # the floor of 16 runs: one batch or 16 single runs, whichever is faster
                t_floor = min(t_floor, 16 * floor_single)
            t_np = time_numpy(intensity, mask, support, runs, max(2, n // 2), 1)
            t_cnp = time_cohere(intensity, n, "np", rep, workdir) if runs == 1 else None
            t_cto = time_cohere(intensity, n, "torch", rep, workdir) if runs == 1 else None
            print(f"| {'x'.join(map(str, shape))} | {runs} | {ms(t_sip)} | {ms(t_floor)} | "
                  f"{ms(t_np)} | {ms(t_cnp)} | {ms(t_cto)} | {ratio(t_sip, t_floor)} | "
                  f"{ratio(t_np, t_sip)} | {ratio(t_cnp, t_sip)} | {ratio(t_cto, t_sip)} |",
                  flush=True)
        print(f"| {'x'.join(map(str, shape))} | 16 batched / 16 sequential | "
              f"{t_sip / (16 * single):.2f} |" + " |" * (len(header) - 3), flush=True)


if __name__ == "__main__":
    main()
