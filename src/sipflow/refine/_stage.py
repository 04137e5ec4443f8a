"""``refine.constrained``: refine an object against the data under declared constraints."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from .. import schema
from ..contracts import Context, Stage, StageParams, registry_of
from ..errors import DataError, unknown_choice
from ..hookspecs import hookimpl
from ..physics import Measurement

#: what the certificate attrs are called in a result
CERTIFICATE_ATTR = "refine_certificate"


def _constraint_entries(items: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and "use" in item and set(item) <= {"use", "with"}:
            out.append((str(item["use"]), dict(item.get("with") or {})))
        else:
            raise ValueError(f"constraint {i} must be a name or {{use: NAME, with: {{...}}}}, "
                             f"got {item!r}")
    return out


def _number(value: Any) -> float:
    """A certificate's figure as a float: a store keeps a non-finite one as the JSON text
    ``"Infinity"``/``"NaN"`` (or loses it), which must not break a summary."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


class ConstrainedParams(StageParams):
    """Parameters of ``refine.constrained``."""

    objective: Literal["poisson", "gaussian"] = Field(
        "poisson", description="Negative log-likelihood on the fitted pixels (measured, not "
        "free), normalised so that an ideal fit is ~1.")
    amplitude_first: bool = Field(
        True, description="Solve the amplitude (Euclidean) form of the likelihood first, "
        "under the same constraints, then the objective from its answer (a continuation): "
        "its landscape has fewer spurious minima, and the Poisson solve from its answer ends "
        "in lower minima (benchmarks/README.md). The certificate is the objective's.")
    constraints: list[str | dict[str, Any]] = Field(
        ["support", "amplitude"], description="Constraints by name, with parameters as "
        "{use: NAME, with: {...}} (sipflow stages lists the registered ones).")
    method: Literal["augmented_lagrangian", "penalty_adam"] = Field(
        "augmented_lagrangian", description="The certified solver, or the common penalty + "
        "Adam practice for comparison (the same certificate is reported).")
    max_outer: int = Field(30, ge=1, le=1000, description="Augmented-Lagrangian iterations.")
    max_inner: int = Field(500, ge=1, le=100_000, description="L-BFGS-B iterations per outer "
                           "iteration.")
    violation_tol: float = Field(1e-6, gt=0, description="Certified: scaled violation ≤ this.")
    kkt_tol: float = Field(1e-5, gt=0, description="Certified: relative KKT residual ≤ this.")
    precision: Literal["float64", "float32"] = Field("float64", description="Precision of the "
                                                     "solve (float64 for certification).")
    penalty_weight: float = Field(100.0, gt=0, description="penalty_adam: weight of the "
                                  "squared violations.")
    adam_steps: int = Field(2000, ge=1, description="penalty_adam: Adam steps.")
    adam_lr: float = Field(1e-3, gt=0, description="penalty_adam: learning rate, relative to "
                           "the largest starting amplitude.")

    @field_validator("constraints")
    @classmethod
    def _known(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        registry = registry_of(info.context)
        for name, params in _constraint_entries(value):
            if name not in registry.constraints:
                raise ValueError(unknown_choice("constraint", name, registry.constraints))
            try:
                registry.constraints[name].Params(**params)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'with'}: {e['msg']}"
                    + (f" (got {e['input']!r})" if e.get("loc") else "") for e in exc.errors())
                raise ValueError(f"constraint {name!r}: {problems}") from None
        return value


