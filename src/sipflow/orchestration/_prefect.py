"""Prefect flows over sipflow pipelines: one scan, and many scans.

Prefect wraps; it does not own the science. Each stage is one task that reads
its input store, runs the stage with :func:`sipflow._api.run_step` (the same
code as the in-process engine) and writes its output store; tasks exchange
paths, never arrays, and are submitted to the flow's task runner; the device
(``auto``) is resolved in the task, where the stage runs. Heavy stages hold a slot
of their device's global concurrency limit while they run (``sipflow-<host>-cuda<N>``,
see :mod:`sipflow.orchestration._limits`): with one slot per card, two reconstructions
never share a card. Stage tasks carry no run tags: Prefect 3.9 acquires a tag
concurrency slot for every tagged task as it starts, which cost up to 2 s per stage
here even with no limit defined (measured with ``benchmarks/bench_orchestration.py``).

Events: every scan ends with a Prefect event, ``sipflow.scan.completed`` or
``sipflow.scan.failed`` (:func:`emit_scan_event`), for facility automations.

Resume: intermediate stores live in ``<output>.sipflow-work/``, named by a
hash of everything that determines them (input file hash, the stage and its
parameters, the seed, device and precision). A rerun after a failure reuses
every complete intermediate and recomputes only what is missing. The seed of the
failed run is recorded in the work folder (``seed.json``), so a rerun without
``--seed`` resumes with the same seed; an explicit different ``--seed`` starts
the stages over. The work folder is removed once the final store is complete,
and also after a failure when no stage had finished (nothing to resume).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from .._api import base_provenance, run_step, stage_seed
from ..contracts import Context
from ..errors import OrchestrationError, OutputError, SipflowError
from ..io import check_writable, is_complete, load, open_result, save
from ..pipeline import Pipeline
from ._events import emit_scan_event
from ._limits import device_slot
from ._logging import _progress


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry an I/O task only for faults that may pass (not for a user's bad input).

    A :class:`~sipflow.errors.SipflowError` (bad file, existing output, no space left
    reported as such) is final; other errors (a network file system's hiccup, a
    momentarily locked file) are retried with backoff.
    """
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # the result itself could not be read
        exc = error
    return not isinstance(exc, SipflowError)


#: retries of the I/O tasks: 2, after 2 s and 10 s, only for transient faults
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": _transient}


def _local_arrays() -> contextlib.AbstractContextManager:
    """Compute lazily loaded stores with threads of this process, not the cluster's.

    On a Dask worker, dask's default scheduler is the cluster itself: a stage that
    reads its input store would send the read back to the scheduler and wait for a
    worker thread that it is occupying (a deadlock with one thread per worker).
    """
    import dask

    return dask.config.set(scheduler="threads")


@task(name="read-input", cache_policy=NONE, **IO_RETRIES)
def read_input(input_path: str, load_options: dict[str, Any], work_dir: str) -> dict[str, Any]:
    """Read the detector file into the first intermediate store; return its path and key."""
    with _local_arrays():
        return _read_input(input_path, load_options, work_dir)


def _read_input(input_path: str, load_options: dict[str, Any], work_dir: str
                ) -> dict[str, Any]:
    ds = load(input_path, **load_options)
    key = _key(ds.attrs.get("source_sha256"), ds.attrs.get("source_dataset"), load_options)
    out = Path(work_dir) / f"00-input-{key}.zarr"
    if not is_complete(out):
        if out.exists():
            shutil.rmtree(out)
        save(ds, out)
    return {"path": str(out), "key": key}


