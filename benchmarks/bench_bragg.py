"""Bragg CDI end to end on a simulated crystal with a known displacement field.

A faceted gold crystal (an octahedron cut by a cube, sizes in nm) with a known
displacement along the Bragg vector is sampled on the oblique lattice of a rocking scan
in the APS 34-ID-C geometry (9 keV, δ = 32.174°, γ = 12.6346°, 110 µm binned pixels at
0.5 m), its far-field intensity is drawn with Poisson noise, and the ``bcdi`` template's
phasing, ``bragg.orthogonalize`` and ``bragg.strain`` run on it. Printed: the crystal's
size in nm along each lab axis (edges at half amplitude) against its extent, the worst
axis's error in voxels, the RMS strain error on the interior (after aligning the result
to the truth modulo translation and twin), and the wall time per stage. With
``--blur``: the intensity blurred by a known kernel (partial coherence), and the
template's coherent phasing against the same schedule with ``psf`` kernel updates.

    python benchmarks/bench_bragg.py                 # 2 fields × 2 photon levels × 3 seeds
    python benchmarks/bench_bragg.py --quick         # one field, one level, one seed
    python benchmarks/bench_bragg.py --blur 0 1      # partial coherence, 3 seeds each
"""

from __future__ import annotations

import argparse
import os
import platform
import re

import numpy as np
import torch
import xarray as xr

SHAPE = (64, 64, 64)
SIZE = np.array([220.0, 160.0, 250.0])  # the crystal's box (z, y, x) [nm], facets cut it


def geometry(rocking_step: float):
    from sipflow.bragg import Geometry

    return Geometry(wavelength_nm=0.137760, distance_nm=0.5e9, pixel_nm=(110e3, 110e3),
                    delta_deg=32.174, gamma_deg=12.6346, rocking_step_deg=rocking_step)


def crystal(p: np.ndarray) -> np.ndarray:
    """Support of the faceted crystal at lab positions `p` (3, ...) [nm]."""
    box = np.all(np.abs(p) <= SIZE.reshape(3, *[1] * (p.ndim - 1)) / 2, axis=0)
    octa = (np.abs(p[0]) / 150 + np.abs(p[1]) / 110 + np.abs(p[2]) / 160) <= 1.0
    return box & octa


def displacement(p: np.ndarray, g_hat: np.ndarray, field: str) -> np.ndarray:
    """Known displacement along G [nm] and its strain ∂u/∂ĝ at lab positions `p`."""
    s = np.einsum("i,i...->...", g_hat, p)
    if field == "gradient":  # a linear strain gradient along G: ε = 2 a s, ±1e-3
        a = 4e-6
        return a * s ** 2, 2 * a * s
    if field == "bulge":  # a smooth local expansion: u = A exp(−|p|²/2w²) ĝ-derivative
        w, amp = 60.0, 0.05
        gauss = np.exp(-0.5 * (p ** 2).sum(axis=0) / w ** 2)
        return amp * gauss, -amp * gauss * s / w ** 2
    raise ValueError(field)


def scan(field: str, photons: float, seed: int, rocking_step: float, blur: float = 0.0
         ) -> tuple[xr.Dataset, dict]:
    """A simulated rocking scan; `blur` [px] convolves its intensity with a Gaussian (a
    partially coherent beam, through the shared forward model's coherence kernel)."""
    from sipflow.bragg import transfer_matrix
    from sipflow.physics import gaussian_kernel, kernel_coherence

    geo = geometry(rocking_step)
    r = transfer_matrix(geo.q_steps(), SHAPE)
    s = np.stack(np.meshgrid(*[np.arange(n) - n // 2 for n in SHAPE], indexing="ij"))
    p = np.einsum("ij,j...->i...", r, s)
    q = geo.q_bragg()
    g_hat = q / np.linalg.norm(q)
    support = crystal(p)
    u, _ = displacement(p, g_hat, field)
    obj = np.where(support, np.exp(1j * np.linalg.norm(q) * u), 0)
    amp = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj), norm="ortho"))) ** 2
    if blur > 0:
        amp = kernel_coherence(gaussian_kernel(SHAPE, blur))(torch.from_numpy(amp)).numpy()
    rng = np.random.default_rng(seed)
    counts = rng.poisson(amp * photons / amp.sum()).astype(np.float32)
    dims = ("frame", "det_y", "det_x")
    ds = xr.Dataset({"intensity": (dims, counts), "mask": (dims, np.ones(SHAPE, bool))},
                    attrs={"source": f"simulated {field} crystal",
                           "wavelength_m": 0.137760e-9, "distance_m": 0.5,
                           "pixel_size_m": 110e-6, "delta_deg": 32.174, "gamma_deg": 12.6346,
                           "rocking_step_deg": rocking_step,
                           "prep_window": {"centre": [32, 128, 128], "shape": list(SHAPE),
                                           "bin": [1, 1, 1], "detector_shape": [64, 256, 256]}})
    return ds, {"g_hat": g_hat, "field": field, "obj": obj}


