"""A small algebra of iteration plans: ``(sup * ER**5 * HIO**40)**20 * ER**100``.

A plan is immutable and only describes the schedule; :func:`parse` reads the
text form, ``str(plan)`` writes it back (``parse(str(p)) == p``), and an engine
executes :meth:`Plan.steps`. Reading order is left to right: ``A * B`` means
"A, then B"; ``A**n`` repeats A n times; parentheses group.

Operators
---------
ER, HIO, RAAR
    One iteration of error reduction, hybrid input-output, relaxed averaged
    alternating reflections (docs/design.md); with ``positivity`` the in-support
    pixels with Re < 0 count as outside.
ML
    One Poisson maximum-likelihood gradient step inside the support, with a
    quadratic line search (a refinement to end a schedule with).
sup
    A shrinkwrap support update (no iteration). A ``sup`` before the first
    iteration keeps the initial support: there is no iterate to wrap yet.
detwin
    Keep the half of the support on one side of its centroid (Bragg CDI); the
    next ``sup`` grows it back.
psf
    Partial coherence: update each run's point-spread kernel on the intensity by
    Richardson–Lucy steps (:func:`sipflow.physics.richardson_lucy_kernel`; the first
    ``psf`` starts from a Gaussian of ``psf_sigma``). From then on the modulus
    projection and the LLKs use the blurred model ``K ⊛ |F x|^2`` (ML steps stay
    coherent). Put it after the support has settled, e.g.
    ``(sup * ER**5 * HIO**40)**10 * (sup * psf * ER**5 * HIO**40)**10 * ER**100``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import PipelineError

#: operators that are one iteration each
ITERATION_OPS = ("ER", "HIO", "RAAR", "ML")
#: operators that act between iterations
OTHER_OPS = ("sup", "detwin", "psf")
_CANON = {name.lower(): name for name in ITERATION_OPS + OTHER_OPS}
#: most iterations one plan may hold (a week of 1024^2 HIO on one GPU is about 10^6)
MAX_ITERATIONS = 1_000_000
#: most plan steps (iterations and support updates) one plan may hold
MAX_STEPS = 2_000_000
#: deepest nesting of parentheses
MAX_DEPTH = 32
#: longest plan text [characters]
MAX_LENGTH = 2000


class Plan(abc.ABC):
    """Base of the plan algebra; combine with ``*`` (then) and ``**`` (repeat)."""

    def __mul__(self, other: Plan) -> Plan:
        if not isinstance(other, Plan):
            return NotImplemented
        return Seq.of(self, other)

    def __pow__(self, n: int) -> Plan:
        if not isinstance(n, int) or n < 1:
            raise PipelineError(f"a plan can only be repeated a positive whole number of times, "
                                f"not {n!r}")
        return self if n == 1 else Repeat(self, n)

    @abc.abstractmethod
    def steps(self) -> Iterator[str]:
        """Operator names in execution order."""

    @abc.abstractmethod
    def n_iterations(self) -> int:
        """Number of iterations (``sup`` steps do not count)."""

    @abc.abstractmethod
    def count(self, name: str) -> int:
        """How many times operator `name` runs."""


@dataclass(frozen=True)
class Op(Plan):
    """One operator."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in ITERATION_OPS + OTHER_OPS:
            raise PipelineError(f"unknown operator {self.name!r} in plan; valid: "
                                f"{', '.join(ITERATION_OPS + OTHER_OPS)}")

    def __str__(self) -> str:
        return self.name

    def steps(self) -> Iterator[str]:
        yield self.name

    def n_iterations(self) -> int:
        return int(self.name in ITERATION_OPS)

    def count(self, name: str) -> int:
        return int(self.name == name)


@dataclass(frozen=True)
class Seq(Plan):
    """Plans run one after the other, left to right."""

    items: tuple[Plan, ...]

    @staticmethod
    def of(*plans: Plan) -> Plan:
        flat: list[Plan] = []
        for p in plans:
            flat.extend(p.items if isinstance(p, Seq) else (p,))
        return flat[0] if len(flat) == 1 else Seq(tuple(flat))

    def __str__(self) -> str:
        return " * ".join(str(p) for p in self.items)

    def steps(self) -> Iterator[str]:
        for p in self.items:
            yield from p.steps()

    def n_iterations(self) -> int:
        return sum(p.n_iterations() for p in self.items)

    def count(self, name: str) -> int:
        return sum(p.count(name) for p in self.items)