@task(name="stage", cache_policy=NONE)
def run_stage(index: int, spec: dict[str, Any], pipeline_text: str, previous: dict[str, Any],
              work_dir: str, device: str, seed: int, dtype: str) -> dict[str, Any]:
    """Run stage `index` of the pipeline on the store `previous["path"]`.

    ``device: auto`` is resolved here, on the machine (worker) that runs the stage: a
    worker pinned to one card (``CUDA_VISIBLE_DEVICES``) uses it, a CPU worker the CPU.
    """
    logger = get_run_logger()
    step = Pipeline.load(pipeline_text).steps[index]
    device = Context.resolve_device(device)
    key = _key(previous["key"], spec, seed, device, dtype)
    out = Path(work_dir) / f"{index + 1:02d}-{step.stage.name}-{key}.zarr"
    record_file = out.with_suffix(".json")
    if is_complete(out) and record_file.is_file():
        logger.info("%s: reusing %s from an earlier run", step.stage.name, out.name)
        return {"path": str(out), "key": key, "record": json.loads(record_file.read_text()),
                "reused": True}
    ctx = Context(device=device, seed=seed, logger=logger, progress=_progress(logger),
                  dtype=dtype)
    # a heavy stage holds a slot of its device's limit (when the server has one)
    slot = device_slot(device) if step.stage.heavy else contextlib.nullcontext()
    with slot as limit, _local_arrays():
        ds = open_result(previous["path"], verify=True)
        started = time.time()
        result, record = run_step(step, ds, ctx)
        record |= {"device": device, "started_unix": round(started, 3),
                   "finished_unix": round(time.time(), 3)}
        if limit:
            record["device_limit"] = limit
        if out.exists():
            shutil.rmtree(out)
        save(result, out)
    record_file.write_text(json.dumps(record))
    return {"path": str(out), "key": key, "record": record, "reused": False}


@task(name="write-result", cache_policy=NONE, **IO_RETRIES)
def write_result(last: dict[str, Any], output: str, provenance: dict[str, Any],
                 overwrite: bool) -> str:
    """Copy the last intermediate to `output` with full provenance (atomic, marked complete)."""
    with _local_arrays():
        ds = open_result(last["path"], load=True, verify=True)
    ds.attrs["provenance"] = provenance
    return str(save(ds, output, overwrite=overwrite,
                    inputs=(provenance["input"]["path"],) if provenance["input"]["path"] else ()))


def _run_name() -> str:
    params = flow_run.parameters
    return f"sipflow-{Path(params.get('input_path', 'scan')).stem}"