def compare(out: xr.Dataset, truth: dict) -> dict:
    """Shape and strain of the result against the truth on its lab grid, modulo
    translation and twin (the twin's strain is the truth's at −r). A centrosymmetric
    shape cannot tell the twin apart, so both are scored and the better strain kept.
    Sizes: ``bragg.orthogonalize``'s ``bragg_crystal_size_nm`` against the crystal's
    extent."""
    from scipy import ndimage

    voxel = out.attrs["voxel_size_m"][0] * 1e9
    grid = np.stack(np.meshgrid(*[out[d].values for d in ("z", "y", "x")], indexing="ij"))
    true_support = crystal(grid)
    _, true_strain = displacement(grid, truth["g_hat"], truth["field"])
    inner_truth = ndimage.binary_erosion(true_support)
    best = None
    for twin in (False, True):
        arrays = [out[v].values for v in ("support", "strain", "surface")]
        if twin:
            arrays = [a[::-1, ::-1, ::-1] for a in arrays]
        # integer shift maximising the overlap of the supports
        corr = np.real(np.fft.ifftn(np.fft.fftn(true_support)
                                    * np.conj(np.fft.fftn(arrays[0]))))
        shift = np.unravel_index(np.argmax(corr), corr.shape)
        sup, strain, surface = (np.roll(a, shift, axis=(0, 1, 2)) for a in arrays)
        iou = (sup & true_support).sum() / max((sup | true_support).sum(), 1)
        interior = sup & ~surface & inner_truth & np.isfinite(strain)
        diff = strain[interior] - true_strain[interior]
        rms = float(np.sqrt(np.mean((diff - diff.mean()) ** 2))) if diff.size else np.inf
        if best is None or rms < best["strain_rms_error"]:
            best = {"iou": float(iou), "twin": twin, "voxel_nm": voxel,
                    "strain_rms_error": rms,
                    "strain_rms_truth": float(np.std(true_strain[interior])),
                    "interior": int(interior.sum())}
    # the size as the stage measures it (edges at half amplitude), against the crystal's
    # extent: the octahedron cuts the box's edges and corners but not the middle of its
    # faces, so the extent is the box (a twin has the same size)
    best["sizes"] = list(zip(out.attrs["bragg_crystal_size_nm"], SIZE.tolist(), strict=True))
    return best


def phasing_error(out: xr.Dataset, truth: dict, group) -> float:
    """The detector-frame object's relative error modulo the trivial ambiguities."""
    est = out["obj_oblique"].values
    return float(group.error(est * (np.linalg.norm(truth["obj"]) / np.linalg.norm(est)),
                             truth["obj"]))


