"""The commands a beamline runs unattended: batch, watch and serve."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from ..errors import OrchestrationUnavailable, PipelineError, SipflowError
from ._common import _figures, _prefect_env, _run, _stderr


def _batch_row(scan: str, output: str, reason: str = "", wall_s: float = 0.0
               ) -> dict[str, Any]:
    """One scan's row of a batch: failed when there is a reason; figures filled in later."""
    return {"scan": scan, "output": output, "status": "failed" if reason else "ok",
            "reason": reason, "free_llk": float("nan"), "error": float("nan"),
            "wall_s": wall_s}


def _batch_one(pipeline: str, input_path: str, output: str, engine: str, device: str,
               seed: int | None, overwrite: bool, dtype: str) -> dict[str, Any]:
    """Process one scan of a batch; never raises: the outcome is in the returned row."""
    import time

    t0 = time.perf_counter()
    row = _batch_row(input_path, output)
    try:
        out = _run(pipeline, input_path, output, engine=engine, device=device, seed=seed,
                   overwrite=overwrite, dtype=dtype, load_options={}, progress=False)
        row["free_llk"], row["error"] = _figures(out)
    except SipflowError as exc:
        row.update(status="failed", reason=str(exc))
    except OSError as exc:
        row.update(status="failed", reason=f"{exc.filename or 'a file'}: {exc.strerror or exc}")
    except Exception as exc:  # a bug: reported with this scan, the others still run
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    row["wall_s"] = time.perf_counter() - t0
    return row


def _batch_prefect(args: argparse.Namespace, jobs: list[tuple], done: Any) -> None:
    """The batch as one ``sipflow-process-scans`` flow run, `--concurrency` scans at once.

    Every input is checked here first (a corrupt file fails alone, before the flow).
    Under ``--engine dask`` the flow's scans run on a Dask cluster: a local one of
    `--concurrency` worker processes, or the one at ``--dask-address``.
    """
    import time

    from .._api import preflight
    from ..pipeline import Pipeline

    _prefect_env()
    from ..orchestration import prefect_api, process_scans, quiet_user_errors

    pipe = Pipeline.load(args.pipeline)
    ready = []
    for job in jobs:
        t0 = time.perf_counter()
        try:
            preflight(pipe, job[1], job[2], device=args.device, overwrite=args.overwrite,
                      dtype=args.dtype, check_counts=True)
            ready.append(job)
        except (SipflowError, OSError) as exc:
            done(_batch_row(job[1], job[2], str(exc), time.perf_counter() - t0))
    if not ready:
        return
    flow_fn = process_scans
    if args.engine == "dask":
        from ..orchestration import dask_task_runner

        flow_fn = process_scans.with_options(task_runner=dask_task_runner(
            args.dask_address, workers=min(args.concurrency, len(ready))))
    with prefect_api(), quiet_user_errors():
        results = flow_fn([j[1] for j in ready], pipe.text, str(Path(args.output)),
                                device=args.device, seed=args.seed, overwrite=args.overwrite,
                                dtype=args.dtype, concurrency=args.concurrency,
                                fail_on_error=False)
    for job, r in zip(ready, results, strict=True):
        row = _batch_row(job[1], job[2], r.get("error") or "", r["wall_s"])
        if row["status"] == "ok":
            row["free_llk"], row["error"] = _figures(Path(r["output"]))
        done(row)


