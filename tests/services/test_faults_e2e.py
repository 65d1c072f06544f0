"""Faults end to end (#15), every service a real process on 127.0.0.1: SIGKILL of segment, measure, classify or
the gateway replica running a 50-image job, brought back -> the job SUCCEEDS with 50/50 per-image results, each
image exactly once in the report; the object store (a real S3 server) stopped for 30 s mid-job -> the job waits
and finishes. Slow (minutes on a shared 2-core machine): ``pytest -m slow tests/services/test_faults_e2e.py``."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from conftest import free_port
from semforge.common.v1 import common_pb2 as S
from semforge.gateway.v1 import gateway_pb2 as G, gateway_pb2_grpc

pytestmark = pytest.mark.slow
N = 50
MODULES = {"segment": "semforge_segment.server", "measure": "semforge_measure.server",
           "classify": "semforge_classify.server", "gateway": "semforge_gateway.server",
           "gateway_b": "semforge_gateway.server"}


class System:
    """segment, measure, classify and two gateway replicas as separate processes on one store."""

    def __init__(self, tmp_path, store_env: dict):
        self.tmp, self.store_env = tmp_path, store_env
        self.ports = {k: free_port() for k in MODULES}
        self.procs: dict[str, subprocess.Popen] = {}
        for k in MODULES:
            self.start(k)

    def env(self, name):
        env = dict(os.environ, PORT=str(self.ports[name]), OMP_NUM_THREADS="1", **self.store_env)
        env.pop("SEMFORGE_AUTH", None)
        if name.startswith("gateway"):
            env.update(SEGMENT_ADDR=f"127.0.0.1:{self.ports['segment']}",
                       MEASURE_ADDR=f"127.0.0.1:{self.ports['measure']}",
                       CLASSIFY_ADDR=f"127.0.0.1:{self.ports['classify']}",
                       RESUME_AFTER_S="4", STORE_RETRY_S="180", JOB_WORKERS="1")
        return env

    def start(self, name):
        log = open(self.tmp / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", MODULES[name]], env=self.env(name),
                                            stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name):
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stub(self, name="gateway_b"):
        ch = grpc.insecure_channel(f"127.0.0.1:{self.ports[name]}")
        return gateway_pb2_grpc.GatewayServiceStub(ch)

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def _retry(fn, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except grpc.RpcError as exc:
            if time.monotonic() > deadline or exc.code() not in (grpc.StatusCode.UNAVAILABLE,
                                                                 grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            time.sleep(0.3)


def submit_50(system, sample_tiff):
    path, _ = sample_tiff
    stub = system.stub("gateway")
    data = path.read_bytes()
    up = _retry(lambda: stub.Upload(iter([G.UploadRequest(name="s.tif", data=data)]), timeout=30))
    req = G.AnalyzeRequest(images=[up.image.ref] * N, names=[f"img{i:02d}" for i in range(N)], sample="faults")
    return stub.SubmitJob(G.SubmitJobRequest(request=req), timeout=30).job.job_id


def job_of(system, job_id, name="gateway_b"):
    return _retry(lambda: system.stub(name).GetJob(G.GetJobRequest(job_id=job_id), timeout=10).job, timeout=120)


def wait_done(system, job_id, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = job_of(system, job_id)
        if j.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            return j
        time.sleep(0.5)
    raise AssertionError(f"job not finished after {timeout} s: {j.images_done}/{N} {j.message}")


def wait_images(system, job_id, n, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_of(system, job_id).images_done >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"job did not reach {n} images")


def assert_complete(system, job):
    assert job.state == S.JOB_STATE_SUCCEEDED, job.message
    assert job.images_done == N
    names = sorted(k.split("/")[1] for k in job.outputs if k.startswith("_state/") and k.endswith("particles.json"))
    assert names == [f"img{i:02d}" for i in range(N)]
    data = b"".join(m.data for m in system.stub().Download(G.DownloadRequest(job_id=job.job_id, name="summary.csv"),
                                                            timeout=60))
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    keys = [(r["scope"], r["measure"], r["column"]) for r in rows]
    assert len(keys) == len(set(keys))  # one row per image and quantity
    assert {r["scope"] for r in rows if r["scope"].startswith("img")} == {f"img{i:02d}" for i in range(N)}
    # the 50 images are the same file: each image's particle count is the same, and the sample's is 50 times it
    # (an image measured twice, or lost, would change the sample's count)
    per_image = {r["scope"]: int(float(r["count"])) for r in rows if r["scope"].startswith("img")
                 and (r["measure"], r["column"]) == (rows[0]["measure"], rows[0]["column"])}
    sample = [int(float(r["count"])) for r in rows if not r["scope"].startswith("img")
              and (r["measure"], r["column"]) == (rows[0]["measure"], rows[0]["column"])]
    assert len(set(per_image.values())) == 1 and per_image["img00"] > 0, per_image
    assert sample == [N * per_image["img00"]], (sample, per_image["img00"])


@pytest.fixture
def local_system(tmp_path):
    s = System(tmp_path, {"SEMFORGE_STORE": str(tmp_path / "store")})
    yield s
    s.close()


@pytest.mark.parametrize("victim", ["segment", "measure", "classify", "gateway"])
def test_sigkill_mid_job_loses_nothing(local_system, sample_tiff, victim):
    job_id = submit_50(local_system, sample_tiff)
    wait_images(local_system, job_id, 5)
    local_system.kill(victim)
    time.sleep(3.0)
    local_system.start(victim)
    assert_complete(local_system, wait_done(local_system, job_id))


def test_store_stopped_30s_mid_job(tmp_path, s3_server, sample_tiff):
    env = {"SEMFORGE_STORE": "s3://semforge", "S3_ENDPOINT": s3_server.endpoint, "S3_ACCESS_KEY": s3_server.key,
           "S3_SECRET_KEY": s3_server.secret}
    s = System(tmp_path, env)
    try:
        job_id = submit_50(s, sample_tiff)
        wait_images(s, job_id, 5)
        s3_server.stop()
        time.sleep(30.0)
        s3_server.start()
        assert_complete(s, wait_done(s, job_id))
    finally:
        s.close()