@dataclass(frozen=True)
class Repeat(Plan):
    """A plan repeated `n` times."""

    plan: Plan
    n: int

    def __str__(self) -> str:
        inner = str(self.plan)
        return f"({inner})**{self.n}" if not isinstance(self.plan, Op) else f"{inner}**{self.n}"

    def steps(self) -> Iterator[str]:
        for _ in range(self.n):
            yield from self.plan.steps()

    def n_iterations(self) -> int:
        return self.n * self.plan.n_iterations()

    def count(self, name: str) -> int:
        return self.n * self.plan.count(name)


ER, HIO, RAAR, ML = Op("ER"), Op("HIO"), Op("RAAR"), Op("ML")
sup, detwin, psf = Op("sup"), Op("detwin"), Op("psf")

_TOKEN = re.compile(r"\s*(?:(\*\*)|(\*)|(\()|(\))|(\d+)|([A-Za-z_][A-Za-z_0-9]*))")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) of each token of a plan expression."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"plan {text!r}: unexpected character {text[pos]!r} at "
                                f"position {pos}")
        kind = ("pow", "mul", "lp", "rp", "num", "name")[m.lastindex - 1]
        tokens.append((kind, m.group(m.lastindex), m.start(m.lastindex)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens: seq := power ('*' power)*,
    power := atom ('**' num)*, atom := name | '(' seq ')'."""

    def __init__(self, text: str, tokens: list[tuple[str, str, int]]) -> None:
        self.text, self.tokens, self.i, self.depth = text, tokens, 0, 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, msg: str) -> PipelineError:
        where = self.peek()
        at = f"at position {where[2]}" if where else "at the end"
        return PipelineError(f"plan {self.text!r}: {msg} {at}. Example: "
                             "'(sup * ER**5 * HIO**40)**20 * ER**100'")

    def seq(self) -> Plan:
        parts = [self.power()]
        while (t := self.peek()) and t[0] == "mul":
            self.i += 1
            parts.append(self.power())
        return Seq.of(*parts)

    def power(self) -> Plan:
        base = self.atom()
        while (t := self.peek()) and t[0] == "pow":
            self.i += 1
            t = self.peek()
            if not t or t[0] != "num":
                raise self.fail("expected a whole number after '**'")
            self.i += 1
            n = int(t[1])
            if n < 1:
                raise self.fail("repeat counts must be at least 1")
            base = base**n
        return base

    def atom(self) -> Plan:
        t = self.peek()
        if t is None:
            raise self.fail("expected an operator or '('")
        if t[0] == "name":
            self.i += 1
            canon = _CANON.get(t[1].lower())
            if canon is None:
                raise PipelineError(f"plan {self.text!r}: unknown operator {t[1]!r} at "
                                    f"position {t[2]}; valid: "
                                    f"{', '.join(ITERATION_OPS + OTHER_OPS)}")
            return Op(canon)
        if t[0] == "lp":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses nested deeper than {MAX_DEPTH} levels")
            self.i += 1
            inner = self.seq()
            self.depth -= 1
            if not (self.peek() and self.peek()[0] == "rp"):
                raise self.fail("expected ')'")
            self.i += 1
            return inner
        raise self.fail(f"unexpected {t[1]!r}")


def parse(text: str) -> Plan:
    """Parse a plan expression such as ``(sup * ER**5 * HIO**40)**20 * ER**100``.

    Operator names are case-insensitive. Raises :class:`~sipflow.errors.PipelineError`
    with the position of the first problem.
    """
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise PipelineError(f"plan of {len(text)} characters is longer than the {MAX_LENGTH} "
                            "allowed; write repeats as '(...)**n'")
    tokens = _tokens(text)
    if not tokens:
        raise PipelineError("plan is empty; example: '(sup * ER**5 * HIO**40)**20 * ER**100'")
    parser = _Parser(text, tokens)
    plan = parser.seq()
    if parser.i != len(tokens):
        raise parser.fail(f"unexpected {tokens[parser.i][1]!r}")
    if plan.n_iterations() == 0:
        raise PipelineError(f"plan {text!r} has no iterations (ER, HIO, RAAR or ML)")
    n_steps = plan.n_iterations() + sum(plan.count(op) for op in OTHER_OPS)
    if plan.n_iterations() > MAX_ITERATIONS or n_steps > MAX_STEPS:
        raise PipelineError(f"plan {text!r} has {plan.n_iterations():,} iterations and "
                            f"{n_steps:,} steps; at most {MAX_ITERATIONS:,} iterations and "
                            f"{MAX_STEPS:,} steps are allowed")
    return plan
