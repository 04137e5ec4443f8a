"""Gradient sampling on the exact penalty: a certificate where no gradient exists."""

from __future__ import annotations

import time

import numpy as np
import torch

from ._certificate import _measures, _scale, _verdict
from ._problem import Certificate, Problem, SolverOptions, _Packing, _stack


def _min_norm(g: np.ndarray, lower_active: np.ndarray, upper_active: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The convex combination of the columns of `g` (n × m) whose projection on the
    tangent cone of the box is smallest: ``min ‖ψ(g w)‖²`` over the simplex, where ψ drops
    the components that an active bound absorbs. Returns (w, ψ(g w))."""
    from scipy.optimize import minimize

    def psi(v: np.ndarray) -> np.ndarray:
        out = v.copy()
        out[lower_active] = np.minimum(v[lower_active], 0.0)  # > 0 pushes out: absorbed
        out[upper_active] = np.maximum(v[upper_active], 0.0)
        return out

    m = g.shape[1]
    if m == 1:
        return np.ones(1), psi(g[:, 0])
    scale = max(float(np.abs(g).max()), 1e-300)
    gs = g / scale

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = psi(gs @ w)
        return float(p @ p), 2.0 * (gs.T @ p)

    best = int(np.argmin([np.linalg.norm(psi(gs[:, k])) for k in range(m)]))
    w0 = np.full(m, 0.5 / (m - 1))
    w0[best] = 0.5
    res = minimize(fun, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                 "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": 500, "ftol": 1e-30})
    w = np.clip(res.x, 0.0, None)
    w /= w.sum()
    return w, psi(g @ w)


def _gradient_sampling(problem: Problem, pack: _Packing, x: np.ndarray, start: Certificate,
                       opts: SolverOptions, outer: int, inner: int, t0: float, ref: float
                       ) -> tuple[np.ndarray, Certificate]:
    """Finish a nonsmooth problem: gradient sampling on the exact penalty
    ``φ(x) = f(x) + ν (Σ max(c, 0) + Σ |h|)`` (scaled, exact constraint functions), with
    the box handled by projection, and a sampled certificate.

    Each step samples the gradient of φ at the point and at ``2n + 1`` points of the ball
    of radius ε around it, takes the smallest element ``v`` of their convex hull
    (projected on the box's tangent cone), and backtracks along ``-v``; ε shrinks by 10
    when ``‖v‖`` is below tolerance or no step decreases φ, down to `sampling_radius`
    (Burke, Lewis & Overton's gradient sampling). The weights of that convex combination
    are the multipliers: ``λ_i = ν Σ_k w_k [c_i(y_k) > 0]``. ν starts at 10 × the largest
    multiplier of the augmented Lagrangian (≥ 1) and grows by 10 while the end point is
    infeasible.
    """
    exact = problem.exact_problem() if problem.exact else problem
    dtype = opts.dtype
    rng = np.random.default_rng(opts.seed)
    free = pack.lower != pack.upper
    n_free = int(free.sum())
    span = max(1.0, float(np.abs(x).max(initial=0.0)))
    radius_min = opts.sampling_radius * span
    x_best, cert_best = x, start

    def evaluate(xv: np.ndarray, nu: float, grad: bool
                 ) -> tuple[float, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray | None]:
        with torch.enable_grad() if grad else torch.no_grad():
            z = pack.tensor(xv, grad=grad)
            v = pack.unpack(z)
            f = exact.objective(v).to(dtype).reshape(())
            c, _ = _stack(exact.inequalities, exact.scales, v, dtype)
            h, _ = _stack(exact.equalities, exact.scales, v, dtype)
            phi = f + nu * (torch.clamp(c, min=0).sum() + h.abs().sum())
            g = gf = None
            if grad:
                (g,) = torch.autograd.grad(phi, z, retain_graph=True)
                (gf,) = torch.autograd.grad(f, z)
                g = g.cpu().double().numpy()
                g[~free] = 0.0
                gf = gf.cpu().double().numpy()
        return (float(phi.detach()), g, c.detach().cpu().double().numpy(),
                h.detach().cpu().double().numpy(), gf)

    def project(xv: np.ndarray) -> np.ndarray:
        out = np.clip(xv, pack.lower, pack.upper)
        out[~free] = pack.lower[~free]
        return out

    nu = 10.0 * max([1.0, *start.multipliers.values()])
    steps = 0
    for _ in range(4):
        eps = max(1e-3 * span, radius_min)
        xk = project(x)
        phi_k, g_k, c_k, h_k, gf = evaluate(xk, nu, True)
        w = np.ones(1)
        v = g_k
        samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        while steps < opts.sampling_iterations:
            steps += 1
            samples = [(g_k, c_k, h_k)]
            for _ in range(2 * n_free + 1):
                u = rng.normal(size=n_free)
                u *= eps * rng.random() ** (1.0 / n_free) / max(np.linalg.norm(u), 1e-300)
                y = xk.copy()
                y[free] += u
                _, gy, cy, hy, _ = evaluate(project(y), nu, True)
                samples.append((gy, cy, hy))
            lower_active = np.isfinite(pack.lower) & (xk - pack.lower <= eps) & free
            upper_active = np.isfinite(pack.upper) & (pack.upper - xk <= eps) & free
            gmat = np.stack([s[0] for s in samples], axis=1)
            w, v = _min_norm(gmat, lower_active, upper_active)
            tol = opts.kkt_tol * _scale(ref, float(np.abs(gf).max(initial=0.0)))
            if float(np.abs(v).max(initial=0.0)) <= tol:
                if eps <= radius_min:
                    break
                eps = max(eps / 10, radius_min)
                continue
            d = -v
            t, moved = 1.0, False
            slope = float(v @ v)
            for _ in range(60):
                y = project(xk + t * d)
                phi_y = evaluate(y, nu, False)[0]
                if phi_y <= phi_k - 1e-8 * t * slope and not np.array_equal(y, xk):
                    xk, phi_k, moved = y, phi_y, True
                    break
                t *= 0.5
            if moved:
                _, g_k, c_k, h_k, gf = evaluate(xk, nu, True)
            elif eps > radius_min:
                eps = max(eps / 10, radius_min)
            else:
                break
        cert = _sampled_certificate(exact, pack, xk, nu, w, v, samples, eps, opts, outer,
                                    inner + steps, t0, ref)
        if cert.certified or (cert.max_violation <= cert_best.max_violation
                              and cert.kkt_residual <= cert_best.kkt_residual) or (
                cert_best.status == "infeasible" and cert.max_violation
                < cert_best.max_violation):
            x_best, cert_best = xk, cert
        if cert.status != "infeasible" or steps >= opts.sampling_iterations:
            break
        nu *= 10.0
        x = xk
    return x_best, cert_best


def _sampled_certificate(problem: Problem, pack: _Packing, x: np.ndarray, nu: float,
                         w: np.ndarray, v: np.ndarray,
                         samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         eps: float, opts: SolverOptions, outer: int, inner: int, t0: float,
                         ref: float) -> Certificate:
    """The certificate of a gradient-sampling end point (see :class:`Certificate`)."""
    dtype = opts.dtype
    with torch.enable_grad():
        z = pack.tensor(x, grad=True)
        f = problem.objective(pack.unpack(z)).to(dtype).reshape(())
        (gf,) = torch.autograd.grad(f, z)
    with torch.no_grad():
        vals = pack.unpack(pack.tensor(x))
        c, c_index = _stack(problem.inequalities, problem.scales, vals, dtype)
        h, h_index = _stack(problem.equalities, problem.scales, vals, dtype)
    c_np, h_np = c.cpu().double().numpy(), h.cpu().double().numpy()
    lam = np.zeros_like(c_np)
    mu = np.zeros_like(h_np)
    if len(samples) == len(w):
        for wk, (_, ck, hk) in zip(w, samples, strict=True):
            lam += nu * wk * (ck > 0)
            mu += nu * wk * np.sign(hk)
    fval = float(f.detach())
    kkt = float(np.abs(v).max(initial=0.0)) / _scale(ref, float(gf.abs().max()))
    v_in, v_eq, comp, multipliers = _measures(c_np, h_np, c_np, lam, mu, c_index, h_index)
    violation = max(v_in, v_eq)
    status, reason = _verdict(violation, kkt, comp, fval, opts,
                              f"gradient sampling, radius {eps:.2g}, penalty {nu:.3g}")
    if status == "certified":
        reason = (f"feasible, and the convex hull of the Lagrangian's gradients sampled "
                  f"within {eps:.2g} contains a vector within tolerance")
    return Certificate(
        certified=status == "certified", status=status, reason=reason, objective=fval,
        max_violation=violation, max_inequality_violation=v_in, max_equality_violation=v_eq,
        kkt_residual=kkt, complementarity=comp, multipliers=multipliers,
        outer_iterations=outer, inner_iterations=inner, penalty=nu,
        wall_s=round(time.perf_counter() - t0, 4), stationarity="sampled",
        sampling_radius=eps)
