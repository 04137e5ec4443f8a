"""Constrained optimisation and refinement: sipflow.optim against the alternatives.

Tier 0: problems with known answers (sipflow.optim.solve vs scipy SLSQP / trust-constr).
Tier 1: CDI refinement started near the truth (a perturbed simulated object), with
(a) support + Re(x) ≥ 0, (b) + a total-variation budget, (c) + the energy equality,
for sipflow (augmented Lagrangian + L-BFGS-B, the amplitude form of the likelihood solved
first as refine.constrained does by default), penalty + Adam, cooper's augmented
Lagrangian (when ``cooper-optim`` is installed), scipy trust-constr (64², case a only,
stopped after 60 s: with the TV budget one problem took 945 s) and PyGRANSO 1.2.0 in its
own environment (``--pygranso-python``; ``pygranso_env.sh`` builds it). Every method's answer is
judged by the same certificate (``sipflow.optim.certify``, multipliers fitted), and rows
stream as they finish.

    python benchmarks/bench_refine.py                       # tier 0, tier 1 at 64², 5 seeds
    python benchmarks/bench_refine.py --n 256 --skip-tier0
    bash benchmarks/pygranso_env.sh && python benchmarks/bench_refine.py --skip-tier0 \
        --only "sipflow AL" PyGRANSO --pygranso-python benchmarks/.pygranso-env/bin/python
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch

from sipflow.optim import Problem, SolverOptions, Variable, penalty_adam, solve
from sipflow.optim import certify as certify_answer
from sipflow.optim._problem import _Packing


def certify(problem: Problem, values: dict[str, torch.Tensor]) -> object:
    """The sipflow certificate of any method's answer (multipliers fitted)."""
    return certify_answer(problem, values, SolverOptions())


# --- tier 0 ------------------------------------------------------------------------------------
def tier0() -> list[dict]:
    from scipy.optimize import NonlinearConstraint, minimize, nnls

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 12)), rng.normal(size=30)
    m = rng.normal(size=(10, 10))
    m = m + m.T
    rows = []

    def s(v):
        return torch.tensor(v, dtype=torch.float64)

    cases = {
        "quadratic + linear equality": (
            Problem(lambda v: (v["x"][0] - 1) ** 2 + (v["x"][1] - 2) ** 2,
                    [Variable("x", s([0.0, 0.0]))],
                    equalities={"line": lambda v: v["x"].sum() - 1}), 2.0),
        "non-negative least squares": (
            Problem(lambda v: 0.5 * ((s(a) @ v["x"] - s(b)) ** 2).sum(),
                    [Variable("x", torch.zeros(12, dtype=torch.float64), lower=0.0)]),
            0.5 * nnls(a, b)[1] ** 2),
        "smallest eigenvalue (sphere)": (
            Problem(lambda v: v["x"] @ s(m) @ v["x"], [Variable("x", s(rng.normal(size=10)))],
                    equalities={"sphere": lambda v: (v["x"] ** 2).sum() - 1}),
            float(np.linalg.eigvalsh(m)[0])),
        "nonsmooth Rosenbrock + constraint": (
            Problem(lambda v: 8 * torch.abs(v["x"][0] ** 2 - v["x"][1]) + (1 - v["x"][0]) ** 2,
                    [Variable("x", s([0.5, 0.2]))],
                    inequalities={"c": lambda v: torch.stack([math.sqrt(2) * v["x"][0] - 1,
                                                              2 * v["x"][1] - 1])}),
            (1 - 1 / math.sqrt(2)) ** 2),
    }
    for name, (problem, optimum) in cases.items():
        t0 = time.perf_counter()
        res = solve(problem)
        c = res.certificate
        rows.append({"problem": name, "method": "sipflow", "objective": c.objective,
                     "optimum": optimum, "violation": c.max_violation, "kkt": c.kkt_residual,
                     "certified": c.certified, "s": time.perf_counter() - t0})
        for method in ("SLSQP", "trust-constr"):
            t0 = time.perf_counter()
            var = problem.variables[0]
            x0 = var.init.numpy()

            def fun(x, problem=problem):
                return float(problem.objective({"x": torch.tensor(x)}))

            cons = []
            for f in problem.inequalities.values():
                cons.append(NonlinearConstraint(
                    lambda x, f=f: np.atleast_1d(f({"x": torch.tensor(x)}).numpy()), -np.inf, 0))
            for f in problem.equalities.values():
                cons.append(NonlinearConstraint(
                    lambda x, f=f: np.atleast_1d(f({"x": torch.tensor(x)}).numpy()), 0, 0))
            bounds = [(var.lower, None)] * x0.size if var.lower is not None else None
            r = minimize(fun, x0, method=method, constraints=cons, bounds=bounds)
            wall = time.perf_counter() - t0
            cert = certify(problem, {"x": torch.tensor(r.x)})
            rows.append({"problem": name, "method": method, "objective": float(r.fun),
                         "optimum": optimum, "violation": cert.max_violation,
                         "kkt": cert.kkt_residual, "certified": cert.certified, "s": wall})
    return rows