def main() -> None:
    import sipflow
    from sipflow.pipeline import Pipeline
    from sipflow.symmetry import get_group

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rocking-step", type=float, default=0.02,
                   help="degrees per frame (0.02: ~12 nm along the rocking direction)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blur", type=float, nargs="+", default=None, metavar="SIGMA",
                   help="instead: partial coherence, the intensity blurred by a Gaussian of "
                   "SIGMA px; the template's phasing against the same with psf steps")
    p.add_argument("--seeds", type=int, default=3, help="noise and start seeds per case")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("SIPFLOW_NUM_THREADS", os.cpu_count() or 1)))
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    # the bcdi template's phasing and Bragg stages (the data are simulated already centred)
    steps = [{"use": s.stage.name, "with": s.params.model_dump(mode="json")}
             for s in Pipeline.load("bcdi").steps if s.stage.kind() != "prep"]
    for step in steps:
        if step["use"] == "bragg.orthogonalize":
            step["with"]["geometry"]["detector_centre_px"] = None  # the peak on the arm
    if args.blur:
        coherence_table(steps, args)
        return
    fields = ["gradient"] if args.quick else ["gradient", "bulge"]
    levels = [1e9] if args.quick else [1e9, 1e8]
    print("\n| field | photons | seed | phasing error | IoU | twin | size z / y / x [nm] "
          "(truth) | voxel [nm] | size error [voxels] | strain RMS error | strain RMS (truth) | "
          "phase s | bragg s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    group = get_group("farfield")
    seeds = [args.seed] if args.quick else range(args.seed, args.seed + args.seeds)
    for field, photons, seed in ((f, n, s) for f in fields for n in levels for s in seeds):
        ds, truth = scan(field, photons, seed, args.rocking_step)
        out = sipflow.run_pipeline({"stages": steps}, ds, seed=seed)
        wall = {st["use"]: st["wall_s"] for st in out.attrs["provenance"]["stages"]}
        c = compare(out, truth)
        sizes = " / ".join(f"{g:.0f} ({w:.0f})" for g, w in c["sizes"])
        worst = max(abs(g - w) for g, w in c["sizes"]) / c["voxel_nm"]
        bragg = wall.get("bragg.orthogonalize", 0) + wall.get("bragg.strain", 0)
        print(f"| {field} | {photons:.0e} | {seed} | {phasing_error(out, truth, group):.3f} | "
              f"{c['iou']:.3f} | {c['twin']} | {sizes} | {c['voxel_nm']:.1f} | {worst:.2f} | "
              f"{c['strain_rms_error']:.2e} | {c['strain_rms_truth']:.2e} | "
              f"{wall.get('phase.classic', 0):.0f} | {bragg:.1f} |", flush=True)


#: the template's last 540 iterations, and the same with Richardson–Lucy kernel updates
COHERENT_TAIL = re.compile(r"\(sup \* (\w+)\*\*20\)\*\*22 \* \(sup \* ER\*\*20\)\*\*5$")
PSF_TAIL = r"(sup * \1**20)**6 * (sup * psf * \1**20)**16 * (sup * psf * ER**20)**5"


def coherence_table(steps: list[dict], args: argparse.Namespace) -> None:
    """The gradient crystal at 1e9 photons, blurred: the template's phasing (coherent
    model) against the same schedule with ``psf`` steps, the rest of the chain alike."""
    import statistics

    import sipflow
    from sipflow.symmetry import get_group

    phase = next(st for st in steps if st["use"] == "phase.classic")
    assert COHERENT_TAIL.search(phase["with"]["schedule"]), phase["with"]["schedule"]
    psf_steps = [dict(st, **{"with": dict(st["with"])}) for st in steps]
    psf_phase = next(st for st in psf_steps if st["use"] == "phase.classic")
    psf_phase["with"]["schedule"] = COHERENT_TAIL.sub(PSF_TAIL, phase["with"]["schedule"])
    print(f"psf schedule: {psf_phase['with']['schedule']}")
    group = get_group("farfield")
    print(f"\nPartial coherence: gradient crystal, 1e9 photons, medians over {args.seeds} "
          "seeds (wins: psf better on how many seeds)\n")
    print("| blur σ [px] | model | free LLK | phasing error | strain RMS error | "
          "size error [voxels] | kernel RMS [px] | psf wins (free LLK, error) | phase s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sigma in args.blur:
        rows: dict[str, list[tuple]] = {"coherent": [], "psf": []}
        for seed in range(args.seed, args.seed + args.seeds):
            ds, truth = scan("gradient", 1e9, seed, args.rocking_step, blur=sigma)
            for model, chain in (("coherent", steps), ("psf", psf_steps)):
                try:
                    out = sipflow.run_pipeline({"stages": chain}, ds, seed=seed)
                except Exception as exc:  # every run rejected: the worst score
                    print(f"  ({model}, σ {sigma}, seed {seed}: {exc})")
                    rows[model].append((np.inf, 1.0, np.inf, np.inf, np.nan, np.nan))
                    continue
                pc = out.attrs["phase_classic"]
                c = compare(out, truth)
                wall = {st["use"]: st["wall_s"] for st in out.attrs["provenance"]["stages"]}
                width = pc.get("coherence_kernel_rms_px")
                rows[model].append((
                    pc["final_llk_free"][pc["best_run"]], phasing_error(out, truth, group),
                    c["strain_rms_error"],
                    max(abs(g - w) for g, w in c["sizes"]) / c["voxel_nm"],
                    float(np.mean(width)) if width else np.nan, wall["phase.classic"]))
        wins = (sum(a[0] < c[0] for c, a in zip(rows["coherent"], rows["psf"], strict=True)),
                sum(a[1] < c[1] for c, a in zip(rows["coherent"], rows["psf"], strict=True)))
        for model, r in rows.items():
            med = [statistics.median(x[i] for x in r) for i in range(6)]
            tag = f"{wins[0]}/{len(r)}, {wins[1]}/{len(r)}" if model == "psf" else ""
            kernel = "" if np.isnan(med[4]) else f"{med[4]:.2f}"
            print(f"| {sigma:g} | {model} | {med[0]:.3g} | {med[1]:.3f} | {med[2]:.2e} | "
                  f"{med[3]:.2f} | {kernel} | {tag} | {med[5]:.0f} |", flush=True)


if __name__ == "__main__":
    main()
