"""The upgrade proof (#12): a rolling replacement of both gateway replicas during a 50-image job, and during a
50-image batch (SubmitBatch, local back end), loses nothing.

Every service is a real process on 127.0.0.1 (segment, measure, classify, gateway A and B on one local store).
The client is given both gateways (``GatewayClient("127.0.0.1:A,127.0.0.1:B")``: round robin with health
checks). While the job runs, A gets SIGTERM (graceful drain: NOT_SERVING, its jobs released to B, in-flight
calls finish within GRACE_S), a new A starts on the same port and becomes SERVING, then the same for B.
Asserted: the job SUCCEEDS with 50/50 per-image results, each image exactly once in the report; every client
call (upload, submit, watch, get, download) returned without an error reaching the caller (the client's own
retries are counted and printed separately); the report downloads. The figures in docs/deploy.md
("Upgrades") come from ``pytest -m slow -s tests/deploy/test_upgrade.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2

pytestmark = pytest.mark.slow
N = 50
MODULES = {"segment": "semforge_segment.server", "measure": "semforge_measure.server",
           "classify": "semforge_classify.server", "gateway_a": "semforge_gateway.server",
           "gateway_b": "semforge_gateway.server"}
FINISHED = (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """segment, measure, classify and two gateway replicas as separate processes on one store."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.ports = {k: _free_port() for k in MODULES}
        self.procs: dict[str, subprocess.Popen] = {}
        for k in MODULES:
            self.start(k)

    def env(self, name):
        env = dict(os.environ, PORT=str(self.ports[name]), OMP_NUM_THREADS="1",
                   SEMFORGE_STORE=str(self.tmp / "store"), SEMFORGE_AUTH="none", GRACE_S="5")
        if name.startswith("gateway"):
            env.update(SEGMENT_ADDR=f"127.0.0.1:{self.ports['segment']}",
                       MEASURE_ADDR=f"127.0.0.1:{self.ports['measure']}",
                       CLASSIFY_ADDR=f"127.0.0.1:{self.ports['classify']}",
                       RESUME_AFTER_S="10", JOB_WORKERS="1", BATCH_WORKERS="1", BATCH_THREADS="1")
        return env

    def start(self, name):
        log = open(self.tmp / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", MODULES[name]], env=self.env(name),
                                            stdout=log, stderr=subprocess.STDOUT)

    def address(self, name):
        return f"127.0.0.1:{self.ports[name]}"

    def wait_serving(self, name, timeout=120.0):
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address(name)) as ch:
            hs = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                assert self.procs[name].poll() is None, f"{name} exited: {self.log_tail(name)}"
                try:
                    if hs.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError(f"{name} not SERVING after {timeout} s: {self.log_tail(name)}")

    def replace(self, name) -> dict:
        """SIGTERM (graceful drain), wait for the exit, start a new one on the same port, wait until SERVING."""
        t0 = time.monotonic()
        p = self.procs[name]
        p.send_signal(signal.SIGTERM)
        rc = p.wait(60)
        t1 = time.monotonic()
        self.start(name)
        self.wait_serving(name)
        return {"replica": name, "exit_code": rc, "drain_s": round(t1 - t0, 1),
                "restart_to_serving_s": round(time.monotonic() - t1, 1)}

    def log_tail(self, name, n=2000):
        try:
            return (self.tmp / f"{name}.log").read_text()[-n:]
        except OSError:
            return ""

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