# --- tier 1 ------------------------------------------------------------------------------------
def cdi_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """A simulated non-negative object, its counts, and a start perturbed near it."""
    from sipflow.simulate import Simulation, simulate

    sim = Simulation(shape=(n, n), kind="blob", photons=1e9, phase_amplitude=0.0, seed=seed)
    arrays = simulate(sim)
    truth = np.asarray(arrays["obj"], np.complex128)
    support = np.asarray(arrays["support"], bool)
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    x0 = truth + 0.05 * float(np.abs(truth).max()) * noise * support
    return {"truth": truth, "support": support, "x0": x0,
            "counts": np.asarray(arrays["intensity"], np.float64),
            "valid": np.asarray(arrays["mask"], bool)}


def build_problem(arrays: dict[str, np.ndarray], case: str) -> Problem:
    """The refinement problem of `case` on `arrays` (also built so by the PyGRANSO runner)."""
    from sipflow.physics import FarField, normalised_llk
    from sipflow.refine import total_variation
    from sipflow.refine._constraints import _touching

    truth = torch.as_tensor(arrays["truth"], dtype=torch.complex128)
    support = torch.as_tensor(arrays["support"])
    counts = torch.as_tensor(arrays["counts"], dtype=torch.float64)
    valid = torch.as_tensor(arrays["valid"])
    x0 = torch.as_tensor(arrays["x0"], dtype=torch.complex128)
    model = FarField(ndim=2)
    dof = int(valid.sum())

    def objective(v):
        return normalised_llk(model.intensity(v["x"]), counts, valid, dof=dof)

    def amplitude(v):  # refine.constrained's continuation (amplitude_first, the default)
        return normalised_llk(model.intensity(v["x"]), counts, valid, dof=dof, kind="euclidean")

    tv_budget = 1.05 * float(total_variation(truth))  # the truth is feasible
    energy = float(counts[valid].sum())
    ineq, eq, exact, scales = {}, {}, {}, {}
    if case in ("b", "c"):
        eps = 1e-3 * float(x0.abs().max())
        near = _touching(support)  # as refine.constrained: terms that can change
        ineq["tv"] = lambda v: (total_variation(v["x"], eps, near) - tv_budget).reshape(1)
        exact["tv"] = lambda v: (total_variation(v["x"]) - tv_budget).reshape(1)
        scales["tv"] = tv_budget
    if case == "c":
        eq["energy"] = lambda v: (model.intensity(v["x"])[valid].sum() - energy).reshape(1)
        scales["energy"] = energy
    start = torch.where(support, torch.complex(x0.real.clamp_min(0), x0.imag), 0)
    var = Variable("x", start, lower=0.0, fixed=~support)
    # penalty + Adam, cooper, trust-constr and PyGRANSO solve `objective` directly
    return Problem(objective, [var], ineq, eq, scales, exact, continuation=[amplitude])


def error_to_truth(x: torch.Tensor, truth: torch.Tensor) -> float:
    from sipflow.symmetry import align

    return float(align(truth.numpy(), x.detach().numpy()).error)


