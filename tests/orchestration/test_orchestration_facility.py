"""A facility on one machine: ``sipflow serve`` (real Prefect server, work pool, process
worker), scans through the deployment from a watched folder, a worker killed mid-stage,
device slots that keep heavy stages apart."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import write_slowly

from sipflow.cli import main
from sipflow.io import is_complete, open_result
from sipflow.orchestration._workers import _children_of
from sipflow.simulate import Simulation, write_scan

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

QUICK = {"stages": [
    {"use": "phase.classic", "with": {"schedule": "(sup * ER**5 * HIO**20)**6 * ER**30",
                                      "runs": 2}},
    {"use": "analyse.metrics"}]}
#: a phase stage of about 5 s at 128² on 2 cores, so that a worker can be killed in the
#: middle of it (with 4 runs and half the iterations it took 1 s and could finish first)
LONG = {"stages": [
    {"use": "prep.standard"},
    {"use": "phase.classic", "with": {"schedule": "(sup * ER**5 * HIO**40)**60 * ER**300",
                                      "runs": 16}},
    {"use": "analyse.metrics"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(serve_pid: int) -> list[int]:
    found = []
    for pid in _children_of(serve_pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"worker start" in cmd:
            found.append(pid)
    return found


def _flow_run_process(pid: int) -> bool:
    """A worker's process for a flow run: ``prefect.engine``, or the warm process's client
    (``sipflow serve`` forks the run itself off its warm process)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"prefect.engine" in cmd or b"sipflow._warm_client" in cmd


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def facility(tmp_path_factory):
    """``sipflow serve`` in a subprocess: its own server, pool, deployments, one worker."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sipflow.orchestration._workers import descendants

    home = tmp_path_factory.mktemp("facility")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = home / "serve.out"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sipflow.cli", "serve", "--port",
                                 str(port), "--home", str(home / "prefect")], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 240
    while b"sipflow serve: ready" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "sipflow serve did not get ready: " + \
            log.read_text()
        time.sleep(0.5)
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield {"proc": proc, "url": url, "home": home, "log": log}
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        started = [proc.pid, *descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(1)
        # nothing that serve started outlives it: server, workers, their flow runs
        assert not [p for p in started if _alive(p)], log.read_text()


def _scans(folder: Path, n: int, shape=(32, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_scan(folder / f"scan{i}.h5", Simulation(shape=shape, photons=1e8, seed=i))
            for i in range(n)]


def test_watched_folder_through_the_deployment_once_each(facility, tmp_path, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from sipflow.orchestration import SCAN_DEPLOYMENT

    staging, incoming, out = tmp_path / "staging", tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    scans = _scans(staging, 2)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(QUICK))
    (incoming / scans[0].name).write_bytes(scans[0].read_bytes())
    writer = threading.Thread(target=write_slowly, args=(scans[1], incoming / scans[1].name))
    writer.start()  # the second scan arrives in pieces while the watcher looks
    watch = ["watch", str(incoming), "--pipeline", str(pipeline), "-o", str(out),
             "--deployment", SCAN_DEPLOYMENT, "--once", "--stable", "1", "--poll", "0.3",
             "--seed", "1"]
    try:
        assert main(watch) == 0, capsys.readouterr().err
    finally:
        writer.join()
    err = capsys.readouterr().err
    assert err.count("processing") == 2, err
    stores = [out / f"{s.stem}.zarr" for s in scans]
    for store in stores:
        ds = open_result(store, verify=True)
        assert ds.attrs["metrics"]["error"] < 0.2
        assert ds.attrs["provenance"]["engine"] == "prefect"
    mtimes = [s.stat().st_mtime_ns for s in stores]
    # a restarted watcher processes nothing again
    assert main(watch) == 0
    assert "processing" not in capsys.readouterr().err
    assert [s.stat().st_mtime_ns for s in stores] == mtimes
    # exactly one flow run of the deployment per scan
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["sipflow"])))
    ours = [r for r in runs if str(incoming) in str(r.parameters.get("input_path"))]
    assert sorted(Path(r.parameters["input_path"]).name for r in ours) == \
        ["scan0.h5", "scan1.h5"]


def test_worker_killed_mid_stage_then_the_rerun_reuses_finished_stages(facility, tmp_path):
    from prefect.deployments import run_deployment

    from sipflow.orchestration import SCAN_DEPLOYMENT, run_scan_deployment
    from sipflow.orchestration._workers import descendants

    scan = _scans(tmp_path / "in", 1, shape=(128, 128))[0]
    out = tmp_path / "r.zarr"
    work = Path(str(out) + ".sipflow-work")
    text = yaml.safe_dump(LONG)
    params = {"input_path": str(scan), "output": str(out), "pipeline": text, "seed": 7}
    before = _workers(facility["proc"].pid)
    assert len(before) == 1
    run_deployment(SCAN_DEPLOYMENT, parameters=params, timeout=0)
    deadline = time.monotonic() + 180
    while not any(is_complete(p) for p in work.glob("01-prep.standard-*.zarr")):
        assert time.monotonic() < deadline, "the first stage did not finish"
        time.sleep(0.2)
    time.sleep(1.0)  # inside the phase stage (several seconds long)
    assert not list(work.glob("02-*.json")), "the phase stage was too quick to be killed"
    # the machine dies under the worker: it and the flow run it started, at once
    for pid in [before[0], *descendants(before[0])]:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert not out.exists() or not is_complete(out), "no store may look complete"
    assert not any(is_complete(p) for p in work.glob("02-*.zarr"))
    # serve starts another worker
    deadline = time.monotonic() + 60
    while not [p for p in _workers(facility["proc"].pid) if p not in before]:
        assert time.monotonic() < deadline, facility["log"].read_text()
        time.sleep(0.5)
    result = run_scan_deployment(scan, out, text, seed=7, timeout=300)
    assert "error" not in result, result
    ds = open_result(out, verify=True)
    stages = ds.attrs["provenance"]["stages"]
    assert [s["use"] for s in stages] == ["prep.standard", "phase.classic", "analyse.metrics"]
    assert [s["reused"] for s in stages] == [True, False, False]
    assert ds.attrs["metrics"]["error"] < 0.2
    assert not work.exists(), "the work folder is removed once the store is complete"


def test_heavy_stages_of_concurrent_scans_never_overlap_on_a_one_slot_device(facility,
                                                                             tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from sipflow.orchestration import SCANS_DEPLOYMENT, set_device_limit, wait_for_run

    scans = _scans(tmp_path / "in", 2, shape=(64, 64))
    name = set_device_limit("cpu", 1)  # what `sipflow serve --cpu-slots 1` does
    try:
        run = run_deployment(SCANS_DEPLOYMENT, parameters={
            "inputs": [str(s) for s in scans], "pipeline": yaml.safe_dump(QUICK),
            "output_dir": str(tmp_path / "out"), "concurrency": 2, "seed": 1}, timeout=0)
        state = wait_for_run(run.id, timeout=300)
    finally:  # the other tests run without a CPU limit
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)
    assert state.is_completed(), state.message
    spans = []
    for s in scans:
        ds = open_result(tmp_path / "out" / f"{s.stem}.zarr", verify=True)
        phase = ds.attrs["provenance"]["stages"][0]
        assert phase["use"] == "phase.classic" and phase["device_limit"] == name
        spans.append((phase["started_unix"], phase["finished_unix"]))
    (_, a1), (b0, _) = sorted(spans)
    assert a1 <= b0 + 0.05, f"two heavy stages ran at once on one slot: {spans}"


def test_prefect_deploy_all_as_written_routes_scans_to_the_gpu_pool(facility, tmp_path):
    """flows/prefect.yaml, deployed with the commands in its header; a worker per pool."""
    from prefect.client.orchestration import get_client

    from sipflow.orchestration import start_worker, stop_worker, wait_for_run

    root = Path(__file__).resolve().parents[2]
    env = os.environ | {"SIPFLOW_CHECKOUT": str(root), "PREFECT_LOGGING_LEVEL": "WARNING"}
    for pool in ("sipflow-gpu", "sipflow-cpu"):
        done = subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", pool,
                               "--type", "process"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                          cwd=root / "flows", env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    scans = _scans(tmp_path / "in", 2)
    log = open(tmp_path / "workers.log", "wb")
    workers = [start_worker("sipflow-gpu", env={"CUDA_VISIBLE_DEVICES": ""}, log=log),
               start_worker("sipflow-cpu", log=log)]
    try:
        from prefect.deployments import run_deployment

        run = run_deployment("sipflow-process-scans/many", parameters={
            "inputs": [str(s) for s in scans], "pipeline": yaml.safe_dump(QUICK),
            "output_dir": str(tmp_path / "out"), "concurrency": 2, "seed": 1}, timeout=0)
        state = wait_for_run(run.id, timeout=300)
        assert state.is_completed(), state.message
        with get_client(sync_client=True) as client:
            gpu = client.read_deployment_by_name("sipflow-process-scan/gpu")
            for s in scans:
                ds = open_result(tmp_path / "out" / f"{s.stem}.zarr", verify=True)
                assert ds.attrs["metrics"]["error"] < 0.2
                scan_run = client.read_flow_run(ds.attrs["provenance"]["prefect_flow_run_id"])
                assert scan_run.deployment_id == gpu.id, "each scan ran in the GPU pool"
    finally:
        for w in workers:
            stop_worker(w)
        log.close()


def test_a_worker_killed_alone_leaves_its_scan_to_finish_under_serve(facility, tmp_path):
    from prefect.deployments import run_deployment

    from sipflow.orchestration import SCAN_DEPLOYMENT
    from sipflow.orchestration._workers import descendants

    scan = _scans(tmp_path / "in", 1, shape=(128, 128))[0]
    out = tmp_path / "r.zarr"
    worker = _workers(facility["proc"].pid)[0]
    run_deployment(SCAN_DEPLOYMENT, parameters={
        "input_path": str(scan), "output": str(out), "pipeline": yaml.safe_dump(LONG),
        "seed": 2}, timeout=0)
    deadline = time.monotonic() + 120
    while not (runs := [p for p in descendants(worker) if _flow_run_process(p)]):
        assert time.monotonic() < deadline, "the worker did not start the flow run"
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)  # the worker only: its flow run goes on
    deadline = time.monotonic() + 240
    while not is_complete(out):
        assert time.monotonic() < deadline, "the adopted flow run did not finish"
        time.sleep(0.5)
    assert open_result(out, verify=True).attrs["metrics"]["error"] < 0.2
    # the finished run exits and is reaped by serve, not left as a zombie
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{p}").exists() for p in runs):
        assert time.monotonic() < deadline, "the adopted flow run was not reaped"
        time.sleep(0.5)


class _Proxy:
    """A TCP forwarder in front of the Prefect server: :meth:`cut` is an outage (new
    connections refused, open ones reset), :meth:`restore` ends it."""

    def __init__(self, port: int) -> None:
        self.target, self.port = port, _free_port()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accept: no more listening
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                c.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)


def _state(out: Path) -> dict:
    import json

    from sipflow._watch import STATE_FILE

    with contextlib.suppress(OSError, ValueError):
        return json.loads((out / STATE_FILE).read_text())["files"]
    return {}


def test_a_server_outage_is_not_counted_as_scan_failures(facility, tmp_path):
    """The API goes away for 15 s while scans arrive: the watcher leaves them for later
    (not one attempt counted, even with --max-attempts 1) and runs them once it is back."""
    from sipflow.orchestration import SCAN_DEPLOYMENT

    port = int(facility["url"].rsplit(":", 1)[1].split("/")[0])
    proxy = _Proxy(port)
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    scans = _scans(tmp_path / "staging", 2)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(QUICK))
    env = os.environ | {"PREFECT_API_URL": f"http://127.0.0.1:{proxy.port}/api"}
    log = tmp_path / "watch.out"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipflow.cli", "watch", str(incoming), "--pipeline",
             str(pipeline), "-o", str(out), "--deployment", SCAN_DEPLOYMENT, "--stable",
             "0.5", "--poll", "0.3", "--retry-after", "2", "--max-attempts", "1", "--seed", "1"],
            env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"watching" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proxy.cut()
        for s in scans:
            (incoming / s.name).write_bytes(s.read_bytes())
        time.sleep(15)
        files = _state(out)
        assert sorted(files) == ["scan0.h5", "scan1.h5"], log.read_text()
        # each tried again and again (one may be in its try now), none counted as failed
        assert all(f["status"] in ("retry", "running") and "failures" not in f
                   for f in files.values()), files
        text = log.read_text()
        assert text.count("processing") >= 4 and "given up" not in text, text
        proxy.restore()
        deadline = time.monotonic() + 180
        while not all(f.get("status") == "done" for f in _state(out).values()):
            assert time.monotonic() < deadline, log.read_text()
            assert "failed" not in {f["status"] for f in _state(out).values()}, \
                log.read_text()
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        proxy.cut()
    for s in scans:
        assert open_result(out / f"{s.stem}.zarr", verify=True).attrs["metrics"]["error"] < 0.2


def test_a_run_that_lost_its_worker_is_crashed_and_its_scan_run_again(facility, tmp_path,
                                                                      capsys):
    """Worker and flow run die together (a killed serve, a lost machine): the run would
    stay Running forever; without a heartbeat it is marked crashed, and the watcher runs
    the scan again instead of waiting on it for ever or counting a failure."""
    from prefect.client.orchestration import get_client

    from sipflow.orchestration import SCAN_DEPLOYMENT
    from sipflow.orchestration._runs import LOST
    from sipflow.orchestration._workers import descendants

    incoming, out = tmp_path / "incoming", tmp_path / "out"
    scan = _scans(incoming, 1, shape=(128, 128))[0]
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(LONG))
    worker = _workers(facility["proc"].pid)[0]

    work = out / "scan0.zarr.sipflow-work"

    def kill_worker_and_run() -> None:  # inside the phase stage
        deadline = time.monotonic() + 120
        while not any(is_complete(p) for p in work.glob("01-prep.standard-*.zarr")):
            assert time.monotonic() < deadline, "the first stage did not finish"
            time.sleep(0.2)
        for pid in [worker, *descendants(worker)]:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_worker_and_run)
    killer.start()
    watch = ["watch", str(incoming), "--pipeline", str(pipeline), "-o", str(out),
             "--deployment", SCAN_DEPLOYMENT, "--once", "--stable", "0.5", "--poll", "0.3",
             "--retry-after", "0", "--stale-after", "40", "--seed", "3"]
    t0 = time.monotonic()
    try:
        assert main(watch) == 4  # nothing failed; the scan is left for the next run
    finally:
        killer.join()
    err = capsys.readouterr().err
    assert "left for the next run" in err and LOST in err, err
    assert time.monotonic() - t0 < 150
    entry = _state(out)["scan0.h5"]
    assert entry["status"] == "retry" and entry["attempts"] == 0 and entry["lost"] == 1
    with get_client(sync_client=True) as client:
        first = client.read_flow_run(err.split("flow run ")[1].split()[0])
    assert first.state.is_crashed() and first.state.message.startswith(LOST)
    assert main(watch) == 0, capsys.readouterr().err
    assert open_result(out / f"{scan.stem}.zarr", verify=True).attrs["metrics"]["error"] < 0.2


def _warm_process(serve_pid: int) -> int:
    for pid in _children_of(serve_pid):
        with contextlib.suppress(OSError):
            if b"orchestration._warm" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError("sipflow serve runs no warm process")


def test_flow_runs_are_forked_off_the_warm_process_and_die_with_their_client(facility,
                                                                             tmp_path):
    """The worker's process for a run is the warm client; the run itself a fork of the
    warm process (no imports to redo). Killing the client, as the worker would, kills the
    fork: the run ends Crashed, nothing is left running."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from sipflow.orchestration import SCAN_DEPLOYMENT, wait_for_run
    from sipflow.orchestration._runs import crash_if_lost, heartbeat_interval
    from sipflow.orchestration._workers import descendants

    warm = _warm_process(facility["proc"].pid)
    scan = _scans(tmp_path / "in", 1, shape=(128, 128))[0]
    out = tmp_path / "r.zarr"
    work = Path(str(out) + ".sipflow-work")
    run = run_deployment(SCAN_DEPLOYMENT, parameters={
        "input_path": str(scan), "output": str(out), "pipeline": yaml.safe_dump(LONG),
        "seed": 4}, timeout=0)
    deadline = time.monotonic() + 120
    while not any(is_complete(p) for p in work.glob("01-prep.standard-*.zarr")):
        assert time.monotonic() < deadline, "the first stage did not finish"
        time.sleep(0.2)
    with get_client(sync_client=True) as client:  # alive: never taken for lost
        live = client.read_flow_run(run.id)
        assert heartbeat_interval(client, live) == 30  # set by serve's deployment
        assert crash_if_lost(client, live, since=0.0) is None
    worker = _workers(facility["proc"].pid)[0]
    clients = [p for p in descendants(worker) if _flow_run_process(p)]
    forks = _children_of(warm)
    assert len(clients) == 1 and b"_warm_client" in Path(
        f"/proc/{clients[0]}/cmdline").read_bytes()
    assert len(forks) == 1, "the run is a fork of the warm process"
    os.kill(clients[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(forks[0]):
        assert time.monotonic() < deadline, "the fork outlived its client"
        time.sleep(0.2)
    state = wait_for_run(run.id, timeout=120)
    assert state.is_crashed() or state.is_failed(), state
    assert not out.exists() or not is_complete(out)


def test_the_warm_client_without_a_warm_process_is_prefect_engine(tmp_path):
    """No warm process to answer: the client becomes ``python -m prefect.engine``."""
    env = os.environ | {"SIPFLOW_WARM_SOCKET": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "sipflow._warm_client", "not-a-uuid"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Invalid flow run id" in done.stderr, done.stderr
