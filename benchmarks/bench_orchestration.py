"""Orchestration overhead per scan and batch throughput, in one run, side by side.

Per small scan (the same file, pipeline and seed each time) the wall time of:

- ``in-process``: :func:`sipflow.run_pipeline` and :func:`sipflow.save` (the floor);
- ``embedded Prefect``: the ``sipflow-process-scan`` flow in this process against a
  private server that is already running (its start-up is reported apart);
- ``server + worker``: a run of the deployment made by ``sipflow serve`` (a real
  Prefect server and a process worker), from ``run_deployment`` until the run is
  final: what a beamline's watcher pays per scan; once with a new Python process per
  flow run (``serve --no-warm``) and once forked off serve's warm process (the default);
- ``Dask``: ``sipflow-process-scans`` with one scan on a local Dask cluster of one
  worker (cluster start-up included: a batch pays it once).

Then batch throughput (scans per minute) for N scans with 1 and 2 at once under the
local engine (processes), Prefect (threads of one flow run) and Dask (workers).

Target (the facility-orchestration issue): overhead against a running server at most
2 s + 5 % per scan.

Usage::

    python benchmarks/bench_orchestration.py [--size 64] [--repeats 3] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PIPELINE = {"stages": [
    {"use": "prep.standard"},
    {"use": "phase.classic", "with": {"schedule": "(sup * ER**5 * HIO**40)**6 * ER**50",
                                      "runs": 2}},
    {"use": "analyse.metrics"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--deployments-only", action="store_true", help="the floor and "
                        "the two `sipflow serve` rows only (no embedded, Dask, batch)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.pop("PREFECT_API_URL", None)

    import sipflow
    from sipflow.simulate import Simulation, write_scan

    tmp = Path(tempfile.mkdtemp(prefix="bench-orch-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    scans = [write_scan(tmp / f"scan{i}.h5", Simulation(shape=(args.size, args.size),
                                                        photons=1e8, seed=i))
             for i in range(max(args.batch, 1))]
    text = yaml.safe_dump(PIPELINE)
    counter = iter(range(10**6))

    def out() -> str:
        return str(tmp / f"r{next(counter)}.zarr")

    def in_process() -> None:
        sipflow.save(sipflow.run_pipeline(text, scans[0], seed=1), out())

    rows: list[tuple[str, list[float], str]] = []
    in_process()  # warm imports
    rows.append(("in-process", _timed(in_process, args.repeats), ""))

    throughput: list[tuple[str, int, float]] = []
    if not args.deployments_only:
        more, throughput = _embedded_and_batch(args, tmp, scans, text, out)
        rows += more

    # a real server and a process worker, as `sipflow serve` sets them up: each flow run
    # a new Python process (--no-warm), or forked off the warm process (the default)
    for warm in (False, True):
        rows.append(_deployed(tmp, scans[0], text, out, args.repeats, warm))

    floor = statistics.median(rows[0][1])
    print(f"\nOrchestration overhead per scan: {args.size}x{args.size}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"median of {args.repeats}\n")
    print("| engine | wall s (median) | overhead s | overhead % | target 2 s + 5 % | note |")
    print("|---|---|---|---|---|---|")
    for name, times, note in rows:
        med = statistics.median(times)
        over = med - floor
        ok = "floor" if name == "in-process" else ("met" if over <= 2 + 0.05 * floor
                                                    else "not met")
        print(f"| {name} | {med:.2f} | {over:+.2f} | {100 * over / floor:+.0f} % | {ok} "
              f"| {note} |")
    print(f"\nBatch throughput: {args.batch} scans\n")
    print("| engine | at once | wall s | scans / min |")
    print("|---|---|---|---|")
    for name, k, wall in throughput:
        print(f"| {name} | {k} | {wall:.1f} | {60 * args.batch / wall:.1f} |")


def _embedded_and_batch(args, tmp: Path, scans: list[Path], text: str, out
                        ) -> tuple[list[tuple[str, list[float], str]],
                                   list[tuple[str, int, float]]]:
    """Rows of the embedded Prefect and Dask engines, and the batch throughput."""
    from sipflow.orchestration import (
        dask_task_runner,
        embedded_server,
        process_scan,
        process_scans,
        use_api,
    )

    rows: list[tuple[str, list[float], str]] = []
    throughput: list[tuple[str, int, float]] = []
    t0 = time.perf_counter()
    with embedded_server() as url:
        startup = time.perf_counter() - t0
        with use_api(url):
            process_scan(str(scans[0]), text, out(), seed=1)  # warm
            rows.append(("embedded Prefect", _timed(
                lambda: process_scan(str(scans[0]), text, out(), seed=1), args.repeats),
                f"server start {startup:.1f} s, once"))
            dask_flow = process_scans.with_options(task_runner=dask_task_runner(workers=1))
            rows.append(("Dask (1 worker)", _timed(
                lambda: dask_flow([str(scans[0])], text, str(Path(out()).with_suffix("")),
                                  seed=1), args.repeats), "cluster start included"))

            inputs = [str(s) for s in scans[:args.batch]]
            for k in (1, 2):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "sipflow.cli", "batch",
                                _pipeline_file(tmp, text), *inputs, "-o",
                                str(tmp / f"bl{k}"), "--engine", "local", "--concurrency",
                                str(k), "--seed", "1"], check=True, capture_output=True)
                throughput.append(("local (processes)", k, time.perf_counter() - t))
                t = time.perf_counter()
                process_scans(inputs, text, str(tmp / f"bp{k}"), seed=1, concurrency=k)
                throughput.append(("Prefect (one flow run)", k, time.perf_counter() - t))
                t = time.perf_counter()
                process_scans.with_options(task_runner=dask_task_runner(workers=k))(
                    inputs, text, str(tmp / f"bd{k}"), seed=1, concurrency=k)
                throughput.append(("Dask (local cluster)", k, time.perf_counter() - t))
    return rows, throughput


def _deployed(tmp: Path, scan: Path, text: str, out, repeats: int, warm: bool
              ) -> tuple[str, list[float], str]:
    """Per-scan wall time of a run of the ``sipflow serve`` deployment."""
    from sipflow.orchestration import SCAN_DEPLOYMENT, run_scan_deployment, use_api

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    name = "warm" if warm else "cold"
    log = open(tmp / f"serve-{name}.out", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "serve", "--port",
                              str(port), "--home", str(tmp / f"serve-{name}"),
                              *([] if warm else ["--no-warm"])], env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        while b"sipflow serve: ready" not in (tmp / f"serve-{name}.out").read_bytes():
            if serve.poll() is not None:
                raise SystemExit((tmp / f"serve-{name}.out").read_text())
            time.sleep(0.5)
        with use_api(f"http://127.0.0.1:{port}/api"):
            def deployed() -> None:
                r = run_scan_deployment(scan, out(), text, deployment=SCAN_DEPLOYMENT,
                                        seed=1, timeout=600)
                if r.get("error"):
                    raise SystemExit(r)

            deployed()  # warm the worker
            times = _timed(deployed, repeats)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        log.close()
    if warm:
        return ("server + warm process (serve's default)", times,
                "each flow run forked off a process with the imports done")
    return ("server + process worker (serve --no-warm)", times,
            "a new Python process per flow run")


def _pipeline_file(tmp: Path, text: str) -> str:
    path = tmp / "pipeline.yaml"
    path.write_text(text)
    return str(path)


if __name__ == "__main__":
    main()