def run_cooper(problem: Problem, steps: int, lr: float):
    """cooper's augmented Lagrangian (alternating primal-dual, Adam primal steps)."""
    import cooper

    pack = _Packing(problem.variables, torch.float64)
    lower = torch.as_tensor(pack.lower)
    upper = torch.as_tensor(pack.upper)
    z = torch.nn.Parameter(pack.tensor(pack.x0))

    class CMP(cooper.ConstrainedMinimizationProblem):
        def __init__(self):
            super().__init__()
            self.names = []
            for kind, funcs in ((cooper.ConstraintType.INEQUALITY, problem.inequalities),
                                (cooper.ConstraintType.EQUALITY, problem.equalities)):
                for name in funcs:
                    setattr(self, name, cooper.Constraint(
                        constraint_type=kind,
                        formulation_type=cooper.formulations.AugmentedLagrangian,
                        multiplier=cooper.multipliers.DenseMultiplier(num_constraints=1,
                                                                      dtype=torch.float64),
                        penalty_coefficient=cooper.penalty_coefficients.DensePenaltyCoefficient(
                            torch.tensor(10.0, dtype=torch.float64))))
                    self.names.append((name, funcs[name]))

        def compute_cmp_state(self):
            v = pack.unpack(z)
            observed = {}
            for name, f in self.names:
                c = f(v).reshape(-1) / problem.scales.get(name, 1.0)
                observed[getattr(self, name)] = cooper.ConstraintState(violation=c)
            return cooper.CMPState(loss=problem.objective(v), observed_constraints=observed)

    cmp = CMP()
    primal = torch.optim.Adam([z], lr=lr)
    if cmp.names:
        dual = torch.optim.SGD(cmp.dual_parameters(), lr=10.0, maximize=True)
        opt = cooper.optim.AlternatingDualPrimalOptimizer(cmp=cmp, primal_optimizers=primal,
                                                          dual_optimizers=dual)
    else:  # only simple sets: cooper is projected Adam
        opt = cooper.optim.UnconstrainedOptimizer(cmp=cmp, primal_optimizers=primal)
    for _ in range(steps):
        opt.roll()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, upper), lower))
    return {problem.variables[0].name: pack.unpack(z.detach())["x"]}


def run_pygranso(python: str, arrays: dict[str, np.ndarray], case: str, time_limit: float
                 ) -> tuple[dict[str, torch.Tensor], float]:
    """PyGRANSO in its own environment (``pygranso_runner.py``); its answer and solve time."""
    import subprocess
    import tempfile
    from pathlib import Path

    runner = Path(__file__).resolve().parent / "pygranso_runner.py"
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **arrays)
        done = subprocess.run([python, str(runner), str(src), str(dst), "--case", case,
                               "--time-limit", str(time_limit)], capture_output=True,
                              text=True, timeout=time_limit + 600)
        if done.returncode != 0 or not dst.exists():
            raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])
        out = np.load(dst)
        return {"x": torch.as_tensor(out["x"])}, float(out["wall"])


