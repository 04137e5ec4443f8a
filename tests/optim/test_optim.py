"""sipflow.optim: problems with known answers are solved and certified; failures are reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sipflow.optim import Problem, SolverOptions, Variable, solve


def _scalar(name: str) -> Variable:
    return Variable(name, torch.zeros((), dtype=torch.float64))


def test_quadratic_with_a_linear_equality():
    # the point of the line x + y = 1 closest to (1, 2) is (0, 1), multiplier 2
    problem = Problem(lambda v: (v["x"] - 1) ** 2 + (v["y"] - 2) ** 2,
                      [_scalar("x"), _scalar("y")],
                      equalities={"line": lambda v: v["x"] + v["y"] - 1})
    result = solve(problem)
    cert = result.certificate
    assert cert.certified and cert.status == "certified"
    assert float(result.values["x"]) == pytest.approx(0.0, abs=1e-6)
    assert float(result.values["y"]) == pytest.approx(1.0, abs=1e-6)
    assert cert.multipliers["line"] == pytest.approx(2.0, rel=1e-5)
    assert cert.objective == pytest.approx(2.0, rel=1e-6)
    assert cert.max_violation <= 1e-6 and cert.kkt_residual <= 1e-5


def test_non_negative_least_squares_matches_scipy():
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 12)), rng.normal(size=30)
    at, bt = torch.tensor(a), torch.tensor(b)
    problem = Problem(lambda v: 0.5 * ((at @ v["x"] - bt) ** 2).sum(),
                      [Variable("x", torch.zeros(12, dtype=torch.float64), lower=0.0)])
    result = solve(problem)
    expected, _ = nnls(a, b)
    assert result.certificate.certified
    assert (expected == 0).sum() >= 3  # the bounds are active somewhere
    np.testing.assert_allclose(result.values["x"].numpy(), expected, atol=1e-6)


def test_smallest_eigenvalue_on_the_sphere():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(10, 10))
    m = m + m.T
    mt = torch.tensor(m)
    problem = Problem(lambda v: v["x"] @ mt @ v["x"],
                      [Variable("x", torch.tensor(rng.normal(size=10)))],
                      equalities={"sphere": lambda v: (v["x"] ** 2).sum() - 1})
    result = solve(problem)
    assert result.certificate.certified
    assert result.certificate.objective == pytest.approx(np.linalg.eigvalsh(m)[0], rel=1e-6)


def test_fixed_entries_and_complex_variables():
    # the closest point of the unit disc to each z0, with the second entry held fixed
    z0 = torch.tensor([3 + 4j, 0.3 - 0.2j, -2j], dtype=torch.complex128)
    start = torch.tensor([0, 0.5 + 0.5j, 0], dtype=torch.complex128)
    problem = Problem(lambda v: (torch.abs(v["z"] - z0) ** 2).sum(),
                      [Variable("z", start, fixed=torch.tensor([False, True, False]))],
                      inequalities={"disc": lambda v: torch.abs(v["z"]) ** 2 - 1})
    result = solve(problem)
    z = result.values["z"].numpy()
    assert result.values["z"].dtype == torch.complex128 and result.certificate.certified
    np.testing.assert_allclose(z, [0.6 + 0.8j, 0.5 + 0.5j, -1j], atol=1e-6)


def test_bounds_on_the_real_part_of_a_complex_variable():
    target = torch.tensor([-1 + 2j, 3 - 1j], dtype=torch.complex128)
    problem = Problem(lambda v: (torch.abs(v["z"] - target) ** 2).sum(),
                      [Variable("z", torch.zeros(2, dtype=torch.complex128), lower=0.0)])
    result = solve(problem)
    np.testing.assert_allclose(result.values["z"].numpy(), [0 + 2j, 3 - 1j], atol=1e-7)
    assert result.certificate.certified


def test_an_infeasible_problem_is_reported_with_its_violation():
    problem = Problem(lambda v: (v["x"] ** 2).sum(),
                      [Variable("x", torch.zeros(3, dtype=torch.float64), upper=0.0)],
                      inequalities={"at_least_one": lambda v: 1 - v["x"]})
    cert = solve(problem, SolverOptions(max_outer=20)).certificate
    assert not cert.certified and cert.status == "infeasible"
    assert cert.max_violation == pytest.approx(1.0) and "violation" in cert.reason


def test_scales_set_the_units_of_the_violation():
    # the same budget expressed in other units certifies to the same solution
    for scale in (1.0, 1e3):
        problem = Problem(lambda v: -(v["x"].sum()),
                          [Variable("x", torch.zeros(4, dtype=torch.float64))],
                          inequalities={"budget": lambda v, s=scale: s * ((v["x"] ** 2).sum() - 1)},
                          scales={"budget": scale})
        result = solve(problem)
        assert result.certificate.certified
        np.testing.assert_allclose(result.values["x"].numpy(), 0.5, atol=1e-6)


def test_bad_problems_are_clear_errors():
    with pytest.raises(TypeError, match="real scalar"):
        solve(Problem(lambda v: v["x"], [Variable("x", torch.zeros(3))]))
    with pytest.raises(TypeError, match="complex"):
        solve(Problem(lambda v: (v["z"].abs() ** 2).sum(),
                      [Variable("z", torch.zeros(2, dtype=torch.complex128))],
                      equalities={"c": lambda v: v["z"]}))
    with pytest.raises(ValueError, match="lower bound exceeds"):
        solve(Problem(lambda v: v["x"].sum(), [Variable("x", torch.zeros(2), lower=1, upper=0)]))


def _nonsmooth_rosenbrock(start: list[float]) -> Problem:
    # 8 |x1² − x2| + (1 − x1)² s.t. √2 x1 ≤ 1, 2 x2 ≤ 1: the minimum sits on the kink
    # x2 = x1² where both constraints are active, x = (1/√2, 1/2)
    import math

    return Problem(
        lambda v: 8 * torch.abs(v["x"][0] ** 2 - v["x"][1]) + (1 - v["x"][0]) ** 2,
        [Variable("x", torch.tensor(start, dtype=torch.float64))],
        inequalities={"box": lambda v: torch.stack([math.sqrt(2) * v["x"][0] - 1,
                                                    2 * v["x"][1] - 1])})


@pytest.mark.parametrize("start", [[0.5, 0.2], [-1.0, 2.0]])
def test_a_nonsmooth_problem_is_certified_by_gradient_sampling(start):
    import math

    result = solve(_nonsmooth_rosenbrock(start))
    cert = result.certificate
    assert cert.certified and cert.stationarity == "sampled"
    assert 0 < cert.sampling_radius <= 1e-6
    np.testing.assert_allclose(result.values["x"].numpy(), [1 / math.sqrt(2), 0.5], atol=1e-6)
    assert cert.objective == pytest.approx((1 - 1 / math.sqrt(2)) ** 2, rel=1e-5)
    # both constraints are active at the kink, so the multipliers are not unique; the
    # force of the box is positive and at most the one of x1 alone (√2 − 1)
    assert 0 < cert.multipliers["box"] <= (math.sqrt(2) - 1) * 1.001


def test_a_kink_is_reported_not_stationary_without_sampling():
    cert = solve(_nonsmooth_rosenbrock([0.5, 0.2]), SolverOptions(nonsmooth=False)).certificate
    assert not cert.certified and cert.status == "not_stationary"
    assert cert.stationarity == "gradient" and "KKT residual" in cert.reason


def test_sampling_keeps_bounds_and_fixed_entries():
    # 8|x0 − x1| pins x0 = x1 = t on a kink, where 2t² + const is smallest at t = 1/4
    # (the kink of |x2 − x0| is there too, x2 fixed at 1/4); x3 → 2 stops at its bound 1
    start = torch.tensor([0.9, 0.1, 0.25, 0.5], dtype=torch.float64)
    fixed = torch.tensor([False, False, True, False])

    def objective(v):
        x = v["x"]
        return (8 * (x[0] - x[1]).abs() + (x[0] - 1) ** 2 + (x[1] + 1) ** 2
                + (x[2] - x[0]).abs() + (x[3] - 2) ** 2)

    problem = Problem(objective, [Variable("x", start, lower=0.0, upper=1.0, fixed=fixed)])
    assert solve(problem, SolverOptions(nonsmooth=False)).certificate.status == "not_stationary"
    result = solve(problem)
    assert result.certificate.certified and result.certificate.stationarity == "sampled"
    assert result.certificate.objective == pytest.approx(3.125, rel=1e-6)
    np.testing.assert_allclose(result.values["x"].numpy(), [0.25, 0.25, 0.25, 1.0], atol=1e-4)


def test_any_answer_can_be_certified_with_fitted_multipliers():
    from sipflow.optim import certify

    problem = Problem(lambda v: (v["x"] - 1) ** 2 + (v["y"] - 2) ** 2,
                      [_scalar("x"), _scalar("y")],
                      equalities={"line": lambda v: v["x"] + v["y"] - 1},
                      inequalities={"far": lambda v: v["x"] - 5})  # inactive: no multiplier
    right = certify(problem, {"x": torch.tensor(0.0), "y": torch.tensor(1.0)})
    assert right.certified and right.multipliers["line"] == pytest.approx(2.0, rel=1e-6)
    assert right.multipliers["far"] == 0.0
    # feasible but not the minimum: no multiplier makes it stationary
    wrong = certify(problem, {"x": torch.tensor(0.5), "y": torch.tensor(0.5)})
    assert wrong.status == "not_stationary" and wrong.kkt_residual > 0.1
    with pytest.raises(KeyError, match="y"):
        certify(problem, {"x": torch.tensor(0.0)})


def test_a_continuation_leads_to_the_lower_minimum_and_is_certified_on_the_objective():
    # a tilted double well: from x = 0.5 descent ends in the upper well (x ≈ 0.96, f ≈ 0.29);
    # solving a smooth surrogate first, from which the objective's solve starts, ends in
    # the lower one (x ≈ -1.04, f ≈ -0.31). The bound x ≤ 2 holds throughout.
    def f(v):
        return (v["x"] ** 2 - 1) ** 2 + 0.3 * v["x"]

    start = Variable("x", torch.tensor(0.5, dtype=torch.float64))
    ineq = {"cap": lambda v: v["x"] - 2.0}
    direct = solve(Problem(f, [start], ineq))
    assert direct.certificate.certified and float(direct.values["x"]) > 0.9
    continued = solve(Problem(f, [start], ineq,
                              continuation=[lambda v: (v["x"] + 1) ** 2]))
    cert = continued.certificate
    assert cert.certified and cert.status == "certified"
    x = float(continued.values["x"])
    # stationary point of the lower well: 4x(x² - 1) + 0.3 = 0
    assert 4 * x * (x * x - 1) + 0.3 == pytest.approx(0.0, abs=1e-5)
    assert x < -1.0 and cert.objective < direct.certificate.objective - 0.5
    assert cert.objective == pytest.approx(float(f({"x": torch.tensor(x, dtype=torch.float64)})),
                                           rel=1e-9)
