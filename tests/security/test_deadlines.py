"""A hung service behind the gateway fails the job with a clear DEADLINE_EXCEEDED instead of stalling it (#15)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2
from semforge.embedded import start_embedded
from semforge.gateway.v1 import gateway_pb2
from semforge.rpc import build_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(addr: str) -> bool:
    try:
        with grpc.insecure_channel(addr) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return r.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_hung_segment_service_fails_the_job_with_deadline_exceeded(tmp_path, sample_tiff):
    from semforge_gateway.server import GatewayConfig, register

    store_dir = tmp_path / "store"
    emb = start_embedded(store=str(store_dir))
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "SEMFORGE_STORE": str(store_dir), "HOST": "127.0.0.1"}
    env.pop("SEMFORGE_AUTH", None)
    seg = subprocess.Popen([sys.executable, "-m", "semforge_segment.server"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = runner = None
    try:
        deadline = time.monotonic() + 90
        while not _serving(f"127.0.0.1:{port}"):
            assert seg.poll() is None and time.monotonic() < deadline, "segment service did not start"
            time.sleep(0.3)
        with GatewayClient(emb.gateway_address) as c:
            ref = c.upload(sample_tiff[0]).image.ref
        os.kill(seg.pid, signal.SIGSTOP)  # hung: the port accepts, nothing answers
        cfg = GatewayConfig(segment_addr=f"127.0.0.1:{port}", measure_addr=emb.servers["measure"].address,
                            classify_addr=emb.servers["classify"].address, call_timeout_s=2.0, store_retry_s=5)
        add, runner = register(emb.store, cfg)
        srv = build_server("gateway-deadline", add, cfg)
        t0 = time.monotonic()
        with GatewayClient(srv.address) as c:
            job = c.analyze([ref], ["hung"], common_pb2.AnalysisOptions())
        took = time.monotonic() - t0
        assert job.state == common_pb2.JOB_STATE_FAILED
        assert "DEADLINE_EXCEEDED" in job.message and "CALL_TIMEOUT_S=2" in job.message, job.message
        assert took < 30, took
        with GatewayClient(srv.address) as c:  # the record says the same to anybody who asks later
            got = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=5).job
        assert got.state == common_pb2.JOB_STATE_FAILED and "CALL_TIMEOUT_S" in got.message
    finally:
        os.kill(seg.pid, signal.SIGCONT)
        seg.terminate()
        seg.wait(10)
        if runner is not None:
            runner.close(0)
        if srv is not None:
            srv.stop(0)
        emb.stop(0.2)