@flow(name="sipflow-process-scan", flow_run_name=_run_name, log_prints=True)
def process_scan(input_path: str, pipeline: str, output: str, device: str = "auto",
                 seed: int | None = None, dtype: str = "float32", overwrite: bool = False,
                 load_options: dict[str, Any] | None = None,
                 keep_intermediate: bool = False) -> dict[str, Any]:
    """Process one scan: read -> every stage as a task -> write one Zarr store.

    Steps
    -----
    1. Validate the pipeline and the output path (before any data is read).
    2. ``read-input``: HDF5 -> first intermediate store.
    3. One ``stage`` task per pipeline step, named ``NN-<stage>``; heavy stages hold
       their device's slot.
    4. ``write-result``: final store with provenance, marked complete last.

    Parameters
    ----------
    input_path : str
        Detector file.
    pipeline : str
        Template name, path to a YAML file, or YAML text.
    output : str
        Result store to create (``.zarr``).
    device, seed, dtype
        As for :func:`sipflow.run_pipeline`; a drawn seed is recorded in provenance.
    overwrite : bool
        Replace an existing result (only once the new one is complete).
    load_options : dict, optional
        Reader options (e.g. ``{"dataset": "/entry/data/data"}``).
    keep_intermediate : bool
        Keep ``<output>.sipflow-work/`` after success.

    Returns
    -------
    dict
        ``output`` path, ``metrics``, ``seed`` and per-stage wall times.
    """
    logger = get_run_logger()
    pipe = Pipeline.load(pipeline)
    check_writable(output, overwrite=overwrite, inputs=(input_path,))
    if device != "auto":  # an explicit device is checked before any work
        device = Context.resolve_device(device)
    work = Path(str(output) + ".sipflow-work")
    seed = _resume_seed(work, seed)
    options = pipe.input | (load_options or {})
    created = not work.exists()
    work.mkdir(exist_ok=True)
    (work / "seed.json").write_text(json.dumps({"seed": seed}))
    t0 = time.perf_counter()
    records = []
    try:
        current = read_input(str(input_path), options, str(work))
        for index, step in enumerate(pipe.steps):
            stage_task = run_stage.with_options(name=f"{index + 1:02d}-{step.stage.name}")
            # submitted to the flow's task runner (threads by default; Dask, ... when the
            # flow is run with another), each stage waiting for the previous one's store
            current = stage_task.submit(index, step.spec(), pipe.text, current, str(work),
                                        device, stage_seed(seed, index), dtype).result()
            records.append(current["record"] | {"reused": current["reused"]})
        first = open_result(current["path"])
        used = sorted({r.get("device", device) for r in records}) or [device]
        provenance = base_provenance(pipe, first, used[0] if len(used) == 1 else ",".join(used),
                                     seed, engine="prefect")
        provenance["stages"] = records
        provenance["wall_s"] = round(time.perf_counter() - t0, 4)
        provenance["prefect_flow_run_id"] = str(flow_run.id)
        metrics = first.attrs.get("metrics", {})
        out = write_result(current, str(output), provenance, overwrite)
    except BaseException as exc:
        emit_scan_event(str(input_path), str(output), "failed", seed=seed,
                        reason=f"{type(exc).__name__}: {exc}")
        stages_done = [p for p in work.glob("[0-9][0-9]-*.zarr")
                       if not p.name.startswith("00-") and is_complete(p)]
        if created and not stages_done:  # nothing to resume: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
        elif stages_done:
            logger.info("intermediate results kept in %s; rerun the same command to resume",
                        work)
        raise
    if not keep_intermediate:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("wrote %s", out)
    emit_scan_event(str(input_path), out, "completed", metrics=metrics, seed=seed)
    return {"output": out, "metrics": metrics, "seed": seed,
            "stages": [{"use": r["use"], "wall_s": r["wall_s"]} for r in records]}


def _resume_seed(work: Path, seed: int | None) -> int:
    """The seed to use: the given one, else the one a failed run recorded, else a new one."""
    if seed is not None:
        return int(seed)
    record = work / "seed.json"
    if record.is_file():
        try:
            return int(json.loads(record.read_text())["seed"])
        except (ValueError, KeyError, TypeError):
            raise OutputError(f"{record}: unreadable resume record; delete {work} to start "
                              "over") from None
    return Context.new_seed()


def _check_scheduler(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a Dask scheduler address that nothing answers on."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise OrchestrationError(f"--dask-address {address!r} is not a scheduler address; "
                                 "expected tcp://host:port (e.g. tcp://10.0.0.5:8786)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise OrchestrationError(f"the Dask scheduler at {address} does not answer "
                                 f"({exc.strerror or exc}); start it (dask scheduler) or "
                                 "leave out --dask-address for a local cluster") from None


