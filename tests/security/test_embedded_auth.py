"""The embedded system (`semforge run`): zero set-up for local callers, nothing for direct calls to internal services."""

from __future__ import annotations

import logging

import grpc
import pytest

from semforge.client import GatewayClient
from semforge.embedded import start_embedded
from semforge.gateway.v1 import gateway_pb2
from semforge.security import TokenRegistry
from semforge.segment.v1 import segment_pb2, segment_pb2_grpc
from semforge.storage import LocalStore


@pytest.fixture
def emb(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SEMFORGE_AUTH", raising=False)
    e = start_embedded(store=LocalStore(tmp_path / "store"))
    yield e
    e.stop(0.2)


def test_embedded_local_client_works_internal_services_refuse(emb, sample_tiff, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="semforge.audit")
    path, _ = sample_tiff
    with GatewayClient(emb.gateway_address) as c:  # no token, no set-up: a caller on this host
        c.wait_ready(30)
        up = c.upload(path)
        job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(images=[up.image.ref])))
    job_id = job.job.job_id
    # a local client that reaches the segment service directly, bypassing the gateway: refused
    with grpc.insecure_channel(emb.servers["segment"].address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            segment_pb2_grpc.SegmentServiceStub(ch).Segment(segment_pb2.SegmentRequest(image=up.image.ref), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # a token, when sent, must be valid; an issued one names its owner in the audit log
    with GatewayClient(emb.gateway_address, token="sft_0123456789ab." + "z" * 43) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    tok, _ = TokenRegistry(tmp_path / "home" / "tokens.json").issue("dana", "group-d")
    with GatewayClient(emb.gateway_address, token=tok) as c:
        with pytest.raises(grpc.RpcError) as e:  # the local admin's job is not group-d's (#15 tenants)
            list(c.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=10))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        up = c.upload(path)  # dana's own upload of the same file, and her own job
        job_id = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(
            request=gateway_pb2.AnalyzeRequest(images=[up.image.ref]))).job.job_id
        for msg in c.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=120):
            last = msg
    assert last.job.state == 3, last  # SUCCEEDED: the gateway's own calls to segment/measure/classify passed
    watch = [r for r in caplog.records if r.name == "semforge.audit" and getattr(r, "method", "") == "WatchJob"]
    assert watch and watch[-1].user == "dana" and watch[-1].job_id == job_id and watch[-1].code == "OK"
    submit = [r for r in caplog.records if r.name == "semforge.audit" and getattr(r, "method", "") == "SubmitJob"]
    assert submit and submit[0].user == "local" and submit[-1].user == "dana" and submit[-1].job_id == job_id
    with GatewayClient(emb.gateway_address, token=tok) as c:
        data = b"".join(m.data for m in c.stub.Download(gateway_pb2.DownloadRequest(ref=up.image.ref), timeout=30))
    assert data == path.read_bytes()
    dl = [r for r in caplog.records if r.name == "semforge.audit" and getattr(r, "method", "") == "Download"]
    assert dl and dl[-1].user == "dana" and dl[-1].object == up.image.ref.key


def test_embedded_with_tokens_required(tmp_path, monkeypatch):
    """`SEMFORGE_AUTH=tokens semforge run` on a shared host: local callers need a token too."""
    home = tmp_path / "home"
    monkeypatch.setenv("SEMFORGE_HOME", str(home))
    monkeypatch.setenv("SEMFORGE_AUTH", "tokens")
    for v in ("SEMFORGE_TOKEN", "SEMFORGE_TOKEN_FILE", "SEMFORGE_TOKENS"):
        monkeypatch.delenv(v, raising=False)
    e = start_embedded(store=LocalStore(tmp_path / "store"))
    try:
        with GatewayClient(e.gateway_address) as c:
            c.wait_ready(30)  # health stays open
            with pytest.raises(grpc.RpcError) as err:
                c.stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        tok, _ = TokenRegistry(home / "tokens.json").issue("erin", "group-e")
        (home / "token").write_text(tok + "\n")  # where the client looks by default
        with GatewayClient(e.gateway_address) as c:
            assert c.stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=5).jobs is not None
    finally:
        e.stop(0.2)