class Calls:
    """Every client-library call the test makes, and any error that reached it."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, kind, fn, *args, **kw):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        try:
            return fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - what reaches the caller is what this test counts
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            raise


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def _images(d, n=N):
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    d.mkdir()
    paths = []
    for i in range(n):
        img, _ = synthetic_sem(seed=100 + i, n_particles=16, size=(448, 576), databar_rows=32)
        write_zeiss_tiff(d / f"img{i:02d}.tif", img, 2.5)
        paths.append(d / f"img{i:02d}.tif")
    return paths


def test_rolling_replacement_of_both_gateways_mid_job_loses_nothing(cluster, tmp_path):
    paths = _images(tmp_path / "images")
    for name in MODULES:
        cluster.wait_serving(name)
    calls = Calls()
    client = GatewayClient(f"{cluster.address('gateway_a')},{cluster.address('gateway_b')}", busy_wait_s=120)
    t_start = time.monotonic()
    try:
        calls("wait_ready", client.wait_ready, 30)
        refs = [calls("upload", client.upload, p).image.ref for p in paths]
        names = [p.stem for p in paths]
        job = calls("submit", client.submit, refs, names, sample="upgrade")
        job_id = job.job_id
        events: list = []
        watched: dict = {}
        stop = threading.Event()

        def watch():
            try:
                watched["job"] = calls("watch", client.watch, job_id, progress=events.append)
            except Exception:  # noqa: BLE001 - counted by Calls
                pass

        polled: list = []

        def poll():  # GetJob through the channel all along, the replacement included
            while not stop.is_set():
                try:
                    polled.append(calls("get", client.get_job, job_id).images_done)
                except Exception:  # noqa: BLE001 - counted by Calls
                    pass
                stop.wait(0.3)

        threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=poll, daemon=True)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 300
        while not polled or polled[-1] < 1:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        t_roll = time.monotonic()
        rolled = [cluster.replace("gateway_a"), cluster.replace("gateway_b")]
        roll_s = time.monotonic() - t_roll
        after_roll = calls("get", client.get_job, job_id)
        # the replacement happened while the job ran: otherwise this proves nothing
        assert after_roll.state not in FINISHED and after_roll.images_done < N, \
            f"job finished before the roll ended ({after_roll.images_done}/{N}): give it more work"
        threads[0].join(600)
        stop.set()
        threads[1].join(10)
        assert not calls.errors, calls.errors
        assert "job" in watched, "the job did not finish within 600 s"
        final = watched["job"]
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.message
        assert final.images_done == N
        # 50/50 per-image results, each image once
        state_names = sorted(k.split("/")[1] for k in final.outputs
                             if k.startswith("_state/") and k.endswith("particles.json"))
        assert state_names == names
        out = tmp_path / "report"
        files = calls("download", client.download_outputs, final, out)
        assert (out / "report.html").stat().st_size > 0 and (out / "report.json").stat().st_size > 0
        rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
        first = (rows[0]["measure"], rows[0]["column"])
        per_image = {r["scope"]: int(float(r["count"])) for r in rows
                     if r["scope"].startswith("img") and (r["measure"], r["column"]) == first}
        pooled = [int(float(r["count"])) for r in rows
                  if not r["scope"].startswith("img") and (r["measure"], r["column"]) == first]
        keys = [(r["scope"], r["measure"], r["column"]) for r in rows]
        assert len(keys) == len(set(keys))  # one row per image and quantity
        assert sorted(per_image) == names and all(v > 0 for v in per_image.values())
        # an image counted twice (or lost) would change the pooled count
        assert pooled == [sum(per_image.values())], (pooled, sum(per_image.values()))
        assert calls.errors == []
        figures = {"images": N, "total_s": round(time.monotonic() - t_start, 1), "roll_s": round(roll_s, 1),
                   "replacements": rolled, "images_done_after_roll": after_roll.images_done,
                   "client_calls": dict(calls.counts), "errors_surfaced": len(calls.errors),
                   "client_retries": client.retries, "progress_events": len(events),
                   "files_downloaded": len(files)}
        print("\nUPGRADE FIGURES " + json.dumps(figures))
    finally:
        stop_all = locals().get("stop")
        if stop_all is not None:
            stop_all.set()
        client.close()


def test_rolling_replacement_of_both_gateways_mid_batch_loses_nothing(cluster, tmp_path):
    """The same roll during a 50-image batch (SubmitBatch, local back end): the driving replica stops its workers
    and releases the batch on SIGTERM, the other takes it over (finished images skipped); 50/50, one report."""
    from semforge.batch import remote

    paths = _images(tmp_path / "images")
    for name in MODULES:
        cluster.wait_serving(name)
    calls = Calls()
    client = GatewayClient(f"{cluster.address('gateway_a')},{cluster.address('gateway_b')}", busy_wait_s=120)
    stop = threading.Event()
    t_start = time.monotonic()
    try:
        calls("wait_ready", client.wait_ready, 30)
        refs = [calls("upload", client.upload, p).image.ref for p in paths]
        names = [p.stem for p in paths]
        batch = calls("submit", remote.submit, client, refs, names, sample="upgrade", shards=1)
        watched: dict = {}
        events: list = []
        polled: list = []

        def watch():
            try:
                watched["batch"] = calls("watch", remote.watch, client, batch.batch_id, progress=events.append)
            except Exception:  # noqa: BLE001 - counted by Calls
                pass

        def poll():
            while not stop.is_set():
                try:
                    polled.append(calls("get", remote.get, client, batch.batch_id).images_done)
                except Exception:  # noqa: BLE001 - counted by Calls
                    pass
                stop.wait(0.3)

        threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=poll, daemon=True)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 300
        while not polled or polled[-1] < 1:
            assert time.monotonic() < deadline, "the batch did not start"
            time.sleep(0.2)
        t_roll = time.monotonic()
        rolled = [cluster.replace("gateway_a"), cluster.replace("gateway_b")]
        roll_s = time.monotonic() - t_roll
        after_roll = calls("get", remote.get, client, batch.batch_id)
        assert after_roll.state not in FINISHED and after_roll.images_done < N, \
            f"batch finished before the roll ended ({after_roll.images_done}/{N}): give it more work"
        threads[0].join(600)
        stop.set()
        threads[1].join(10)
        assert not calls.errors, calls.errors
        assert "batch" in watched, "the batch did not finish within 600 s"
        final = watched["batch"]
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.message
        assert final.images_done == final.images_total == N
        out = tmp_path / "report"
        files = calls("download", remote.download_report, client, final, out)
        rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
        first = (rows[0]["measure"], rows[0]["column"])
        per_image = {r["scope"]: int(float(r["count"])) for r in rows
                     if r["scope"].startswith("img") and (r["measure"], r["column"]) == first}
        pooled = [int(float(r["count"])) for r in rows
                  if not r["scope"].startswith("img") and (r["measure"], r["column"]) == first]
        assert sorted(per_image) == names and all(v > 0 for v in per_image.values())
        assert pooled == [sum(per_image.values())]
        # each image's result written once (content addressed, 'done' last) and the batch resumed, not restarted
        store = cluster.tmp / "store"
        assert len(list((store / "batch-results").glob("*/done"))) == N
        leases = sorted(p.name for p in (store / "batches" / batch.batch_id / "lease").iterdir())
        assert len(leases) >= 2, leases  # driven by more than one replica
        figures = {"images": N, "total_s": round(time.monotonic() - t_start, 1), "roll_s": round(roll_s, 1),
                   "replacements": rolled, "images_done_after_roll": after_roll.images_done,
                   "drivers": len(leases), "client_calls": dict(calls.counts), "errors_surfaced": len(calls.errors),
                   "client_retries": client.retries, "files_downloaded": len(files)}
        print("\nUPGRADE BATCH FIGURES " + json.dumps(figures))
    finally:
        stop.set()
        client.close()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_batch_resumes_after_both_gateways_are_killed(cluster, tmp_path):
    """SIGKILL (no drain, nothing released) of both gateways mid-batch: their worker processes die with them
    (parent-death signal), and once the driver's heartbeat is older than RESUME_AFTER_S a restarted replica
    takes the next lease and finishes the batch: 50/50, each result written once."""
    from semforge.batch import remote

    paths = _images(tmp_path / "images")
    for name in MODULES:
        cluster.wait_serving(name)
    client = GatewayClient(f"{cluster.address('gateway_a')},{cluster.address('gateway_b')}", busy_wait_s=120)
    try:
        client.wait_ready(30)
        refs = [client.upload(p).image.ref for p in paths]
        batch = remote.submit(client, refs, [p.stem for p in paths], sample="killed", shards=1)
        deadline = time.monotonic() + 300
        while remote.get(client, batch.batch_id).images_done < 1:
            assert time.monotonic() < deadline, "the batch did not start"
            time.sleep(0.2)
        workers = [c for g in ("gateway_a", "gateway_b") for c in _children(cluster.procs[g].pid)]
        assert workers, "no batch worker process found under the gateways"
        for g in ("gateway_a", "gateway_b"):
            cluster.procs[g].send_signal(signal.SIGKILL)
            cluster.procs[g].wait(10)
        time.sleep(2.0)
        assert not [w for w in workers if os.path.exists(f"/proc/{w}") and
                    open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"], "a worker outlived its gateway"
        for g in ("gateway_a", "gateway_b"):
            cluster.start(g)
        for g in ("gateway_a", "gateway_b"):
            cluster.wait_serving(g)
        mid = remote.get(client, batch.batch_id)
        assert mid.state not in FINISHED and mid.images_done < N, (mid.state, mid.images_done)
        final = remote.watch(client, batch.batch_id)
        assert final.state == common_pb2.JOB_STATE_SUCCEEDED, final.message
        assert final.images_done == N and "report.html" in final.outputs
        store = cluster.tmp / "store"
        assert len(list((store / "batch-results").glob("*/done"))) == N
        assert len(list((store / "batches" / batch.batch_id / "lease").iterdir())) >= 2
        print(f"\nKILLED BATCH resumed: {mid.images_done}/{N} done when both replicas were back, "
              f"retries {client.retries}")
    finally:
        client.close()