def tier1(n: int, seeds: int, adam_steps: int, trust_constr: bool,
          stream=None, pygranso: str | None = None, pygranso_limit: float = 60.0,
          only: list[str] | None = None, cases: list[str] = ("a", "b", "c"),
          first_seed: int = 0) -> list[dict]:
    rows = []
    try:
        import cooper  # noqa: F401

        have_cooper = True
    except ImportError:
        have_cooper = False
    for case in cases:
        for seed in range(first_seed, first_seed + seeds):
            arrays = cdi_arrays(n, seed)
            problem, truth = build_problem(arrays, case), torch.as_tensor(arrays["truth"])
            scale = float(problem.variables[0].init.abs().max())
            methods = {
                "sipflow AL": lambda p=problem: solve(p),
                "penalty+Adam": lambda p=problem, s=scale: penalty_adam(
                    p, steps=adam_steps, lr=1e-3 * s).values,
            }
            if have_cooper:
                methods["cooper AL"] = lambda p=problem, s=scale: run_cooper(p, adam_steps,
                                                                             1e-3 * s)
            # trust-constr's interior-point step spent 945 s on one 64² problem with the TV
            # budget (dense quasi-Newton Hessians of 8192 unknowns), stopping only between
            # its barrier subproblems: run where only simple sets constrain (case a)
            if trust_constr and n <= 64 and case == "a":
                methods["scipy trust-constr"] = lambda p=problem: run_trust_constr(p)
            if pygranso:
                methods["PyGRANSO"] = lambda a=arrays, c=case: run_pygranso(pygranso, a, c,
                                                                            pygranso_limit)
            if only:
                methods = {k: f for k, f in methods.items() if k in only}
            for name, run in methods.items():
                t0 = time.perf_counter()
                try:
                    out = run()
                except Exception as exc:  # a competitor failing is a result too
                    rows.append({"case": case, "seed": seed, "method": name,
                                 "error": f"{type(exc).__name__}: {exc}"[:60]})
                    if stream is not None:
                        print(f"{case} {seed} {name}: {rows[-1]['error']}", flush=True)
                    continue
                wall = time.perf_counter() - t0
                if isinstance(out, tuple):  # (values, the solve's own time without start-up)
                    out, wall = out
                if isinstance(out, dict):  # values of another method: judged by the certificate
                    values, cert = out, certify(problem, out)
                else:
                    values, cert = out.values, out.certificate
                row = {"case": case, "seed": seed, "method": name,
                       "objective": cert.objective, "violation": cert.max_violation,
                       "kkt": cert.kkt_residual, "certified": cert.certified,
                       "s": wall, "err": error_to_truth(values["x"], truth)}
                rows.append(row)
                if stream is not None:
                    stream(row)
    return rows


class _TimeUp(Exception):
    pass


def run_trust_constr(problem: Problem, time_limit: float = 60.0):
    """scipy's trust-constr, stopped after `time_limit` seconds (its last iterate is judged).

    The limit is enforced in the objective (trust-constr's callback is not called inside
    its barrier subproblems, so a callback alone does not stop it).
    """
    from scipy.optimize import Bounds, NonlinearConstraint, minimize

    pack = _Packing(problem.variables, torch.float64)
    t0 = time.perf_counter()
    last = {"x": pack.x0.copy()}

    def fun(x):
        if time.perf_counter() - t0 > time_limit:
            raise _TimeUp
        last["x"] = x.copy()
        z = pack.tensor(x, grad=True)
        f = problem.objective(pack.unpack(z))
        (g,) = torch.autograd.grad(f, z)
        return float(f.detach()), g.numpy()

    cons = []
    for funcs, lo in ((problem.inequalities, -np.inf), (problem.equalities, 0.0)):
        for name, f in funcs.items():
            s = problem.scales.get(name, 1.0)

            def cf(x, f=f, s=s):
                return f(pack.unpack(pack.tensor(x))).detach().numpy() / s

            def cj(x, f=f, s=s):
                z = pack.tensor(x, grad=True)
                (g,) = torch.autograd.grad(f(pack.unpack(z)).sum(), z)
                return g.numpy()[None] / s

            cons.append(NonlinearConstraint(cf, lo, 0.0, jac=cj))
    free = pack.lower != pack.upper
    lb = np.where(free, pack.lower, pack.lower - 1e-12)
    ub = np.where(free, pack.upper, pack.upper + 1e-12)
    try:
        x = minimize(fun, pack.x0, jac=True, method="trust-constr", constraints=cons,
                     bounds=Bounds(lb, ub), options={"maxiter": 300}).x
    except _TimeUp:
        x = last["x"]
    return {"x": pack.unpack(torch.as_tensor(np.clip(x, pack.lower, pack.upper)))["x"]}


COLUMNS = ["case", "seed", "method", "objective", "violation", "kkt", "certified", "s", "err"]


def _cells(r: dict, columns: list[str]) -> str:
    cells = []
    for c in columns:
        v = r.get(c, "")
        fmt = ".7g" if c in ("objective", "optimum") else ".4g"
        cells.append(f"{v:>14{fmt}}" if isinstance(v, float) else f"{v!s:>14}")
    return " | ".join(cells)


