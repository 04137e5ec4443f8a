"""``phase.classic``: ER / HIO / RAAR / ML with shrinkwrap, many runs as one batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from .. import schema
from ..contracts import PHASE_ATTR, Context, PhaseRecord, Stage
from ..errors import Cancelled, DataError, ReconstructionError
from ..hookspecs import hookimpl
from ..physics import Measurement, noise_model
from ..runset import run_seeds
from ..symmetry import align
from ._params import ClassicParams
from ._plan import parse
from ._summary import classic_rows


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _scaled(threshold: float | tuple[float, float] | list[float], factor: float
            ) -> float | tuple[float, float]:
    """A shrinkwrap threshold (or range) times `factor`."""
    if isinstance(threshold, tuple | list):
        return (threshold[0] * factor, threshold[1] * factor)
    return threshold * factor


def _first_variants(variants: list, generation: int, generations: int,
                    params: ClassicParams) -> list:
    """The runs' (positivity, threshold) pairs of `generation`: generation 1 of several
    with its thresholds times ``first_threshold_factor``."""
    if generation or generations == 1:
        return variants
    return [(p, _scaled(t, params.first_threshold_factor)) for p, t in variants]


def _with_carried(result: tuple, carried: dict, todo: list[int], runs: int) -> tuple:
    """A 'support' generation's results for `todo` with the kept best run put back.

    The kept run was not iterated again: its LLK rows repeat its final values.
    """
    x, support, llk, llk_free, outside, status, llk_its, kernel = result
    b = carried["run"]

    def full(new: np.ndarray, kept) -> np.ndarray:
        out = np.empty((runs, *new.shape[1:]), dtype=new.dtype)
        out[todo] = new
        out[b] = kept
        return out

    if kernel is not None or carried["kernel"] is not None:
        # a run without a coherence kernel is coherent: a unit delta at the centre
        like = kernel[0] if kernel is not None else carried["kernel"]
        delta = np.zeros_like(like)
        delta[tuple(n // 2 for n in like.shape)] = 1
        kernel = full(kernel if kernel is not None
                      else np.broadcast_to(delta, (len(todo), *delta.shape)),
                      carried["kernel"] if carried["kernel"] is not None else delta)
    merged = [None] * runs
    for j, r in enumerate(todo):
        merged[r] = status[j]
    merged[b] = carried["status"]
    return (full(x, carried["x"]), full(support, carried["support"]),
            full(llk, carried["llk"]), full(llk_free, carried["llk_free"]),
            full(outside, carried["outside"]), merged, llk_its, kernel)


class Classic(Stage):
    """Classical phase retrieval (ER/HIO/RAAR/ML + shrinkwrap), batched over random starts.

    Input: a centred ``intensity`` (q = 0 at n//2, e.g. from ``prep.standard``) and
    its ``mask``, 2-D or 3-D. About 5 % of the valid pixels (small islands away
    from q = 0) are never projected on; their Poisson LLK, the free LLK, ranks
    the runs. Runs whose support collapsed or exploded, or with more than
    ``max_outside`` of their power outside the support, are rejected. The output
    adds ``obj``/``support`` (best run, or the aligned average of the
    ``keep_best`` best), ``obj_runs``/``support_runs``, ``llk``/``llk_free``
    (run, iter), ``prtf`` (q_shell) and ``attrs["phase_classic"]`` with every run's
    rank, status and final figures.
    """

    name = "phase.classic"
    version = "2.0"
    Params = ClassicParams
    requires = (schema.INTENSITY,)
    produces = (schema.OBJ, schema.SUPPORT, schema.OBJ_RUNS, schema.SUPPORT_RUNS, schema.LLK,
                schema.LLK_FREE, schema.PRTF, schema.FREE_MASK)
    heavy = True
    record_attr = "phase_classic"

    @classmethod
    def summary_rows(cls, ds: xr.Dataset) -> list[tuple[str, str]]:
        """Plan, runs, success rate, run sets, object model, averaged runs, support."""
        return classic_rows(ds)

    @classmethod
    def estimate_memory(cls, params: ClassicParams, shape: tuple[int, ...], itemsize: int
                        ) -> int:
        """Runs' objects, supports and results, plus one group's working arrays [bytes]."""
        n = 1
        for s in shape:
            n *= int(s)
        per_run = n * (2 * itemsize * 3 + 2)  # x, result copy, centred copy; support
        return int(params.runs * per_run + n * itemsize * 16)

    def _attempt(self, intensity, valid, plan, seeds, variants, settings, free, given_support,
                 start, params: ClassicParams, context: Context) -> tuple:
        """Run `plan` on ``len(seeds)`` starts; numpy results and each run's status.

        `variants` are the runs' ``(positivity, shrinkwrap threshold)`` pairs.
        Returns ``(x, support, llk, llk_free, outside, status, llk_iterations)``; a run
        with more than ``max_outside`` of its power outside its support is rejected.
        """
        from ._engine import iterate

        gen = iterate(intensity, valid, plan, seeds, settings, stage=self.name, free=free,
                      initial_support=given_support, start=start,
                      positive=[p for p, _ in variants],
                      shrink_thresholds=[t for _, t in variants])
        while True:
            try:
                record = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            try:
                context.report(record)
            except Cancelled:
                gen.close()
                raise
        outside = result.outside_fraction.detach().cpu().numpy()
        status = list(result.status)
        for r in range(len(seeds)):
            if status[r] == "ok" and outside[r] > params.max_outside:
                status[r] = (f"rejected: {outside[r]:.1%} of |P_M x|^2 outside the support "
                             f"(max_outside {params.max_outside:.0%})")
        return (result.x.detach().cpu().numpy(), result.support.detach().cpu().numpy(),
                result.llk.detach().cpu().numpy(), result.llk_free.detach().cpu().numpy(),
                outside, status, result.llk_iterations,
                None if result.kernel is None else result.kernel.detach().cpu().numpy())

    @staticmethod
    def _initial_object(ds: xr.Dataset, params: ClassicParams, shape: tuple[int, ...],
                        source: str, context: Context):
        """Starting objects ``(runs, *shape)`` from the dataset's obj, or None (random)."""
        import torch

        if params.initial_object != "input":
            return None
        if schema.OBJ not in ds or ds[schema.OBJ].shape != shape:
            found = ds[schema.OBJ].shape if schema.OBJ in ds else "no obj"
            raise DataError(f"{source}: phase.classic: initial_object 'input' needs an 'obj' of "
                            f"the intensity's shape {shape} from an earlier stage (e.g. "
                            f"phase.learned); found {found}")
        x0 = torch.as_tensor(np.asarray(ds[schema.OBJ].values), dtype=torch.complex128)
        gen = context.generator()
        noise = torch.complex(*(torch.randn((params.runs, *shape), generator=gen,
                                            dtype=torch.float64, device=gen.device)
                                for _ in range(2))).cpu() / 2**0.5
        noise[0] = 0
        scale = 0.1 * float(x0.abs().pow(2).mean().sqrt())
        return (x0[None] + scale * noise * (x0.abs()[None] > 0)).to(context.device)

    def _one_set(self, set_index: int, intensity, valid, free, settings, schedules: list[str],
                 given_support, start, source: str, params: ClassicParams,
                 context: Context) -> dict:
        """One run set: every generation of `schedules`, failed runs restarted.

        Set 0 uses the run seeds of :func:`run_seeds`; a retried set ``k`` the seeds of
        generation ``g + 64 k`` (at most 50 generations), so no start repeats.
        """
        import torch

        from . import _support
        from ._runs import breed

        device = context.device
        gen_settings = settings
        has_free = bool(free.any())
        # each run's (positivity, shrinkwrap threshold): run_variants cycled over the runs
        base_variants = list(zip(*params.per_run(), strict=True))
        carried: dict | None = None  # a 'support' generation's best run, kept as it was
        generation_best: list[int] = []
        agreement = float("nan")  # generation 1's two best runs' aligned difference
        attempts = np.ones(params.runs, dtype=int)
        for generation, text in enumerate(schedules):
            plan = parse(text)
            # generation 1 of several: a looser shrinkwrap (first_threshold_factor), so
            # that no part of a many-part object is cut before the others repair it
            variants = _first_variants(base_variants, generation, len(schedules), params)
            seeds = run_seeds(context.seed, generation + 64 * set_index, params.runs)
            todo = [r for r in range(params.runs) if carried is None or r != carried["run"]]
            result = self._attempt(
                intensity, valid, plan, [seeds[r] for r in todo], [variants[r] for r in todo],
                gen_settings, free,
                given_support, None if start is None else start[todo], params, context)
            if carried is not None:
                result = _with_carried(result, carried, todo, params.runs)
            x, support, llk, llk_free, outside, status, llk_its, kernel = result
            # runs whose support collapsed or exploded, or that were rejected, start
            # again from fresh random starts (PyNX's runner does the same)
            self._restart_failed(result, attempts, intensity, valid, plan, variants,
                                 gen_settings, free, given_support, start, generation,
                                 set_index, params, context)
            ok = np.array([s == "ok" for s in status])
            if not ok.any():
                raise ReconstructionError(
                    f"{source}: phase.classic: every run failed"
                    + (f" in generation {generation + 1}" if params.generations > 1 else "")
                    + (f" (after {params.restarts} restart round(s))" if params.restarts else "")
                    + ": " + "; ".join(f"run {i}: {s}" for i, s in enumerate(status))
                    + ". Try another shrinkwrap_threshold, support_threshold or "
                      "support_radius.")
            # the free LLK ranks the accepted runs (a failed run's may be NaN: a restart
            # batch whose runs all failed again stopped early); the LLK only when no
            # pixel is held out
            score = (llk_free if has_free else llk)[:, -1]
            ranked = [int(r) for r in np.argsort(np.where(ok, score, np.inf)) if ok[r]]
            generation_best.append(ranked[0])
            if generation == 0 and len(ranked) > 1 and params.set_agreement > 0:
                agreement = float(align(x[ranked[0]].astype(np.complex128),
                                        x[ranked[1]].astype(np.complex128)).error)
            if generation + 1 < len(schedules) and params.generation_start == "support":
                # the best run is kept as it is; the others start at random in its
                # support, closed and filled
                best = ranked[0]
                carried = {"run": best, "x": x[best], "support": support[best],
                           "llk": llk[best, -1], "llk_free": llk_free[best, -1],
                           "outside": outside[best], "status": status[best],
                           "kernel": None if kernel is None else kernel[best]}
                repaired = _support.closed_support(support[best], params.generation_closing)
                given_support = torch.as_tensor(repaired, device=device)
                gen_settings = dataclasses.replace(settings, initial_support="input")
                start = None
                context.logger.info("phase.classic: generation %d done, best run %d kept; the "
                                    "others start again in its support (%d px, closed: %d)",
                                    generation + 1, best, int(support[best].sum()),
                                    int(repaired.sum()))
            elif generation + 1 < len(schedules):
                start = torch.as_tensor(breed(x, support, ranked[0]), device=device)
                context.logger.info("phase.classic: generation %d done, best run %d",
                                    generation + 1, ranked[0])

        return {"result": (x, support, llk, llk_free, outside, status, llk_its, kernel),
                "ranked": ranked, "ok": ok, "attempts": attempts,
                "generation_best": generation_best, "scores": score,
                "score": float(score[ranked[0]]), "agreement": agreement}

    def _restart_failed(self, result: tuple, attempts: np.ndarray, intensity, valid, plan,
                        variants: list, settings, free, given_support, start, generation: int,
                        set_index: int, params: ClassicParams, context: Context) -> None:
        """Start the failed runs of `result` again from fresh seeds, up to ``restarts``
        rounds; `result`'s arrays, statuses and `attempts` are updated in place."""
        x, support, llk, llk_free, outside, status, _, kernel = result
        for attempt in range(1, params.restarts + 1):
            failed = [r for r, s in enumerate(status) if s != "ok"]
            if not failed:
                break
            context.logger.info("phase.classic: restarting %d failed run(s) (round %d of "
                                "%d)", len(failed), attempt, params.restarts)
            fresh = run_seeds(context.seed, generation + 64 * set_index, params.runs, attempt)
            # a run that failed from the input object starts again at random
            from_input = generation == 0 and params.initial_object == "input"
            again = self._attempt(
                intensity, valid, plan, [fresh[r] for r in failed],
                [variants[r] for r in failed], settings, free,
                given_support, None if start is None or from_input else start[failed],
                params, context)
            for kept, new in zip((x, support, llk, llk_free, outside), again[:5],
                                 strict=True):
                kept[failed] = new
            if kernel is not None:
                kernel[failed] = again[7]
            for j, r in enumerate(failed):
                status[r] = again[5][j]
            attempts[failed] += 1

    @staticmethod
    def _solved(one: dict, params: ClassicParams, counts_known: bool) -> str | None:
        """Why run set `one` counts as solved, or None (then it may be computed again).

        When the photon scale is known (counts, scaled counts), the noise level is: the
        set is solved when its best free LLK is at most ``set_retry_llk_free``. When it is
        not (processed data), no absolute LLK means anything, and the set's own runs
        judge it: solved when the two best runs of its first generation, independent
        random starts, found the same object (aligned relative difference at most
        ``set_agreement``).
        """
        if counts_known:
            if params.set_retry_llk_free is not None and (
                    one["score"] <= params.set_retry_llk_free):
                return (f"noise level: free LLK {one['score']:.4g} <= "
                        f"{params.set_retry_llk_free:g}")
            return None
        if params.set_agreement > 0 and one["agreement"] <= params.set_agreement:
            return (f"agreement: generation 1's two best runs differ by "
                    f"{one['agreement']:.3f} (at most {params.set_agreement:g})")
        return None

    def _run_sets(self, intensity, valid, free, settings, schedules, given_support, start,
                  source: str, params: ClassicParams, context: Context,
                  counts_known: bool = True) -> tuple[dict, list[float | None]]:
        """Run sets until one is solved (:meth:`_solved`), the retries are spent or the
        time budget ``max_seconds`` is; the best set (its ``solved``/``time_limited``
        say why the sets stopped) and every set's score (None: all runs failed)."""
        import time

        started = time.monotonic()
        best_set: dict | None = None
        set_scores: list[float | None] = []
        solved: str | None = None
        time_limited = False
        for set_index in range(params.set_retries + 1):
            if set_index and params.max_seconds is not None and (
                    time.monotonic() - started >= params.max_seconds):
                time_limited = True
                context.logger.warning(
                    "phase.classic: time budget of %.0f s spent after %d run set(s); the "
                    "best set so far is returned (not confirmed solved)", params.max_seconds,
                    set_index)
                break
            try:
                one = self._one_set(set_index, intensity, valid, free, settings, schedules,
                                    given_support, start if set_index == 0 else None,
                                    source, params, context)
            except ReconstructionError as exc:
                if best_set is None:
                    raise
                context.logger.warning("phase.classic: run set %d failed (%s); the best "
                                       "earlier set is kept", set_index + 1, exc)
                set_scores.append(None)  # every run of it failed
                break
            set_scores.append(one["score"])
            if best_set is None or one["score"] < best_set["score"]:
                best_set = one | {"index": set_index}
            solved = self._solved(one, params, counts_known)
            if solved is not None:
                break
            if set_index < params.set_retries:
                context.logger.info("phase.classic: run set %d is not solved (best free LLK "
                                    "%.4g; its two best first starts differ by %.3g): another "
                                    "set from fresh random starts (%d of %d)", set_index + 1,
                                    one["score"], one["agreement"], set_index + 1,
                                    params.set_retries)
        best_set["solved"] = solved
        best_set["time_limited"] = time_limited
        return best_set, set_scores

    def _output(self, ds: xr.Dataset, params: ClassicParams, meas: Measurement, free,
                schedules: list[str], best_set: dict, set_scores: list[float | None],
                chosen: list[int], obj: np.ndarray, obj_support: np.ndarray, noise,
                context: Context) -> xr.Dataset:
        """The result in the phase schema, with ``attrs["phase_classic"]`` and the record."""
        import torch

        from ._runs import prtf

        counts, mask, ndim = meas.counts, meas.mask, meas.ndim
        x, support, llk, llk_free, outside, status, llk_its, kernel = best_set["result"]
        ranked, ok, attempts = best_set["ranked"], best_set["ok"], best_set["attempts"]
        shells, prtf_values = prtf(obj, counts, mask)

        rdims = schema.real_dims(ndim)
        out = schema.without_phase_results(ds)
        out[schema.INTENSITY] = (ds[schema.INTENSITY].dims, counts)
        out[schema.MASK] = (ds[schema.INTENSITY].dims, mask)
        out[schema.OBJ] = (rdims, obj)
        out[schema.SUPPORT] = (rdims, obj_support)
        if params.keep_runs:
            out[schema.OBJ_RUNS] = ((schema.RUN, *rdims), x)
            out[schema.SUPPORT_RUNS] = ((schema.RUN, *rdims), support)
        out[schema.LLK] = ((schema.RUN, schema.ITER), llk.astype(np.float32))
        out[schema.LLK_FREE] = ((schema.RUN, schema.ITER), llk_free.astype(np.float32))
        out[schema.PRTF] = (("q_shell",), prtf_values.astype(np.float32))
        out[schema.FREE_MASK] = (ds[schema.INTENSITY].dims, free.cpu().numpy())
        psf_width = None
        if kernel is not None:  # the best run's, beside its object
            from ..physics import kernel_width

            out[schema.COHERENCE_KERNEL] = (ds[schema.INTENSITY].dims,
                                            kernel[ranked[0]].astype(np.float32))
            psf_width = kernel_width(torch.fft.ifftshift(torch.as_tensor(kernel[ranked[0]])))
        elif schema.COHERENCE_KERNEL in out:  # an earlier stage's kernel is not this model's
            out = out.drop_vars(schema.COHERENCE_KERNEL)
        out = out.assign_coords({schema.ITER: np.asarray(llk_its, dtype=np.int64),
                                 schema.RUN: np.arange(params.runs), "q_shell": shells})
        below = np.nonzero(prtf_values[1:] < 1 / np.e)[0]
        rank_of = {r: i for i, r in enumerate(ranked)}
        positive = params.per_run()[0]
        out.attrs["phase_classic"] = pc = {
            "plans": [str(parse(t)) for t in schedules],
            "plan": str(parse(schedules[-1])),
            "iterations": sum(parse(t).n_iterations() for t in schedules),
            "generations": len(schedules),
            "best_run": ranked[0], "averaged_runs": chosen,
            "generation_best": best_set["generation_best"],
            "run_sets": len(set_scores), "run_set_kept": best_set["index"],
            "run_set_llk_free": set_scores,
            "run_set_solved": best_set["solved"],
            "run_set_agreement": best_set["agreement"],
            "time_limited": best_set["time_limited"],
            "noise": noise.to_attrs(),
            "ranked_by": "llk_free" if bool(free.any()) else "llk",
            "run_status": status,
            "run_positivity": positive,
            "best_run_positivity": positive[ranked[0]],
            "run_attempts": [int(a) for a in attempts],
            "runs_accepted": int(ok.sum()),
            "success_rate": float(ok.sum() / attempts.sum()),
            "run_rank": [rank_of.get(r) for r in range(params.runs)],
            "final_llk": [float(v) for v in llk[:, -1]],
            "final_llk_free": [float(v) for v in llk_free[:, -1]],
            "outside_fraction": [float(v) for v in outside],
            "coherence_kernel_rms_px": psf_width,
            "support_fraction": [float(support[r].mean()) for r in range(params.runs)],
            "free_pixels": int(free.sum()),
            "prtf_resolution_shell": int(below[0] + 1) if below.size else None,
        }
        out.attrs[PHASE_ATTR] = PhaseRecord(
            stage=self.name, best_run=int(ranked[0]), ranked_by=pc["ranked_by"],
            run_status=list(status), run_rank=pc["run_rank"], final_llk=pc["final_llk"],
            final_llk_free=pc["final_llk_free"], averaged_runs=list(chosen)).to_attrs()
        context.logger.info("phase.classic: %d runs x %d iterations, best run %d (LLK %.4g, "
                            "free LLK %.4g)", params.runs, parse(schedules[-1]).n_iterations(),
                            int(ranked[0]), float(llk[ranked[0], -1]),
                            float(llk_free[ranked[0], -1]))
        return out

    def run(self, ds: xr.Dataset, params: ClassicParams, context: Context) -> xr.Dataset:
        import torch

        from ..runset import average_runs, select_runs
        from ._settings import EngineSettings

        meas = Measurement.from_dataset(ds, stage=self.name)
        counts, mask = meas.counts, meas.mask
        source = ds.attrs.get("source", "input")
        ndim = counts.ndim
        dtype = _torch_dtype(context.dtype)
        device = context.device
        intensity = torch.as_tensor(counts, dtype=dtype, device=device)
        valid = torch.as_tensor(mask, device=device)
        given_support = None
        if params.initial_support == "input":
            if schema.SUPPORT not in ds or ds[schema.SUPPORT].shape != counts.shape:
                raise DataError(f"{source}: initial_support 'input' needs a 'support' variable "
                                f"of shape {counts.shape}")
            given_support = torch.as_tensor(np.asarray(ds[schema.SUPPORT].values, bool),
                                            device=device)
        # its own held-out pixels, drawn on the device (an earlier stage's are not kept)
        meas = meas.hold_out(params.free_fraction, params.free_radius, context.generator())
        free = torch.as_tensor(meas.free, device=device)
        noise = noise_model(counts, mask, likelihood=params.likelihood,
                            photon_scale=params.photon_scale)
        context.logger.info("phase.classic: %s: %s", source, noise.describe())
        settings = EngineSettings.from_params(params, ndim, score_likelihood=noise.likelihood,
                                              score_scale=noise.scale)
        schedules = [params.schedule] + [
            (params.generation_schedules or [])[g - 1]
            if params.generation_schedules and g - 1 < len(params.generation_schedules)
            else params.schedule for g in range(1, params.generations)]
        start = self._initial_object(ds, params, counts.shape, source, context)
        best_set, set_scores = self._run_sets(intensity, valid, free, settings, schedules,
                                              given_support, start, source, params, context,
                                              counts_known=noise.quantum is not None
                                              and noise.likelihood == "poisson")
        x, support = best_set["result"][:2]
        # by the score that ranked them
        chosen = select_runs(best_set["ranked"], best_set["scores"], params.keep_best,
                             params.average_within)
        if len(chosen) > 1:
            obj, obj_support = average_runs(x[chosen], support[chosen])
            obj = obj.astype(x.dtype)
        else:
            obj, obj_support = x[chosen[0]], support[chosen[0]]
        return self._output(ds, params, meas, free, schedules, best_set, set_scores, chosen,
                            obj, obj_support, noise, context)


@hookimpl
def sipflow_stages():
    return [Classic]
