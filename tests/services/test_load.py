"""Streams never starve unary calls or health: measured against a real gateway replica on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.common.v1 import common_pb2
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.rpc import build_server, error_detail_from
from semforge.rpc._limits import retry_after_ms




def _replica(emb, **cfg_kw):
    from semforge_gateway.server import GatewayConfig, register

    cfg = GatewayConfig(segment_addr=emb.servers["segment"].address, measure_addr=emb.servers["measure"].address,
                        classify_addr=emb.servers["classify"].address, resume_after_s=3600, **cfg_kw)
    add, orch = register(emb.store, cfg)
    # a job that stays queued (nobody runs it): WatchJob streams on it stay open until cancelled
    job = common_pb2.Job(job_id=f"idle{time.monotonic_ns()}", state=common_pb2.JOB_STATE_QUEUED,
                         created_at="2026-01-01T00:00:00+00:00", images_total=1)
    orch.jobs.save(job)
    return build_server("gateway-load", add, cfg), orch, job.job_id


def _open_watchers(address, job_id, n):
    """n WatchJob streams held open in threads; returns (threads, errors list, channel)."""
    ch = grpc.insecure_channel(address)
    stub = gateway_pb2_grpc.GatewayServiceStub(ch)
    errors: list = []

    def watch():
        try:
            for _ in stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=60):
                pass
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, errors, ch


def _probe(address, job_id, timeout=2.0):
    """Health and GetJob with a deadline: (health status or the error code, GetJob ok or the error code)."""
    with grpc.insecure_channel(address) as ch:
        try:
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError as exc:
            h = exc.code()
        try:
            gateway_pb2_grpc.GatewayServiceStub(ch).GetJob(gateway_pb2.GetJobRequest(job_id=job_id), timeout=timeout)
            g = "ok"
        except grpc.RpcError as exc:
            g = exc.code()
    return h, g


def _cancel(address, job_id):
    with grpc.insecure_channel(address) as ch:
        gateway_pb2_grpc.GatewayServiceStub(ch).CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=10)


def test_without_a_cap_streams_starve_health_and_getjob(emb):
    """The problem, reproduced: as many watchers as threads and health/GetJob time out."""
    srv, orch, job_id = _replica(emb, workers=3, max_streams=-1)
    try:
        threads, errors, ch = _open_watchers(srv.address, job_id, 3)
        time.sleep(1.0)
        h, g = _probe(srv.address, job_id, timeout=1.5)
        assert h == grpc.StatusCode.DEADLINE_EXCEEDED and g == grpc.StatusCode.DEADLINE_EXCEEDED, (h, g)
        _cancel(emb.gateway_address, job_id)
        for t in threads:
            t.join(10)
        ch.close()
    finally:
        orch.close(0)
        srv.stop(0)


def test_stream_cap_keeps_health_and_unary_calls_answering(emb):
    srv, orch, job_id = _replica(emb, workers=4, max_streams=2)
    try:
        threads, errors, ch = _open_watchers(srv.address, job_id, 2)
        time.sleep(1.0)
        assert srv.limiter.open_streams == 2
        t0 = time.monotonic()
        h, g = _probe(srv.address, job_id, timeout=2.0)
        assert h == health_pb2.HealthCheckResponse.SERVING and g == "ok" and time.monotonic() - t0 < 2.0
        # a third stream is refused at once, with a retry hint, and no work done
        extra, extra_errors, ch2 = _open_watchers(srv.address, job_id, 1)
        extra[0].join(5)
        assert len(extra_errors) == 1
        err = extra_errors[0]
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry in" in err.details()
        assert retry_after_ms(err) == 1000 and error_detail_from(err).code == "RESOURCE_EXHAUSTED"
        # an Analyze refused by the cap creates no job
        before = len(orch.jobs.list(1000))
        stub = gateway_pb2_grpc.GatewayServiceStub(ch2)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Analyze(gateway_pb2.AnalyzeRequest(images=[common_pb2.ObjectRef(key="blobs/sha256/" + "0" * 64)]),
                              timeout=5))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and len(orch.jobs.list(1000)) == before
        _cancel(srv.address, job_id)  # the watchers finish; their slots are free again
        for t in threads:
            t.join(10)
        assert not errors and srv.limiter.open_streams == 0
        again, again_errors, ch3 = _open_watchers(srv.address, job_id, 1)
        again[0].join(10)
        assert not again_errors
        for c in (ch, ch2, ch3):
            c.close()
    finally:
        orch.close(0)
        srv.stop(0)


def test_per_client_cap(emb):
    srv, orch, job_id = _replica(emb, workers=8, max_streams=6, max_streams_per_client=1)
    try:
        threads, errors, ch = _open_watchers(srv.address, job_id, 2)
        time.sleep(1.0)
        assert len(errors) == 1 and errors[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this client already has 1 open streams" in errors[0].details()
        _cancel(srv.address, job_id)
        for t in threads:
            t.join(10)
        ch.close()
    finally:
        orch.close(0)
        srv.stop(0)


def test_client_waits_for_a_busy_gateway(emb, sample_tiff):
    """Refused streams (Upload, Analyze) are retried by the client after the server's hint, and then run."""
    from semforge.client import GatewayClient

    srv, orch, first_idle = _replica(emb, workers=4, max_streams=1)

    def hold_the_slot(job_id=None, free_after_s=2.5):
        if job_id is None:
            job_id = f"idle{time.monotonic_ns()}"
            orch.jobs.save(common_pb2.Job(job_id=job_id, state=common_pb2.JOB_STATE_QUEUED,
                                          created_at="2026-01-01T00:00:00+00:00", images_total=1))
        threads, errors, ch = _open_watchers(srv.address, job_id, 1)
        time.sleep(1.0)
        if free_after_s:
            threading.Timer(free_after_s, _cancel, (srv.address, job_id)).start()
        return threads, ch, job_id

    held = []
    try:
        for what in ("upload", "analyze"):
            threads, ch, _ = hold_the_slot(first_idle if what == "upload" else None)
            held.append((threads, ch))
            t0, refused_before = time.monotonic(), srv.limiter.refused
            with GatewayClient(srv.address) as c:
                if what == "upload":
                    up = c.upload(sample_tiff[0])
                    assert up.image.width > 0
                else:
                    job = c.analyze([up.image.ref], ["busy"], common_pb2.AnalysisOptions())
                    assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.message
            assert srv.limiter.refused > refused_before and time.monotonic() - t0 > 1.0, what
        threads, ch, idle = hold_the_slot(free_after_s=0)
        held.append((threads, ch))
        with GatewayClient(srv.address, busy_wait_s=0) as c:  # a client that will not wait gets the status
            with pytest.raises(grpc.RpcError) as e:
                c.analyze([up.image.ref], ["busy2"], common_pb2.AnalysisOptions())
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        _cancel(srv.address, idle)
    finally:
        for threads, ch in held:
            for t in threads:
                t.join(30)
            ch.close()
        orch.close(0)
        srv.stop(0)
