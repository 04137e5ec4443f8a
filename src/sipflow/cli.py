"""The ``sipflow`` command line.

Every user error ends with a one-paragraph message on stderr and a non-zero
exit status (2 for bad input/pipeline/output, 3 when a reconstruction fails);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import PipelineError, SipflowError


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _prefect_env() -> None:
    # No telemetry from beamline machines; an offline host otherwise logs DNS errors.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class _Bar:
    """A rich progress bar fed with ProgressRecords (one task per stage)."""

    def __init__(self, enabled: bool) -> None:
        self.wanted = enabled  # False: silent (e.g. a scan of a batch, which has its own lines)
        self.enabled = enabled and sys.stderr.isatty()
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("{task.fields[metrics]}"),
                                     TimeRemainingColumn(), transient=False)
            self.progress.__enter__()
        return self

    def __call__(self, record) -> None:
        metrics = " ".join(f"{k}={v:.3g}" for k, v in record.metrics.items())
        if self.progress is None:
            if self.wanted and record.iteration == record.total:
                _stderr(f"{record.stage}: {record.iteration}/{record.total} {metrics}")
            return
        if record.stage not in self.tasks:
            self.tasks[record.stage] = self.progress.add_task(record.stage, total=record.total,
                                                              metrics="")
        self.progress.update(self.tasks[record.stage], completed=record.iteration,
                             metrics=metrics)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import Simulation, write_scan

    photons = None if str(args.photons).lower() in ("none", "0", "inf") else float(args.photons)
    shape = tuple(args.shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise PipelineError(f"--shape must be 2 or 3 sizes of at least 8 pixels, got {shape}")
    kind = args.kind or ("blob" if len(shape) == 2 else "crystal")
    from .simulate import SHAPES

    if kind not in SHAPES[len(shape)]:
        raise PipelineError(f"--kind {kind!r} is not a {len(shape)}-D shape; choose from "
                            f"{', '.join(SHAPES[len(shape)])}")
    sim = Simulation(shape=shape, kind=kind, extent=args.extent, photons=photons,
                     beamstop=args.beamstop, gaps=args.gaps, hot_pixels=args.hot_pixels,
                     dead_pixels=args.dead_pixels, centre_offset=tuple(args.centre_offset),
                     background=args.background, phase_amplitude=args.phase, seed=args.seed,
                     coherence_sigma=args.coherence_sigma)
    path = write_scan(args.output, sim, layout=args.layout, overwrite=args.overwrite)
    print(f"wrote {path} ({args.layout}, {shape}, {kind}, "
          f"{'noiseless' if photons is None else f'{photons:.3g} photons'})")
    return 0


def _run(pipeline: str, input_path: str, output: str, *, engine: str, device: str,
         seed: int | None, overwrite: bool, dtype: str, load_options: dict[str, Any],
         progress: bool = True) -> Path:
    """Check everything, lock the output, run under `engine`, return the store's path.

    Every check that needs no computation (pipeline, device, output, the input's
    structure, size and counts, memory estimates) runs before any work and before
    an orchestration server starts, so a bad input fails the same way under every
    engine and leaves nothing behind.
    """
    from ._api import preflight
    from .io import OutputLock, save

    requested = device  # resolved again where each stage runs (a worker's own card)
    pipe, device, ds = preflight(pipeline, input_path, output, device=device,
                                 overwrite=overwrite, dtype=dtype,
                                 check_counts=engine != "local", **load_options)
    with OutputLock(output), _Bar(progress) as bar:
        if engine == "local":
            from ._api import run_pipeline

            result = run_pipeline(pipe, ds, device=device, seed=seed, progress=bar,
                                  dtype=dtype)
            return save(result, output, overwrite=overwrite, inputs=(input_path,))
        _prefect_env()
        from .orchestration import prefect_api, process_scan, progress_to, quiet_user_errors

        with prefect_api(), quiet_user_errors(), progress_to(bar):
            result = process_scan(str(input_path), pipe.text, str(output), device=requested,
                                  seed=seed, dtype=dtype, overwrite=overwrite,
                                  load_options=load_options)
        return Path(result["output"])


def _train_config(args: argparse.Namespace):
    """The training configuration: the --config file, then the options given."""
    import yaml
    from pydantic import ValidationError

    from .learned import TrainConfig

    values: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config) as fh:
                values = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise PipelineError(f"{args.config}: not valid YAML ({exc})") from exc
        if not isinstance(values, dict):
            raise PipelineError(f"{args.config}: expected a mapping of training settings "
                                f"(e.g. 'epochs: 20'), got {type(values).__name__}")
    options = {"shape": args.shape, "kinds": args.kinds, "samples": args.samples,
               "validation": args.validation, "epochs": args.epochs,
               "symmetry_break": args.symmetry_break, "group": args.group, "width": args.width,
               "depth": args.depth, "batch_size": args.batch_size, "lr": args.lr,
               "seed": args.seed}
    if args.photons is not None:
        options["photons"] = (None if str(args.photons).lower() in ("none", "inf")
                              else float(args.photons))
    values.update({k: v for k, v in options.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                             for e in exc.errors())
        raise PipelineError(f"{args.config or 'training options'}: {problems}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ._resources import cpu_threads
    from .contracts import Context
    from .learned import train
    from .report import print_table
    from .symmetry import get_group

    config = _train_config(args)
    get_group(config.group)
    device = Context.resolve_device(args.device)
    columns = (TextColumn("[bold]train[/bold] epoch {task.fields[epoch]}"), BarColumn(),
               TextColumn("loss {task.fields[loss]:.4g}"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar, (
            cpu_threads() if device == "cpu" else contextlib.nullcontext()):
        task = bar.add_task("train", total=None, epoch="-", loss=float("nan"))

        def show(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
            bar.update(task, total=epochs * steps, completed=(epoch - 1) * steps + step,
                       epoch=f"{epoch}/{epochs}", loss=loss)

        result = train(config, args.output, overwrite=args.overwrite, progress=show,
                       device=device)
    h = result.history
    rows = [("model", str(result.path)), ("epochs", f"{result.epochs} (resumed after "
                                                    f"{result.resumed_from})"
             if result.resumed_from else str(result.epochs)),
            ("symmetry breaking", f"{'on' if config.symmetry_break else 'off'} "
                                  f"({config.group})"),
            ("training pairs", str(config.samples))]
    if h["epoch"]:
        rows += [("train loss (last epoch)", f"{h['train_loss'][-1]:.4g}"),
                 ("validation loss", f"{h['val_loss'][-1]:.4g}"),
                 ("validation error modulo the group", f"{h['val_error'][-1]:.3f}"),
                 ("loss curves", str(result.path.parent / "history.csv"))]
    print_table(rows, "sipflow train")
    return 0


def _figures(out: Path) -> tuple[float, float]:
    """(free LLK of the selected run, error against the truth) of a result store, NaN if absent.

    Read from the :class:`~sipflow.contracts.PhaseRecord` every phase stage writes.
    """
    from .contracts import PhaseRecord
    from .io import open_result

    ds = open_result(out)
    record = PhaseRecord.from_attrs(ds.attrs)
    free = record.best_llk_free if record is not None else None
    error = ds.attrs.get("metrics", {}).get("error")
    return (float("nan") if free is None else float(free),
            float("nan") if error is None else float(error))


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

    from ._api import preflight
    from .pipeline import Pipeline

    _prefect_env()
    from .orchestration import prefect_api, process_scans, quiet_user_errors

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
        from .orchestration import dask_task_runner

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


def cmd_batch(args: argparse.Namespace) -> int:
    """Every input through the pipeline into ``DIR/<input stem>.zarr``; a table at the end."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from rich.console import Console
    from rich.table import Table

    from .pipeline import Pipeline

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
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(args.pipeline, str(p), str(out_dir / f"{Path(p).stem}.zarr"), args.engine,
             args.device, args.seed, args.overwrite, args.dtype) for p in args.inputs]
    console = Console(stderr=True)
    rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        mark = "[green]ok[/green]" if row["status"] == "ok" else "[red]failed[/red]"
        console.print(f"{len(rows)}/{len(jobs)} {Path(row['scan']).name}: {mark} "
                      f"({row['wall_s']:.1f} s)" + (f" {row['reason']}" if row["reason"]
                                                     else ""), highlight=False,
                      soft_wrap=True)

    if args.engine == "dask" or (args.engine == "prefect" and args.concurrency > 1
                                 and len(jobs) > 1):
        _batch_prefect(args, jobs, done)
    elif args.concurrency == 1 or args.engine == "prefect" or len(jobs) == 1:
        server: Any = contextlib.nullcontext()
        if args.engine == "prefect":  # one server for the whole batch
            _prefect_env()
            from .orchestration import prefect_api

            server = prefect_api()
        with server:
            for job in jobs:
                console.print(f"running {Path(job[1]).name}", highlight=False)
                done(_batch_one(*job))
    else:  # processes: each sizes its torch threads to its share of the cores
        with ProcessPoolExecutor(max_workers=min(args.concurrency, len(jobs)),
                                 mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_batch_one, *job): job for job in jobs}
            for future in as_completed(futures):
                done(future.result())
    order = {job[1]: i for i, job in enumerate(jobs)}
    rows.sort(key=lambda r: order[r["scan"]])
    table = Table(title=f"sipflow batch: {len(jobs)} scans -> {out_dir}")
    for col in ("scan", "status", "wall [s]", "free LLK", "error", "result or reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(Path(r["scan"]).name, r["status"], f"{r['wall_s']:.1f}",
                      "-" if r["free_llk"] != r["free_llk"] else f"{r['free_llk']:.4g}",
                      "-" if r["error"] != r["error"] else f"{r['error']:.3g}",
                      r["output"] if r["status"] == "ok" else r["reason"])
    Console().print(table)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        _stderr(f"sipflow: error: {len(failed)} of {len(rows)} scans failed: "
                + "; ".join(Path(r["scan"]).name for r in failed))
        return 1
    return 0


