"""Concurrent reconstructions on one machine: a fair share of the cores, no collapse.

N reconstructions (N = the cores this process may use) are run one after another and
then all started together, each in its own process. With sipflow's core sharing each
concurrent run sizes its threads to ``cores // runs``; the ``all threads`` column forces
every process to use every core (``SIPFLOW_NUM_THREADS=cores``, torch's default), which
is what made two runs on two cores 25 times slower each.

Target: the concurrent batch finishes within 1.3x the time of running the same runs
one after another.

Usage::

    python benchmarks/bench_concurrency.py [--sizes 256 512] [--iterations 600 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
import sipflow
from sipflow.testing import simulated_dataset
n, iters = int(sys.argv[1]), int(sys.argv[2])
ds = simulated_dataset((n, n), photons=1e9, seed=1)
pipe = {"stages": [{"use": "phase.classic", "with": {
    "schedule": f"HIO**{iters}", "runs": 1, "initial_support": "circle", "free_fraction": 0}}]}
t0 = time.perf_counter()
out = sipflow.run_pipeline(pipe, ds, seed=0, device="cpu")
print(json.dumps({"wall": time.perf_counter() - t0,
                  "stage": out.attrs["provenance"]["stages"][0]["wall_s"]}))
"""


def _start(n: int, iters: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(n), str(iters)],
                            stdout=subprocess.PIPE, text=True, env=env)


def _stage_time(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])["stage"]


def measure(n: int, iters: int, runs: int, env: dict[str, str]) -> tuple[float, float]:
    """(one after another, all together) wall times of the reconstruction stages [s]."""
    sequential = sum(_stage_time(_start(n, iters, env)) for _ in range(runs))
    procs = [_start(n, iters, env) for _ in range(runs)]
    return sequential, max(_stage_time(p) for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--iterations", type=int, nargs="+", default=[600, 200])
    ap.add_argument("--runs", type=int, default=0, help="concurrent runs (default: cores)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    runs = args.runs or cores
    tokens = tempfile.mkdtemp(prefix="sipflow-bench-tokens-")
    base = os.environ | {"SIPFLOW_TOKEN_DIR": tokens}
    base.pop("SIPFLOW_NUM_THREADS", None)
    shared = base
    greedy = base | {"SIPFLOW_NUM_THREADS": str(cores)}
    print(f"# {platform.processor() or platform.machine()}, {cores} cores, {runs} runs, "
          f"python {platform.python_version()}")
    print(f"{'size':>6} {'iters':>6} | {'sequential s':>12} {'together s':>10} {'ratio':>6} "
          f"| {'all threads: seq':>16} {'together':>9} {'ratio':>6}")
    for n, iters in zip(args.sizes, args.iterations, strict=False):
        seq, tog = measure(n, iters, runs, shared)
        gseq, gtog = measure(n, iters, runs, greedy)
        print(f"{n:>5}² {iters:>6} | {seq:>12.2f} {tog:>10.2f} {tog / seq:>6.2f} "
              f"| {gseq:>16.2f} {gtog:>9.2f} {gtog / gseq:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
