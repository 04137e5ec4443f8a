"""Contract checks for the other plugin interfaces: groups, constraints and readers.

Like :func:`sipflow.testing.assert_stage_contract`, each checks what sipflow relies on,
so a plugin author tests a group, a constraint or a reader in one line, exactly as
sipflow tests its own built-ins (parametrised over the registry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .. import schema
from ..contracts import AmbiguityGroup, CanonicalForm, Constraint, check_group
from ._stage import assert_params_contract


def _test_object(shape: tuple[int, ...] = (32, 32), seed: int = 0) -> np.ndarray:
    """A complex object with no symmetry of its own: an off-centre, asymmetric blob."""
    from ..simulate import make_object

    x = make_object(shape, "blob", extent=0.35, rng=np.random.default_rng(seed)).astype(
        np.complex128)
    return np.roll(x, (2, -3)[: len(shape)] + (0,) * (len(shape) - 2), axis=tuple(
        range(len(shape))))


def assert_group_contract(group: AmbiguityGroup, x: Any = None, *, elements: int = 6,
                          seed: int = 0, rtol: float = 1e-4) -> None:
    """Check that `group` is a usable ambiguity group on the object `x`.

    For random elements ``g`` (``random_element``): ``canonical(g · x).x ==
    canonical(x).x`` (the defining property; skipped for a near-tie, which must be
    reported as ``ambiguous``), ``error(g · x, x) ≈ 0`` and ``align(x, g · x)`` gives
    back `x`; ``canonical`` returns a :class:`~sipflow.contracts.CanonicalForm` with a
    finite confidence.

    Parameters
    ----------
    group : AmbiguityGroup
    x : array, optional
        An object the group acts on (default: a 32x32 complex asymmetric blob).
    elements : int
        Random elements tried.
    seed : int
    rtol : float
        Relative tolerance of the equalities (of ``||x||``).
    """
    check_group(group, "the plugin under test")
    x = _test_object() if x is None else x
    norm = float(np.linalg.norm(np.asarray(x))) or 1.0
    base = group.canonical(x)
    assert isinstance(base, CanonicalForm), f"{group.name}: canonical() must return a " \
                                            "CanonicalForm"
    assert np.isfinite(base.confidence), f"{group.name}: canonical confidence is not finite"
    rng = np.random.default_rng(seed)
    for _ in range(elements):
        g = group.random_element(rng, x)
        moved = group.apply(x, g)
        assert np.shape(moved) == np.shape(x), f"{group.name}: apply changed the shape"
        c = group.canonical(moved)
        if not (c.ambiguous or base.ambiguous):
            gap = float(np.linalg.norm(np.asarray(c.x) - np.asarray(base.x))) / norm
            assert gap < rtol * 10, (f"{group.name}: canonical(g · x) differs from "
                                     f"canonical(x) by {gap:.3g} of |x| for g = {g!r}")
        err = group.error(moved, x)
        assert err < rtol * 10, f"{group.name}: error(g · x, x) = {err:.3g}, expected ~0"
        aligned, _ = group.align(x, moved)
        gap = float(np.linalg.norm(np.asarray(aligned) - np.asarray(x))) / norm
        assert gap < rtol * 10, f"{group.name}: align(x, g · x) is {gap:.3g} of |x| from x"


def refine_problem(shape: tuple[int, int] = (32, 32), photons: float = 1e8, seed: int = 0
                   ) -> Any:
    """A small :class:`~sipflow.refine.RefineProblem` from a simulated far-field pattern."""
    import torch

    from ..physics import FarField
    from ..refine import RefineProblem
    from ._datasets import simulated_dataset

    ds = simulated_dataset(shape, photons=photons, seed=seed, with_obj=True)
    valid = torch.as_tensor(np.asarray(ds[schema.MASK].values, bool))
    return RefineProblem(torch.as_tensor(ds[schema.OBJ].values, dtype=torch.complex128),
                         torch.as_tensor(np.asarray(ds[schema.SUPPORT].values, bool)),
                         torch.as_tensor(ds[schema.INTENSITY].values, dtype=torch.float64),
                         valid, FarField(ndim=2))


def assert_constraint_contract(constraint: type[Constraint], params: dict | None = None,
                               problem: Any = None) -> None:
    """Check that `constraint` can be used by ``refine.constrained``.

    A name and a kind; parameters defaulted, described, JSON round-trip; ``check``
    accepts them; for ``inequality``/``equality``: finite values, a differentiable
    :meth:`~sipflow.contracts.Constraint.smooth_values` that bounds the values from
    above (inequality) and a positive scale; for ``set``: ``restrict`` returns a
    variable of the same shape whose start satisfies its own bounds and fixed entries.

    Parameters
    ----------
    constraint : Constraint subclass
    params : dict, optional
        Its parameters (default: all defaults).
    problem : RefineProblem, optional
        Default: :func:`refine_problem` (32x32, the truth as start).
    """
    import torch

    from ..optim import Variable

    assert isinstance(constraint, type) and issubclass(constraint, Constraint), (
        f"{constraint!r} is not a sipflow Constraint")
    name = constraint.name
    assert name and name == name.strip(), f"constraint name {name!r}"
    assert constraint.kind in ("inequality", "equality", "set"), f"{name}: kind " \
                                                                 f"{constraint.kind!r}"
    p = assert_params_contract(f"constraint {name!r}", constraint.Params, params)
    problem = problem if problem is not None else refine_problem()
    c = constraint()
    c.check(p, problem)
    if constraint.kind == "set":
        v = c.restrict(Variable("x", problem.x0.clone()), p, problem)
        assert isinstance(v, Variable) and v.init.shape == problem.x0.shape, (
            f"{name}: restrict must return a Variable of the object's shape")
        if v.fixed is not None:
            assert v.fixed.shape == problem.x0.shape, f"{name}: fixed has another shape"
        return
    x = problem.x0.clone().requires_grad_(True)
    values = c.values(x.detach(), p, problem)
    smooth = c.smooth_values(x, p, problem)
    assert torch.isfinite(values).all() and torch.isfinite(smooth).all(), (
        f"{name}: non-finite constraint values at the start")
    if constraint.kind == "inequality":
        assert (smooth.detach() >= values - 1e-6 * (1 + values.abs())).all(), (
            f"{name}: smooth_values must bound values from above")
    try:
        smooth.sum().backward()
    except RuntimeError as exc:  # no graph from x to the values
        raise AssertionError(f"{name}: smooth_values is not differentiable ({exc})") from None
    assert x.grad is not None and torch.isfinite(x.grad).all(), (
        f"{name}: smooth_values is not differentiable at the start")
    scale = float(c.scale(p, problem))
    assert np.isfinite(scale) and scale > 0, f"{name}: scale must be positive, got {scale}"


def assert_reader_contract(reader: Any, path: str | Path, **options: Any) -> xr.Dataset:
    """Check that `reader` reads `path` the way :func:`sipflow.load` needs; return it.

    A name and declared options; ``can_read`` claims `path` (an int > 0) and neither
    claims nor raises on a text file, and does not raise on a missing path;
    ``read`` returns a dataset whose ``intensity`` is real with the schema's detector
    dimensions and whose ``mask``, when present, is boolean of the same shape or of one
    frame's.

    Parameters
    ----------
    reader : Reader
    path : path
        A file in the reader's format.
    **options
        Passed to ``read`` (each must be declared in ``reader.options``).
    """
    for attr in ("name", "can_read", "read"):
        assert hasattr(reader, attr), f"reader {reader!r} lacks {attr!r}"
    declared = set(getattr(reader, "options", ()) or ())
    assert set(options) <= declared, f"{reader.name}: options {set(options) - declared} " \
                                     "are not declared"
    path = Path(path)
    score = reader.can_read(path)
    assert isinstance(score, int) and score > 0, f"{reader.name}: can_read({path}) = {score!r}"
    other = path.with_name(path.name + ".not-mine.txt")
    other.write_text("not a detector file\n")
    try:
        assert reader.can_read(other) == 0, f"{reader.name}: claims the text file {other}"
        missing = reader.can_read(path.with_name("no-such-file" + path.suffix))  # no raise
        assert isinstance(missing, int), f"{reader.name}: can_read of a missing file"
    finally:
        other.unlink()
    ds = reader.read(path, **options)
    assert isinstance(ds, xr.Dataset) and schema.INTENSITY in ds, (
        f"{reader.name}: read() must return a Dataset with {schema.INTENSITY!r}")
    inten = ds[schema.INTENSITY]
    assert inten.dims == schema.detector_dims(inten.ndim), (
        f"{reader.name}: intensity dims {inten.dims}, expected "
        f"{schema.detector_dims(inten.ndim)}")
    assert inten.dtype.kind in "fiu", f"{reader.name}: intensity dtype {inten.dtype}"
    if schema.MASK in ds:
        assert ds[schema.MASK].dtype == bool and ds[schema.MASK].shape in (
            inten.shape, inten.shape[-2:]), (f"{reader.name}: mask must be boolean of the "
                                             "intensity's shape or of one frame's")
    return ds