class Constrained(Stage):
    """Refine the object against the data under declared constraints, with a certificate.

    The objective is the likelihood of :mod:`sipflow.physics` on the fitted pixels; the
    solver is :func:`sipflow.optim.solve`; the certificate (feasibility and stationarity)
    goes to ``attrs["refine_certificate"]``.
    """

    name = "refine.constrained"
    version = "1.0"
    Params = ConstrainedParams
    requires = (schema.INTENSITY, schema.OBJ, schema.SUPPORT)
    produces = (schema.OBJ,)
    heavy = True
    record_attr = CERTIFICATE_ATTR

    @classmethod
    def summary_rows(cls, ds: xr.Dataset) -> list[tuple[str, str]]:
        """The certificate's verdict, violation and KKT residual (and why, when not met)."""
        rows: list[tuple[str, str]] = []
        cert = ds.attrs.get(CERTIFICATE_ATTR)
        if cert:
            verdict = "certified" if cert["certified"] else "NOT certified"
            rows.append(("refine certificate", f"{verdict} ({cert['status']})"))
            sampled = (f" (sampled within {_number(cert.get('sampling_radius')):.2g})"
                       if cert.get("stationarity") == "sampled" else "")
            rows.append(("refine violation / KKT",
                         f"{_number(cert.get('max_violation')):.3g} / "
                         f"{_number(cert.get('kkt_residual')):.3g}{sampled}"))
            if not cert["certified"]:
                rows.append(("refine reason", cert["reason"]))
        return rows

    def run(self, ds: xr.Dataset, params: ConstrainedParams, context: Context) -> xr.Dataset:
        from ..optim import Problem, SolverOptions, Variable, penalty_adam, solve
        from ..physics import normalised_llk
        from ._constraints import RefineProblem

        source = ds.attrs.get("source", "the input")
        obj = np.asarray(ds[schema.OBJ].values)
        meas = Measurement.from_dataset(ds, stage=self.name)
        counts = meas.counts.astype(np.float64)
        if obj.shape != counts.shape:
            raise DataError(f"{source}: refine.constrained needs obj and intensity of the same "
                            f"shape (a far-field pair); got obj {obj.shape} and intensity "
                            f"{counts.shape}")
        support = np.asarray(ds[schema.SUPPORT].values, bool)
        if support.shape != obj.shape:
            raise DataError(f"{source}: support {support.shape} does not match obj {obj.shape}")
        dtype = torch.float64 if params.precision == "float64" else torch.float32
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        device = context.device
        ndim, model = obj.ndim, meas.model()
        x0 = torch.as_tensor(obj, dtype=cdtype, device=device)
        counts_t = torch.as_tensor(counts, dtype=dtype, device=device)
        valid = torch.as_tensor(meas.valid, device=device)
        free_t = torch.as_tensor(meas.free, device=device)
        rp = RefineProblem(x0, torch.as_tensor(support, device=device), counts_t, valid, model)
        dof = max(1, int(meas.valid.sum()))

        def objective(v: dict[str, torch.Tensor]) -> torch.Tensor:
            return normalised_llk(model.intensity(v["x"]), counts_t, valid, ndim=ndim, dof=dof,
                                  kind=params.objective)

        def amplitude(v: dict[str, torch.Tensor]) -> torch.Tensor:
            return normalised_llk(model.intensity(v["x"]), counts_t, valid, ndim=ndim, dof=dof,
                                  kind="euclidean")

        variable, inequalities, equalities, exact, scales, used = _constraint_functions(
            params, registry_of(context), rp, Variable("x", x0))
        problem = Problem(objective, [variable], inequalities, equalities, scales, exact,
                          continuation=[amplitude] if params.amplitude_first else [])
        options = SolverOptions(violation_tol=params.violation_tol, kkt_tol=params.kkt_tol,
                                max_outer=params.max_outer, max_inner=params.max_inner,
                                dtype=dtype)

        def free_llk(x: torch.Tensor) -> float | None:
            if not bool(free_t.any()):
                return None  # no free pixels held out by an earlier stage
            with torch.no_grad():
                return float(normalised_llk(model.intensity(x), counts_t, free_t, ndim=ndim,
                                            dof=int(free_t.sum()), kind=params.objective))

        with torch.no_grad():
            start_objective = float(objective({"x": variable.init}))
        if params.method == "augmented_lagrangian":
            def report(outer: int, cert: Any) -> None:
                context.report(_record(self.name, outer, params.max_outer, cert))

            result = solve(problem, options, callback=report)
        else:
            lr = params.adam_lr * max(float(x0.abs().max()), 1e-30)
            result = penalty_adam(problem, weight=params.penalty_weight,
                                  steps=params.adam_steps, lr=lr, options=options)
        x = result.values["x"]
        cert = result.certificate
        context.logger.info("refine.constrained: %s (objective %.6g -> %.6g, violation %.3g, "
                            "KKT %.3g)", cert.status, start_objective, cert.objective,
                            cert.max_violation, cert.kkt_residual)
        out = ds.copy()
        out[schema.OBJ] = (ds[schema.OBJ].dims, x.detach().cpu().numpy().astype(np.complex64))
        out.attrs = dict(ds.attrs)
        # the stage's wall time is in the provenance; results stay reproducible
        out.attrs[CERTIFICATE_ATTR] = {k: v for k, v in cert.as_dict().items() if k != "wall_s"}
        out.attrs["refine_constrained"] = {
            "method": params.method, "objective": params.objective,
            "amplitude_first": params.amplitude_first and params.method != "penalty_adam",
            "constraints": used,
            "objective_start": start_objective, "objective_end": cert.objective,
            "llk_free_start": free_llk(variable.init), "llk_free_end": free_llk(x.to(cdtype)),
        }
        return out


def _constraint_functions(params: ConstrainedParams, registry: Any, rp: Any, variable: Any
                          ) -> tuple[Any, dict, dict, dict, dict, list]:
    """The pipeline's constraints as the solver's functions: the variable (restricted by the
    ``set`` constraints), the inequalities and equalities (smooth forms), their exact forms
    and scales, and what was used (for the record)."""
    inequalities, equalities, exact, scales, used = {}, {}, {}, {}, []
    for name, raw in _constraint_entries(params.constraints):
        cls = registry.constraint(name)
        c = cls()
        p = cls.Params(**raw)
        c.check(p, rp)
        used.append({"use": name, "with": p.model_dump(mode="json")})
        if cls.kind == "set":
            variable = c.restrict(variable, p, rp)
            continue
        key = name if name not in inequalities and name not in equalities else (
            f"{name}_{len(used)}")
        target = inequalities if cls.kind == "inequality" else equalities
        target[key] = (lambda v, c=c, p=p: c.smooth_values(v["x"], p, rp))
        if c.has_smooth_form():
            exact[key] = (lambda v, c=c, p=p: c.values(v["x"], p, rp))
        scales[key] = float(c.scale(p, rp))
    return variable, inequalities, equalities, exact, scales, used


def _record(stage: str, outer: int, total: int, cert: Any):
    from ..contracts import ProgressRecord

    return ProgressRecord(stage, outer, total, {"objective": cert.objective,
                                                "violation": cert.max_violation,
                                                "kkt": cert.kkt_residual})


@hookimpl
def sipflow_stages():
    return [Constrained]


__all__ = ["CERTIFICATE_ATTR", "Constrained", "ConstrainedParams"]
