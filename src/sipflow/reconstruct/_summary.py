"""The summary rows of ``phase.classic``: runs, success rate, run sets, object model, support."""

from __future__ import annotations

import xarray as xr

from .. import schema


def _support_rows(pc: dict, ndim: int) -> list[tuple[str, str]]:
    """Support size of the selected run, the spread over accepted runs, and warnings.

    A support larger than ``1 / 2**ndim`` of the array means the data are oversampled
    less than twice per axis along it: the reconstruction is not unique, whatever its LLK.
    """
    fractions = pc.get("support_fraction")
    if not fractions:
        return []
    best = fractions[pc["best_run"]]
    ok = [f for f, s in zip(fractions, pc["run_status"], strict=True) if s == "ok"]
    text = f"{best:.2%} of the array (accepted runs {min(ok):.2%}-{max(ok):.2%})"
    rows = [("support (best run)", text)]
    if best > 1 / 2**ndim:
        rows.append(("support warning", f"larger than 1/{2**ndim} of the array: oversampling "
                                        "below 2 per axis, the result is not unique"))
    elif len(ok) > 1 and max(ok) > 2 * min(ok):
        rows.append(("support warning", "accepted runs disagree on the support size by more "
                                        "than 2x: inspect obj_runs before trusting the best"))
    return rows


def classic_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    """(quantity, value) rows of a result's ``attrs["phase_classic"]`` (none without it)."""
    rows: list[tuple[str, str]] = []
    pc = ds.attrs.get("phase_classic")
    if not pc:
        return rows
    rows.append(("plan", pc["plan"]))
    if pc.get("noise"):  # what the values are, and the likelihood chosen for them
        rows.append(("data", pc["noise"]["description"]))
    rows.append(("runs ok", f"{sum(s == 'ok' for s in pc['run_status'])}"
                            f"/{len(pc['run_status'])} (best: run {pc['best_run']})"))
    if "success_rate" in pc:
        starts = sum(pc["run_attempts"])
        restarts = starts - len(pc["run_attempts"])
        rows.append(("success rate", f"{pc['success_rate']:.0%} of {starts} random starts"
                                     + (f" ({restarts} restart{'s' * (restarts > 1)})"
                                        if restarts else "")))
    if pc.get("run_sets", 1) > 1:  # set_retries: the set missed the object, again
        scores = ", ".join("failed" if v is None else f"{v:.3g}"
                           for v in pc["run_set_llk_free"])
        rows.append(("run sets", f"{pc['run_sets']} computed, set {pc['run_set_kept'] + 1} "
                                 f"kept (best free LLK of each: {scores})"))
    if pc.get("time_limited"):
        rows.append(("time limit", f"budget spent after {pc['run_sets']} run set(s): the "
                                   "best set so far is returned, not confirmed solved"))
    elif "run_set_solved" in pc and pc["run_set_solved"] is None:
        rows.append(("run set warning", "no run set was confirmed solved (the two best "
                                        "independent starts found different objects): inspect "
                                        "obj_runs"))
    elif pc.get("run_set_solved"):
        rows.append(("run set solved", pc["run_set_solved"]))
    positive = pc.get("run_positivity", [])
    if len(set(positive)) > 1:  # run_variants: both hypotheses were tried
        chosen = "real, non-negative" if pc["best_run_positivity"] else "complex"
        rows.append(("object model", f"{chosen} (best run; {sum(positive)} of "
                                     f"{len(positive)} runs assumed positivity)"))
    averaged = pc.get("averaged_runs", [])
    if len(averaged) > 1:  # keep_best: the result is an aligned average
        rows.append(("averaged", f"runs {', '.join(str(r) for r in averaged)} (aligned "
                                 "to the best)"))
    for r, status in enumerate(pc["run_status"]):
        if status != "ok":
            rows.append((f"run {r}", status))
    free = pc.get("final_llk_free", [])
    if free and free[pc["best_run"]] == free[pc["best_run"]]:  # not NaN
        rows.append(("free LLK (best run)", f"{free[pc['best_run']]:.4g}"))
    rows.extend(_support_rows(pc, ds[schema.OBJ].ndim if schema.OBJ in ds else 2))
    return rows