def _deployment_one(args: argparse.Namespace, path: Path, output: str, key: str
                    ) -> dict[str, Any]:
    """One scan of the watcher through a deployment (a worker runs it); never raises."""
    import time

    from .orchestration import run_scan_deployment

    t0 = time.perf_counter()
    row = _batch_row(str(path), output)
    pipeline = args.pipeline
    if Path(pipeline).is_file():  # the worker may not see this file: send its text
        pipeline = Path(pipeline).read_text()
    try:
        result = run_scan_deployment(path.resolve(), Path(output).resolve(), pipeline,
                                     deployment=args.deployment, key=key,
                                     device=args.device, seed=args.seed, dtype=args.dtype)
        if result.get("error"):
            row.update(status="failed", reason=f"flow run {result['flow_run_id']} "
                       f"{result['state']}: {result['error']}")
        else:
            row["free_llk"], row["error"] = _figures(Path(result["output"]))
    except Exception as exc:  # the scan fails, the watcher goes on
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    row["wall_s"] = time.perf_counter() - t0
    return row


def cmd_serve(args: argparse.Namespace) -> int:
    """Prefect server, work pool, deployments and workers on this machine, until Ctrl-C."""
    from rich.console import Console

    _prefect_env()
    from .orchestration import serve

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
              cpu_slots=args.cpu_slots, on_ready=ready)
    except KeyboardInterrupt:
        console.print("sipflow serve: stopped", highlight=False)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Process every finished scan that appears in a folder, once, until stopped."""
    from rich.console import Console

    from . import _watch
    from .pipeline import Pipeline
    from .report import print_table

    Pipeline.load(args.pipeline)  # a bad pipeline fails before the watch starts
    folder, out_dir = Path(args.directory), Path(args.output)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: no such folder to watch")
    if args.max_attempts < 1 or args.poll <= 0 or args.stable < 0:
        raise PipelineError("--max-attempts must be >= 1, --poll > 0 and --stable >= 0")
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
        mark = "ok" if row["status"] == "ok" else f"failed: {row['reason']}"
        console.print(f"{Path(row['scan']).name}: {mark} ({row['wall_s']:.1f} s)",
                      highlight=False, soft_wrap=True)

    state = out_dir / _watch.STATE_FILE
    server: Any = contextlib.nullcontext()
    if args.deployment and not os.environ.get("PREFECT_API_URL"):
        raise PipelineError("--deployment needs the Prefect server that holds it: set "
                            "PREFECT_API_URL (sipflow serve prints it)")
    if args.engine == "prefect" or args.deployment:
        _prefect_env()
        from .orchestration import prefect_api

        server = prefect_api()
    if not args.once:
        console.print(f"watching {folder} for {args.pattern} (Ctrl-C to stop); results in "
                      f"{out_dir}", highlight=False, soft_wrap=True)
    try:
        with server:
            rows = _watch.watch(folder, process, state, pattern=args.pattern,
                                poll_s=args.poll, stable_s=args.stable,
                                max_attempts=args.max_attempts, once=args.once,
                                on_result=report)
    except KeyboardInterrupt:
        rows = []
        console.print("stopped", highlight=False)
    known = list(_watch.summary(state))
    print_table([(name, f"{status}: {detail}") for name, status, detail in known],
                f"sipflow watch {folder}")
    failed_now = [r for r in rows if r["status"] != "ok"]
    return 1 if failed_now else 0


def cmd_run(args: argparse.Namespace) -> int:
    options = {"dataset": args.dataset} if args.dataset else {}
    out = _run(args.pipeline, args.input, args.output, engine=args.engine, device=args.device,
               seed=args.seed, overwrite=args.overwrite, dtype=args.dtype, load_options=options)
    from .io import open_result
    from .report import print_table, summary_rows

    print_table(summary_rows(open_result(out)), f"sipflow result {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import schema
    from .analyse import compute_metrics
    from .io import open_result

    ds = open_result(args.result, load=True, verify=True)
    if schema.OBJ not in ds:
        raise SipflowError(f"{args.result}: has no reconstructed object 'obj' to evaluate")
    if args.truth:
        from .io import load

        truth = load(args.truth, checksum=False)
        if schema.OBJ_TRUE not in truth:
            raise SipflowError(f"{args.truth}: holds no ground truth "
                               "(/entry_1/sample_1/sipflow_truth/obj)")
        obj_true = truth[schema.OBJ_TRUE].values
        window = ds.attrs.get("prep_window")
        if window and any(b > 1 for b in window["bin"]):
            raise SipflowError(f"{args.result}: the data were binned, so the truth in "
                               f"{args.truth} is on another grid and cannot be compared")
        if window:  # see the truth through the same q-space window as the data
            from .preprocess import truth_on_grid

            obj_true = truth_on_grid(obj_true, window["centre"], window["shape"])
        if obj_true.shape != ds[schema.OBJ].shape:
            raise SipflowError(f"{args.truth}: truth has shape {obj_true.shape} "
                               f"but the result's obj is {ds[schema.OBJ].shape}")
        ds[schema.OBJ_TRUE] = (ds[schema.OBJ].dims, obj_true)
        if schema.SUPPORT_TRUE in truth and truth[schema.SUPPORT_TRUE].shape == obj_true.shape:
            ds[schema.SUPPORT_TRUE] = (ds[schema.OBJ].dims, truth[schema.SUPPORT_TRUE].values)
    metrics = compute_metrics(ds)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        from .report import print_table, summary_rows

        ds.attrs["metrics"] = metrics
        print_table(summary_rows(ds), f"evaluation of {args.result}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    reg = get_registry()
    rows = [{"name": p.name, "version": p.version, "origin": p.origin, "stages": p.stages,
             "readers": p.readers, "templates": p.templates, "constraints": p.constraints,
             "groups": p.groups, "error": p.error}
            for p in reg.plugins]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sipflow plugins")
    for col in ("plugin", "version", "origin", "provides", "status"):
        table.add_column(col)
    for r in rows:
        provides = ", ".join(r["stages"] + [f"reader:{x}" for x in r["readers"]]
                             + [f"template:{x}" for x in r["templates"]]
                             + [f"constraint:{x}" for x in r["constraints"]]
                             + [f"group:{x}" for x in r["groups"]])
        table.add_row(r["name"], r["version"], r["origin"], provides,
                      f"[red]failed: {r['error']}[/red]" if r["error"] else "ok")
    Console().print(table)
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    from .plugins import get_registry

    reg = get_registry()
    out = []
    for name, cls in sorted(reg.stages.items()):
        schema_ = cls.Params.model_json_schema()
        params = []
        for pname, field in cls.Params.model_fields.items():
            params.append({"name": pname, "default": _json_default(field.default),
                           "type": schema_["properties"][pname].get("type")
                           or str(field.annotation), "doc": field.description or ""})
        out.append({"name": name, "version": cls.version, "summary": cls.summary(),
                    "doc": (cls.__doc__ or "").strip(), "requires": list(cls.requires),
                    "heavy": cls.heavy, "params": params})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for st in out:
        print(f"{st['name']} (v{st['version']}): {st['summary']}")
        for p in st["params"]:
            print(f"    {p['name']} = {p['default']!r}: {p['doc']}")
        print()
    return 0


def _json_default(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def cmd_validate(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipe = Pipeline.load(args.pipeline)
    print(f"{pipe.origin}: valid pipeline {pipe.name!r} with "
          f"{len(pipe.steps)} stages: {', '.join(s.stage.name for s in pipe.steps)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .io import open_result
    from .report import print_table, quicklook, summary_rows
    from .simulate import Simulation, write_scan

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = out_dir / "demo_scan.h5"
    write_scan(scan, Simulation(shape=(128, 128), kind="blob", photons=1e9, beamstop=2,
                                seed=args.seed), overwrite=True)
    print(f"simulated {scan}: 128x128 pattern, 1e9 photons, beamstop radius 2 px")
    store = out_dir / "demo_result.zarr"
    out = _run("default", str(scan), str(store), engine=args.engine, device=args.device,
               seed=args.seed, overwrite=True, dtype="float32", load_options={})
    ds = open_result(out, load=True)
    print_table(summary_rows(ds), f"sipflow demo ({args.engine} engine): {out}")
    png = quicklook(ds, out_dir / "demo_quicklook.png", title="sipflow demo")
    print(f"quick-look: {png}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .io import export_vti, open_result

    ds = open_result(args.result, load=True, verify=True)
    ds.attrs["source"] = str(args.result)
    path = export_vti(ds, args.output, variables=args.vars, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .viewer._app import view

    view(args.paths)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipflow", description="Coherent-imaging workflows: HDF5 "
                                "in, plugin stages, Zarr out.")
    p.add_argument("--version", action="version", version=f"sipflow {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a simulated scan (with its truth) to HDF5")
    s.add_argument("output")
    s.add_argument("--shape", type=int, nargs="+", default=[128, 128])
    s.add_argument("--kind", default=None, help="object shape (2-D: blob, ellipse, hexagon, "
                   "cells, lithograph; 3-D: crystal, ellipsoid, blob)")
    s.add_argument("--extent", type=float, default=0.4, help="object size / array size")
    s.add_argument("--photons", default="1e9", help="total photons, or 'none' for noiseless")
    s.add_argument("--beamstop", type=float, default=0.0, help="beamstop radius [pixels]")
    s.add_argument("--gaps", type=int, default=0, help="detector gap width [pixels]")
    s.add_argument("--hot-pixels", type=int, default=0)
    s.add_argument("--dead-pixels", type=float, default=0.0,
                   help="share of dead (masked) pixels, scattered")
    s.add_argument("--centre-offset", type=int, nargs=2, default=[0, 0], metavar=("ROWS", "COLS"),
                   help="q = 0 this far from the array centre [pixels]")
    s.add_argument("--background", type=float, default=0.0,
                   help="incoherent background [photons per pixel]")
    s.add_argument("--phase", type=float, default=1.0, help="phase field amplitude [rad]")
    s.add_argument("--coherence-sigma", type=float, default=0.0, help="partial coherence: "
                   "Gaussian blur of the intensity [pixels]")
    s.add_argument("--layout", choices=["cxi", "nexus", "eiger"], default="cxi")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run a pipeline on one scan and write a Zarr store")
    r.add_argument("pipeline", help="template name (default, cdi, bcdi) or YAML file")
    r.add_argument("input", help="HDF5 detector file")
    r.add_argument("-o", "--output", required=True, help="result store (.zarr)")
    r.add_argument("--engine", choices=["prefect", "local"], default="prefect")
    r.add_argument("--device", default="auto")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    r.add_argument("--dataset", default=None, help="HDF5 path of the frames")
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="train an end-to-end model on simulated pairs (resumes "
                       "in its folder)")
    t.add_argument("output", help="model folder: model.pt (the checkpoint a pipeline names) "
                   "and history.csv; training the same settings there resumes")
    t.add_argument("--config", default=None, help="YAML file of training settings (options "
                   "given here override it)")
    t.add_argument("--shape", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"))
    t.add_argument("--kinds", nargs="+", default=None, help="object shapes (2-D kinds of "
                   "sipflow simulate)")
    t.add_argument("--samples", type=int, default=None, help="training pairs")
    t.add_argument("--validation", type=int, default=None, help="held-out pairs")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--photons", default=None, help="total photons per pattern, or 'none'")
    t.add_argument("--symmetry-break", action=argparse.BooleanOptionalAction, default=None,
                   help="train on canonical targets (default on)")
    t.add_argument("--group", default=None, help="ambiguity group of the targets")
    t.add_argument("--width", type=int, default=None)
    t.add_argument("--depth", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default="auto")
    t.add_argument("--overwrite", action="store_true", help="replace a model of other "
                   "settings in the folder")
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("batch", help="run a pipeline on many scans: one store per scan, a "
                       "summary table, exit status 1 when any failed")
    b.add_argument("pipeline", help="template name or YAML file")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="HDF5 detector files")
    b.add_argument("-o", "--output", required=True, help="folder of the result stores "
                   "(<input stem>.zarr each)")
    b.add_argument("--engine", choices=["local", "prefect", "dask"], default="local",
                   help="local: processes of this machine; prefect: one Prefect flow run; "
                   "dask: that flow run's scans on a Dask cluster")
    b.add_argument("--concurrency", type=int, default=1, help="scans at once (each gets "
                   "its share of the cores; under dask, the local cluster's workers)")
    b.add_argument("--dask-address", default=None, metavar="ADDRESS", help="scheduler of "
                   "an existing Dask cluster (tcp://host:8786) instead of a local one")
    b.add_argument("--device", default="auto")
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_batch)

    wa = sub.add_parser("watch", help="process every finished scan written to a folder, "
                        "once each (state kept on disk)")
    wa.add_argument("directory", help="folder the scans are written to")
    wa.add_argument("--pipeline", required=True, help="template name or YAML file")
    wa.add_argument("-o", "--output", required=True, help="folder of the result stores "
                    "(<scan stem>.zarr) and of the watcher's state")
    wa.add_argument("--engine", choices=["local", "prefect"], default="local")
    wa.add_argument("--pattern", default="*.h5", help="glob of the scan (master) files")
    wa.add_argument("--poll", type=float, default=2.0, help="seconds between looks")
    wa.add_argument("--stable", type=float, default=5.0, help="a file must keep its size "
                    "and mtime this long [s]")
    wa.add_argument("--max-attempts", type=int, default=2, help="attempts per scan before "
                    "it is given up")
    wa.add_argument("--once", action="store_true", help="process what is finished, then exit")
    wa.add_argument("--deployment", default=None, metavar="FLOW/NAME", help="run each scan "
                    "through this deployment on the server of PREFECT_API_URL (e.g. "
                    "sipflow-process-scan/sipflow, made by sipflow serve) instead of here")
    wa.add_argument("--device", default="auto")
    wa.add_argument("--seed", type=int, default=None)
    wa.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    wa.set_defaults(func=cmd_watch)

    sv = sub.add_parser("serve", help="a one-machine facility: Prefect server, work pool, "
                        "deployments and process workers, until Ctrl-C")
    sv.add_argument("--port", type=int, default=4200, help="port of the Prefect server it "
                    "starts (none is started when PREFECT_API_URL is set)")
    sv.add_argument("--home", default=None, help="PREFECT_HOME of that server (default "
                    "~/.sipflow/prefect): its database and sipflow-serve.log")
    sv.add_argument("--pool", default="sipflow", help="work pool name")
    sv.add_argument("--workers", type=int, default=1, help="process workers to keep running")
    sv.add_argument("--concurrency", type=int, default=None, help="scans of the pool at once")
    sv.add_argument("--gpu-slots", type=int, default=1, help="heavy stages per GPU at once")
    sv.add_argument("--cpu-slots", type=int, default=None, help="heavy stages on the CPU "
                    "at once (default: no limit)")
    sv.set_defaults(func=cmd_serve)

    e = sub.add_parser("evaluate", help="figures of merit of a result store")
    e.add_argument("result")
    e.add_argument("--truth", default=None, help="simulated HDF5 file holding the truth")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    pl = sub.add_parser("plugins", help="list installed plugins")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    st = sub.add_parser("stages", help="list stages with their parameters")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stages)

    v = sub.add_parser("validate", help="validate a pipeline without reading data")
    v.add_argument("pipeline")
    v.set_defaults(func=cmd_validate)

    d = sub.add_parser("demo", help="simulate a scan, run the default pipeline, show results")
    d.add_argument("--out", default="demo-output")
    d.add_argument("--engine", choices=["prefect", "local"], default="prefect")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    x = sub.add_parser("export", help="a 3-D result on its lab grid (bragg.orthogonalize) as a "
                       "VTK image (.vti: ParaView, VisIt, PyVista), coordinates in nm")
    x.add_argument("result")
    x.add_argument("-o", "--output", required=True, help="the .vti file to write")
    x.add_argument("--vars", nargs="+", default=None, metavar="VAR",
                   help="variables to write (default: every one on the grid of obj; obj "
                   "gives amplitude and phase)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing file")
    x.set_defaults(func=cmd_export)

    w = sub.add_parser("view", help="open result stores and scans in napari (sipflow[napari])")
    w.add_argument("paths", nargs="+", metavar="RESULT_OR_SCAN")
    w.set_defaults(func=cmd_view)
    return p


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM ends sipflow like Ctrl-C: clean-up code runs, nothing half-written stays."""
    raise KeyboardInterrupt


def _log_warnings() -> None:
    """sipflow's warnings (empty frames, skipped plugins...) go to stderr, one line each."""
    import logging

    logger = logging.getLogger("sipflow")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sipflow: %(levelname)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    _log_warnings()
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _dispatch(args)
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; turn every error a user can cause into a paragraph and a status."""
    try:
        return args.func(args)
    except SipflowError as exc:
        if args.debug:
            raise
        _stderr(f"sipflow: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _stderr("sipflow: interrupted; no result was written")
        return 130
    except OSError as exc:
        if args.debug:
            raise
        where = exc.filename or "a file"
        _stderr(f"sipflow: error: {where}: {exc.strerror or exc} (operating system error "
                f"{exc.errno}); nothing was written")
        return 2
    except Exception as exc:
        if args.debug:
            raise
        _stderr(f"sipflow: internal error: {type(exc).__name__}: {exc}. This is a bug or an "
                "unexpected input; rerun with --debug for the traceback and report it.")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