def dask_task_runner(address: str | None = None, workers: int = 1) -> Any:
    """A Prefect task runner that runs tasks on a Dask cluster (prefect-dask).

    Parameters
    ----------
    address : str, optional
        Scheduler of an existing cluster (``tcp://host:8786``; a multi-node cluster,
        e.g. one started by dask-jobqueue on SLURM). Its workers need sipflow installed
        and ``PREFECT_API_URL`` set to the same Prefect server.
    workers : int
        Without `address`: worker processes of a local cluster started for the flow
        run and stopped after it, one task (one scan) at a time each (dashboard on a
        free port).

    Returns
    -------
    prefect_dask.DaskTaskRunner
        For ``flow.with_options(task_runner=...)``.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        _check_scheduler(address)
        return DaskTaskRunner(address=address)
    if workers < 1:
        raise SipflowError(f"a Dask cluster needs at least one worker, got {workers}")
    return DaskTaskRunner(cluster_kwargs={"n_workers": int(workers), "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": ":0"})


@task(name="scan", cache_policy=NONE)
def _scan(path: str, pipeline: str, output: str, device: str, seed: int | None,
          overwrite: bool, dtype: str, scan_deployment: str | None = None) -> dict[str, Any]:
    """One scan as a nested ``sipflow-process-scan`` flow run (or a run of
    `scan_deployment`, on whatever worker takes it); its outcome as a row."""
    t0 = time.perf_counter()
    if scan_deployment:
        from ._runs import run_scan_deployment

        result = run_scan_deployment(path, output, pipeline, deployment=scan_deployment,
                                     device=device, seed=seed, dtype=dtype,
                                     overwrite=overwrite)
        row = {"input": path} | result
        if result.get("error"):
            row |= {"output": None, "error": f"flow run {result['flow_run_id']} "
                    f"{result['state']}: {result['error']}"}
        return row | {"wall_s": round(time.perf_counter() - t0, 3)}
    with _local_arrays():  # on a Dask worker: the scan's arrays stay in this process
        state = process_scan(path, pipeline, output, device=device, seed=seed, dtype=dtype,
                             overwrite=overwrite, return_state=True)
    row: dict[str, Any] = {"input": path}
    if state.is_completed():
        row |= state.result()
    else:
        try:
            state.result()
            reason = str(state.message)
        except Exception as exc:  # the flow's own error, reported for this scan
            reason = f"{type(exc).__name__}: {exc}"
        row |= {"output": None, "error": reason}
    return row | {"wall_s": round(time.perf_counter() - t0, 3)}


@flow(name="sipflow-process-scans", log_prints=True)
def process_scans(inputs: list[str], pipeline: str, output_dir: str, device: str = "auto",
                  seed: int | None = None, overwrite: bool = False, dtype: str = "float32",
                  concurrency: int = 1, fail_on_error: bool = True,
                  scan_deployment: str | None = None) -> list[dict[str, Any]]:
    """Process many scans, up to `concurrency` at once, one ``sipflow-process-scan`` each.

    Each scan is a task of this flow (so the flow's task runner runs them: threads by
    default, each scan's heavy stages taking their share of the cores) that runs the
    one-scan flow. A scan that fails is reported and the others still run; with
    `fail_on_error` the flow fails at the end if any scan failed. Outputs are
    ``<output_dir>/<input stem>.zarr`` (the folder is created when missing).

    With `scan_deployment` (``flow/deployment``, e.g. a one-scan deployment on a GPU
    work pool) each scan is a run of that deployment instead, taken by that pool's
    workers: this flow only dispatches and waits (it can run on any CPU worker).

    Returns
    -------
    list of dict
        Per input, in order: ``input``, ``output`` (None on failure), ``error`` (the
        reason) or the one-scan flow's result, and ``wall_s``.
    """
    logger = get_run_logger()
    Pipeline.load(pipeline)  # validate once, before any scan
    if concurrency < 1:
        raise SipflowError(f"concurrency must be at least 1, got {concurrency}")
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise SipflowError(f"{output_dir}: exists and is not a folder; output_dir names the "
                           "folder of the result stores")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    pending = list(enumerate(inputs))
    running: list[tuple[int, Any]] = []
    results: dict[int, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < concurrency:
            i, path = pending.pop(0)
            out = str(Path(output_dir) / f"{Path(path).stem}.zarr")
            future = _scan.with_options(name=f"scan-{Path(path).stem}").submit(
                path, pipeline, out, device, seed, overwrite, dtype, scan_deployment)
            running.append((i, future))
        time.sleep(0.2)
        still = []
        for i, future in running:
            if future.state.is_final():
                results[i] = future.result()
                if results[i].get("error"):
                    logger.error("scan %s failed: %s", inputs[i], results[i]["error"])
            else:
                still.append((i, future))
        running = still
    ordered = [results[i] for i in range(len(inputs))]
    failed = [r for r in ordered if r.get("error")]
    if failed and fail_on_error:
        raise SipflowError(f"{len(failed)} of {len(inputs)} scans failed: "
                           + "; ".join(f"{r['input']}: {r['error']}" for r in failed))
    return ordered
