"""Run PyGRANSO 1.2.0 on one tier-1 problem of ``bench_refine.py``, in its own environment.

PyGRANSO is never a dependency of sipflow (AGPL; its release imports ``numpy.core.numeric.Inf``
and ``gurobipy``, so it needs numpy < 2). ``benchmarks/pygranso_env.sh`` builds the pinned
environment; ``bench_refine.py --pygranso-python ENV/bin/python`` calls this script once per
problem with the arrays in an ``.npz`` and reads the answer back, then judges it with the same
certificate as every other method. The problem is built by ``bench_refine.build_problem``
(sipflow's forward model and likelihood), not a copy.

Variables: the real and imaginary parts of the support pixels (the fixed pixels eliminated,
as for every method). PyGRANSO has no simple sets, so ``Re x ≥ 0`` is one folded constraint
``Σ max(0, −Re x) ≤ 0`` (ℓ1 folding, as its documentation recommends for many constraints);
the TV budget and the energy equality are passed scaled as the certificate scales them.

    python pygranso_runner.py IN.npz OUT.npz --case b --time-limit 60
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]


def main() -> None:
    from bench_refine import build_problem
    from pygranso.pygranso import pygranso
    from pygranso.pygransoStruct import pygransoStruct

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--case", choices=["a", "b", "c"], required=True)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--memory", type=int, default=-1,
                   help="L-BFGS memory (0: full BFGS; default: full up to 4000 unknowns)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("SIPFLOW_NUM_THREADS", os.cpu_count() or 1)))
    data = dict(np.load(args.input))
    problem = build_problem(data, args.case)
    var = problem.variables[0]
    free = ~torch.as_tensor(var.fixed)
    m = int(free.sum())
    start = var.init

    def full(z: torch.Tensor) -> torch.Tensor:
        z = z.reshape(-1)
        x = torch.zeros_like(start)
        x[free] = torch.complex(z[:m], z[m:])
        return x

    def combined_fn(xs):
        z = xs.x.reshape(-1)
        v = {"x": full(z)}
        f = problem.objective(v)
        ci = pygransoStruct()
        ci.nonneg = torch.clamp(-z[:m], min=0).sum().reshape(1, 1)
        for name, fn in problem.inequalities.items():
            setattr(ci, name, (fn(v) / problem.scales.get(name, 1.0)).reshape(-1, 1))
        ce = None
        if problem.equalities:
            ce = pygransoStruct()
            for name, fn in problem.equalities.items():
                setattr(ce, name, (fn(v) / problem.scales.get(name, 1.0)).reshape(-1, 1))
        return f, ci, ce

    opts = pygransoStruct()
    opts.torch_device = torch.device("cpu")
    opts.double_precision = True
    opts.x0 = torch.cat([start.real[free], start.imag[free]]).reshape(-1, 1).double()
    opts.maxclocktime = args.time_limit
    opts.maxit = 1_000_000
    opts.print_level = 0
    opts.viol_ineq_tol = 1e-6
    opts.viol_eq_tol = 1e-6
    opts.opt_tol = 1e-8
    opts.limited_mem_size = (args.memory if args.memory >= 0
                             else (0 if 2 * m <= 4000 else 20))
    t0 = time.perf_counter()
    soln = pygranso(var_spec={"x": [2 * m, 1]}, combined_fn=combined_fn, user_opts=opts)
    wall = time.perf_counter() - t0
    best = soln.best.x if getattr(soln, "best", None) is not None else soln.final.x
    with torch.no_grad():
        x = full(torch.as_tensor(best).double()).numpy()
    np.savez(args.output, x=x, wall=wall, termination=int(soln.termination_code),
             iterations=int(soln.iters), memory=opts.limited_mem_size)


if __name__ == "__main__":
    main()
