"""Human-facing summaries of a result: a metrics table and a PNG quick-look."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import schema


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


def _mode_rows(metrics: dict) -> list[tuple[str, str]]:
    """A warning when the mask (a beamstop) leaves modes of the support undetermined."""
    n = metrics.get("undetermined_modes")
    if not n:
        return []
    computed = len(metrics.get("unmeasured_mode_power", []))
    return [("mode warning", f"{n}{' or more' if n >= computed else ''} mode(s) of the support "
                             "have >= 99% of their power on unmeasured pixels (a beamstop): "
                             "the data do not fix them, so the object's low frequencies are "
                             "not unique whatever the LLK; a smaller beamstop, positivity or "
                             "another prior is needed")]


def summary_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    """(name, value) rows describing a result: shapes, runs, metrics, wall times."""
    rows: list[tuple[str, str]] = []
    if schema.INTENSITY in ds:
        rows.append(("intensity", f"{tuple(ds[schema.INTENSITY].shape)}"))
    if schema.OBJ in ds:
        rows.append(("object", f"{tuple(ds[schema.OBJ].shape)} {ds[schema.OBJ].dtype}"))
    pc = ds.attrs.get("phase_classic")
    if pc:
        rows.append(("plan", pc["plan"]))
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
    for key, label in (("phase_dip", "DIP"), ("phase_double_dip", "double DIP")):
        dp = ds.attrs.get(key)
        if not dp:
            continue
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
    bs = ds.attrs.get("bragg_strain")
    if bs and schema.SUPPORT in ds:
        voxel = bs["voxel_size_nm"]
        extent = ds.attrs.get("bragg_crystal_size_nm")  # face to face at half amplitude
        how = "face to face at half amplitude"
        if extent is None:  # an orthogonalisation that did not record it: voxels counted
            extent = [(int(np.ptp(ix)) + 1) * v for ix, v in
                      zip(np.nonzero(np.asarray(ds[schema.SUPPORT].values)), voxel,
                          strict=True)]
            how = "support's bounding box"
        rows.append(("crystal size", " × ".join(f"{e:.0f}" for e in extent) + " nm"
                     + f" ({', '.join(map(str, ds[schema.SUPPORT].dims))}, {how}; voxel "
                       f"{voxel[0]:.3g} nm)"))
        rows.append(("d spacing / |G|", f"{bs['d_spacing_nm']:.4f} nm / {bs['g_inv_nm']:.4g} "
                                        "1/nm"))
        rows.append(("RMS strain (interior)", f"{bs['strain_rms']:.3g} (mean "
                                              f"{bs['strain_mean']:.2g}, "
                                              f"{bs['interior_voxels']} voxels; "
                                              f"{bs['surface_voxels']} surface voxels "
                                              "flagged)"))
    cert = ds.attrs.get("refine_certificate")
    if cert:
        verdict = "certified" if cert["certified"] else "NOT certified"
        rows.append(("refine certificate", f"{verdict} ({cert['status']})"))
        sampled = (f" (sampled within {cert['sampling_radius']:.2g})"
                   if cert.get("stationarity") == "sampled" else "")
        rows.append(("refine violation / KKT", f"{cert['max_violation']:.3g} / "
                                               f"{cert['kkt_residual']:.3g}{sampled}"))
        if not cert["certified"]:
            rows.append(("refine reason", cert["reason"]))
    rows.extend(_mode_rows(ds.attrs.get("metrics") or {}))
    for key, value in (ds.attrs.get("metrics") or {}).items():
        if isinstance(value, float):
            rows.append((key, f"{value:.4g}"))
        elif isinstance(value, list):
            rows.append((key, "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                              for v in value) + "]"))
        else:
            rows.append((key, str(value)))
    prov = ds.attrs.get("provenance") or {}
    for st in prov.get("stages", []):
        rows.append((f"time {st['use']}", f"{st['wall_s']:.2f} s"))
    if prov:
        rows.append(("device / seed", f"{prov.get('device')} / {prov.get('seed')}"))
    return rows


def print_table(rows: list[tuple[str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def _central(a: np.ndarray) -> np.ndarray:
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def quicklook(ds: xr.Dataset, path: str | Path, title: str = "") -> Path:
    """Write a PNG: log intensity, amplitude, phase (cyclic, in support) and LLK curves.

    3-D data show their central slice. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, Any]] = []
    if schema.INTENSITY in ds:
        panels.append(("log10 intensity", np.log10(1 + _central(np.asarray(
            ds[schema.INTENSITY].values, float)))))
    if schema.OBJ in ds:
        obj = _central(np.asarray(ds[schema.OBJ].values))
        support = (_central(np.asarray(ds[schema.SUPPORT].values)) if schema.SUPPORT in ds
                   else np.abs(obj) > 0.1 * np.abs(obj).max())
        panels.append(("amplitude", np.abs(obj)))
        panels.append(("phase [rad] in support", np.ma.masked_where(~support, np.angle(obj))))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 4))
    for ax, (name, img) in zip(axes, panels, strict=False):
        cmap = "twilight" if "phase" in name else "gray" if name == "amplitude" else "viridis"
        kw = {"vmin": -np.pi, "vmax": np.pi} if "phase" in name else {}
        im = ax.imshow(img, cmap=cmap, **kw)
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[-1]
    if schema.LLK in ds:
        llk = np.asarray(ds[schema.LLK].values)
        its = np.asarray(ds[schema.ITER].values)
        for r in range(llk.shape[0]):
            ax.semilogy(its, np.clip(llk[r], 1e-12, None), label=f"run {r}")
        ax.set_xlabel("iteration")
        ax.set_title("Poisson LLK")
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
