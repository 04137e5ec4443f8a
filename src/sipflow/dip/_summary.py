"""The summary rows of ``phase.dip`` and ``phase.double_dip``."""

from __future__ import annotations

import xarray as xr


def deep_prior_rows(ds: xr.Dataset, key: str, label: str) -> list[tuple[str, str]]:
    """(quantity, value) rows of a result's ``attrs[key]`` (none without it)."""
    rows: list[tuple[str, str]] = []
    dp = ds.attrs.get(key)
    if not dp:
        return rows
    best = dp["best_run"]
    rows.append((label, f"{dp['variant']}, init {dp['init']}, support {dp['support']}, "
                        f"stopping {dp['early_stopping']}"))
    rows.append((f"{label} runs ok", f"{sum(s == 'ok' for s in dp['run_status'])}"
                                     f"/{len(dp['run_status'])} (best: run {best}, step "
                                     f"{dp['selected_iteration'][best]} of "
                                     f"{dp['stopped_iteration'][best]})"))
    free = dp["final_llk_free"][best]
    previous = dp.get("previous_llk_free")
    if free == free:  # not NaN
        text = f"{free:.4g}" + (f" (previous object {previous:.4g})"
                                if previous is not None else "")
        rows.append((f"{label} free LLK", text))
    if dp.get("previous_llk") is not None:
        rows.append((f"{label} fitted LLK", f"{dp['final_llk'][best]:.4g} (previous "
                                            f"object {dp['previous_llk']:.4g})"))
    if dp.get("kept_previous"):
        rows.append((label, "kept the previous object: its "
                     f"{dp.get('kept_previous_by') or 'free LLK'} is better"))
    return rows
