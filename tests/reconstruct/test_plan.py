"""The plan algebra: parsing, printing, counting, Python composition."""

import pytest

from sipflow.errors import PipelineError
from sipflow.reconstruct import ER, HIO, RAAR, parse, sup


@pytest.mark.parametrize("text", [
    "(sup * ER**5 * HIO**40)**20 * ER**100",
    "HIO**600 * ER**200",
    "RAAR",
    "((sup * RAAR**20)**3 * ER**5)**2",
])
def test_round_trip_through_text(text):
    plan = parse(text)
    assert parse(str(plan)) == plan
    assert str(plan) == text


def test_counts_and_order():
    plan = parse("(sup * ER**5 * HIO**40)**20 * ER**100")
    assert plan.n_iterations() == 20 * 45 + 100
    assert plan.count("sup") == 20
    steps = list(plan.steps())
    assert steps[:7] == ["sup", "ER", "ER", "ER", "ER", "ER", "HIO"]
    assert steps[-100:] == ["ER"] * 100, "read left to right: ER**100 comes last"


def test_python_algebra_matches_text():
    assert (sup * ER**5 * HIO**40) ** 20 * ER**100 == parse(
        "(sup * ER**5 * HIO**40)**20 * ER**100")
    assert str(RAAR**3) == "RAAR**3"
    assert parse("er**2 * Hio") == ER**2 * HIO, "operator names are case-insensitive"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("HIO**", "whole number"),
    ("HIO**0", "at least 1"),
    ("(HIO", r"expected '\)'"),
    ("HIO * FOO", "unknown operator 'FOO'"),
    ("sup**3", "no iterations"),
    ("HIO + ER", "unexpected character"),
])
def test_errors_say_where(text, message):
    with pytest.raises(PipelineError, match=message):
        parse(text)