def table(rows: list[dict], columns: list[str], title: str) -> None:
    print(f"\n{title}")
    print(" | ".join(f"{c:>14}" for c in columns))
    for r in rows:
        print(_cells(r, columns))


def summary(rows: list[dict]) -> None:
    """Per case and method over the seeds; sipflow against each competitor seed by seed."""
    print("\nsummary over seeds (median objective, worst violation, certified, median s, "
          "median err)")
    print("| case | method | objective | max violation | certified | s | err |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["case"], r["method"]) for r in rows if "objective" in r})
    for case, method in keys:
        sel = [r for r in rows if r["case"] == case and r["method"] == method
               and "objective" in r]
        print(f"| {case} | {method} | {np.median([r['objective'] for r in sel]):.6g} | "
              f"{max(r['violation'] for r in sel):.2g} | "
              f"{sum(bool(r['certified']) for r in sel)}/{len(sel)} | "
              f"{np.median([r['s'] for r in sel]):.1f} | "
              f"{np.median([r['err'] for r in sel]):.4f} |")
    ours = {(r["case"], r["seed"]): r for r in rows if r["method"] == "sipflow AL"
            and "objective" in r}
    for method in sorted({r["method"] for r in rows} - {"sipflow AL"}):
        wins = total = 0
        for r in rows:
            o = ours.get((r["case"], r["seed"]))
            if r["method"] != method or o is None or "objective" not in r:
                continue
            total += 1
            # lower or equal objective (to 1e-7 relative) while feasible, or the other
            # answer infeasible (violation above the certificate's tolerance) and ours not
            tol = SolverOptions().violation_tol
            wins += (o["violation"] <= tol and (o["objective"] <= r["objective"] * (1 + 1e-7)
                                                or r["violation"] > tol))
        print(f"sipflow AL feasible at lower or equal objective than {method} (or {method} "
              f"infeasible): {wins}/{total} cases")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--adam-steps", type=int, default=3000)
    p.add_argument("--no-trust-constr", action="store_true")
    p.add_argument("--skip-tier0", action="store_true")
    p.add_argument("--pygranso-python", help="the Python of PyGRANSO's own environment "
                   "(benchmarks/pygranso_env.sh); PyGRANSO is skipped without it")
    p.add_argument("--pygranso-limit", type=float, default=60.0,
                   help="PyGRANSO's clock limit per problem [s]")
    p.add_argument("--only", nargs="+", help="run only these tier-1 methods (by name)")
    p.add_argument("--cases", nargs="+", choices=["a", "b", "c"], default=["a", "b", "c"])
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("SIPFLOW_NUM_THREADS", os.cpu_count() or 1)))
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if args.pygranso_python:
        print(f"PyGRANSO 1.2.0: its own environment ({args.pygranso_python}), stopped at "
              f"{args.pygranso_limit:g} s per problem")
    else:
        print("PyGRANSO: not run (no --pygranso-python; build its environment with "
              "benchmarks/pygranso_env.sh: AGPL and numpy < 2, never a sipflow dependency)")
    t0 = time.perf_counter()
    if not args.skip_tier0:
        table(tier0(), ["problem", "method", "objective", "optimum", "violation", "kkt",
                        "certified", "s"], "tier 0: known optima")
    print(f"\ntier 1: CDI refinement at {args.n}² (a: support + Re ≥ 0, b: + TV ≤ "
          "1.05 TV(truth), c: + energy); every answer judged by sipflow.optim.certify")
    print(" | ".join(f"{c:>14}" for c in COLUMNS), flush=True)
    rows = tier1(args.n, args.seeds, args.adam_steps, not args.no_trust_constr,
                 stream=lambda r: print(_cells(r, COLUMNS), flush=True),
                 pygranso=args.pygranso_python, pygranso_limit=args.pygranso_limit,
                 only=args.only, cases=args.cases, first_seed=args.first_seed)
    summary(rows)
    print(f"\nwhole benchmark: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