def _run_jobs(args: argparse.Namespace, jobs: list[tuple], done: Any, console: Any) -> None:
    """Run the batch's scans under its engine, reporting each row to `done`."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    if not jobs:
        return
    if args.engine == "dask" or (args.engine == "prefect" and args.concurrency > 1
                                   and len(jobs) > 1):
        _batch_prefect(args, jobs, done)
    elif args.concurrency == 1 or args.engine == "prefect" or len(jobs) == 1:
        server: Any = contextlib.nullcontext()
        if args.engine == "prefect":  # one server for the whole batch
            _prefect_env()
            from ..orchestration import prefect_api

            server = prefect_api()
        with server:
            for job in jobs:
                console.print(f"running {Path(job[1]).name}", highlight=False)
                done(_batch_one(*job))
    else:  # processes: each sizes its torch threads to its share of the cores
        from .._system import die_with_parent

        # a worker dies with the batch, kill -9 included: none is left idle holding memory
        with ProcessPoolExecutor(max_workers=min(args.concurrency, len(jobs)),
                                 mp_context=get_context("spawn"),
                                 initializer=die_with_parent) as pool:
            futures = {pool.submit(_batch_one, *job): job for job in jobs}
            for future in as_completed(futures):
                done(future.result())


def cmd_batch(args: argparse.Namespace) -> int:
    """Every input through the pipeline into ``DIR/<input stem>.zarr``; a table at the end."""
    from rich.console import Console
    from rich.table import Table

    from ..pipeline import Pipeline

    if args.concurrency < 1:
        raise PipelineError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.dask_address and args.engine != "dask":
        raise PipelineError("--dask-address needs --engine dask")
    Pipeline.load(args.pipeline)  # a bad pipeline fails once, before any scan
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise PipelineError(f"{out_dir}: exists and is not a folder; -o names the folder of "
                            "the result stores")
    stems = [Path(p).stem for p in args.inputs]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise PipelineError(f"inputs with the same name would write the same store: "
                            f"{', '.join(twice)}; rename them or run them in two batches")
    if args.skip_existing and args.overwrite:
        raise PipelineError("--skip-existing and --overwrite contradict each other: choose "
                            "one")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(args.pipeline, str(p), str(out_dir / f"{Path(p).stem}.zarr"), args.engine,
             args.device, args.seed, args.overwrite, args.dtype) for p in args.inputs]
    console = Console(stderr=True)
    rows: list[dict[str, Any]] = []
    if args.skip_existing:  # resume: a scan whose store is complete is done already
        from ..io import is_complete

        for job in [j for j in jobs if is_complete(Path(j[2]))]:
            jobs.remove(job)
            rows.append(_batch_row(job[1], job[2]) | {"status": "skipped",
                                                      "reason": "complete store exists"})
        if rows:
            console.print(f"{len(rows)} scans already have complete stores (skipped)",
                          highlight=False)

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        mark = "[green]ok[/green]" if row["status"] == "ok" else "[red]failed[/red]"
        console.print(f"{len(rows)}/{len(args.inputs)} {Path(row['scan']).name}: {mark} "
                      f"({row['wall_s']:.1f} s)" + (f" {row['reason']}" if row["reason"]
                                                     else ""), highlight=False,
                      soft_wrap=True)

    try:
        _run_jobs(args, jobs, done, console)
    except KeyboardInterrupt:
        from ..errors import Cancelled
        from ..io import is_complete

        complete = [Path(p).stem for p in args.inputs
                    if is_complete(out_dir / f"{Path(p).stem}.zarr")]
        raise Cancelled(f"interrupted: {len(complete)} of {len(args.inputs)} scans have "
                        f"complete stores in {out_dir}"
                        + (f" ({', '.join(complete)})" if complete else "")
                        + "; the others were not written. Rerun with --skip-existing to "
                        "finish the batch") from None
    order = {p: i for i, p in enumerate(map(str, args.inputs))}
    rows.sort(key=lambda r: order[r["scan"]])
    table = Table(title=f"sipflow batch: {len(args.inputs)} scans -> {out_dir}")
    for col in ("scan", "status", "wall [s]", "free LLK", "error", "result or reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(Path(r["scan"]).name, r["status"], f"{r['wall_s']:.1f}",
                      "-" if r["free_llk"] != r["free_llk"] else f"{r['free_llk']:.4g}",
                      "-" if r["error"] != r["error"] else f"{r['error']:.3g}",
                      r["output"] if r["status"] in ("ok", "skipped") else r["reason"])
    Console().print(table)
    failed = [r for r in rows if r["status"] not in ("ok", "skipped")]
    if failed:
        _stderr(f"sipflow: error: {len(failed)} of {len(rows)} scans failed: "
                + "; ".join(Path(r["scan"]).name for r in failed))
        return 1
    return 0


def _deployment_one(args: argparse.Namespace, path: Path, output: str, key: str
                    ) -> dict[str, Any]:
    """One scan of the watcher through a deployment (a worker runs it); never raises.

    An outage of the Prefect API gives status ``deferred`` and a run that lost its
    worker ``lost``: the watcher does not count them as failures of the scan.
    """
    import time

    from ..orchestration import run_scan_deployment
    from ..orchestration._runs import api_unavailable

    t0 = time.perf_counter()
    row = _batch_row(str(path), output)
    pipeline = args.pipeline
    if Path(pipeline).is_file():  # the worker may not see this file: send its text
        pipeline = Path(pipeline).read_text()
    try:
        result = run_scan_deployment(path.resolve(), Path(output).resolve(), pipeline,
                                     deployment=args.deployment, key=key,
                                     stale_s=args.stale_after, device=args.device,
                                     seed=args.seed, dtype=args.dtype)
        if result.get("error"):
            row.update(status="lost" if result.get("lost") else "failed",
                       reason=f"flow run {result['flow_run_id']} {result['state']}: "
                       f"{result['error']}")
        else:
            row["free_llk"], row["error"] = _figures(Path(result["output"]))
    except Exception as exc:  # the scan fails, the watcher goes on
        row.update(status="deferred" if api_unavailable(exc) else "failed",
                   reason=f"{type(exc).__name__}: {exc}")
    row["wall_s"] = time.perf_counter() - t0
    return row


def cmd_serve(args: argparse.Namespace) -> int:
    """Prefect server, work pool, deployments and workers on this machine, until Ctrl-C."""
    from rich.console import Console

    _prefect_env()
    from ..orchestration import serve

    console = Console(stderr=True)

    def ready(info: dict[str, Any]) -> None:
        console.print(
            f"sipflow serve: ready\n  Prefect API   {info['api_url']}\n"
            f"  work pool     {info['pool']} ({len(info['workers'])} process worker(s), "
            f"PIDs {' '.join(map(str, info['workers']))})\n"
            f"  deployments   {', '.join(info['deployments'])}\n"
            f"  device limits {', '.join(info['limits']) or 'none'}\n"
            f"In another shell:\n  export PREFECT_API_URL={info['api_url']}\n"
            f"  sipflow watch DIR --pipeline P -o OUT --deployment {info['deployments'][0]}",
            highlight=False, soft_wrap=True)

    try:
        serve(port=args.port, home=args.home, pool=args.pool, workers=args.workers,
              concurrency=args.concurrency, gpu_slots=args.gpu_slots,
              cpu_slots=args.cpu_slots, warm=not args.no_warm, on_ready=ready)
    except KeyboardInterrupt:
        console.print("sipflow serve: stopped", highlight=False)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Process every finished scan that appears in a folder, once, until stopped."""
    from rich.console import Console

    from .. import _watch
    from ..pipeline import Pipeline
    from ..report import print_table

    Pipeline.load(args.pipeline)  # a bad pipeline fails before the watch starts
    folder, out_dir = Path(args.directory), Path(args.output)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: no such folder to watch")
    if args.max_attempts < 1 or args.poll <= 0 or args.stable < 0 or args.retry_after < 0 \
            or (args.stale_after is not None and not args.stale_after > 0):
        raise PipelineError("--max-attempts must be >= 1, --poll > 0, --stable >= 0, "
                            "--retry-after >= 0 and --stale-after > 0")
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)

    def process(path: Path, key: str) -> dict[str, Any]:
        console.print(f"processing {path.name}", highlight=False, soft_wrap=True)
        output = str(out_dir / f"{path.stem}.zarr")
        if args.deployment:
            return _deployment_one(args, path, output, key)
        return _batch_one(args.pipeline, str(path), output, args.engine, args.device,
                          args.seed, False, args.dtype)

    def report(row: dict[str, Any]) -> None:
        mark = {"ok": "ok", "failed": f"failed: {row['reason']}"}.get(
            row["status"], f"left for later ({row['reason']})")
        console.print(f"{Path(row['scan']).name}: {mark} ({row['wall_s']:.1f} s)",
                      highlight=False, soft_wrap=True)

    state = out_dir / _watch.STATE_FILE
    server: Any = contextlib.nullcontext()
    if args.deployment and not os.environ.get("PREFECT_API_URL"):
        raise PipelineError("--deployment needs the Prefect server that holds it: set "
                            "PREFECT_API_URL (sipflow serve prints it)")
    if args.engine == "prefect" or args.deployment:
        _prefect_env()
        from ..orchestration import prefect_api

        server = prefect_api()
    if not args.once:
        console.print(f"watching {folder} for {args.pattern} (Ctrl-C to stop); results in "
                      f"{out_dir}", highlight=False, soft_wrap=True)
    try:
        with server:
            rows = _watch.watch(folder, process, state, pattern=args.pattern,
                                poll_s=args.poll, stable_s=args.stable,
                                max_attempts=args.max_attempts, once=args.once,
                                retry_after_s=args.retry_after,
                                on_result=report)
    except KeyboardInterrupt:
        rows = []
        console.print("stopped", highlight=False)
        interrupted = True
    else:
        interrupted = False
    known = list(_watch.summary(state))
    print_table([(name, f"{status}: {detail}") for name, status, detail in known],
                f"sipflow watch {folder}")
    failed_now = [r for r in rows if r["status"] == "failed"]
    later = {Path(r["scan"]).name for r in rows if r["status"] in ("deferred", "lost")} - \
        {Path(r["scan"]).name for r in rows if r["status"] in ("ok", "failed")}
    if interrupted:  # stopped by Ctrl-C or SIGTERM: not a clean end (the table says what ran)
        return 130
    if failed_now:
        return 1
    if later:  # --once during an outage: nothing failed, but not everything ran
        _stderr(f"sipflow: error: {len(later)} scan(s) left for the next run, the Prefect "
                f"server did not run them: {', '.join(sorted(later))}")
        return OrchestrationUnavailable.exit_code
    return 0
