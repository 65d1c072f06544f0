"""Tenants (#15) against a real gateway on 127.0.0.1 with bearer tokens: two groups share one gateway and one
store; B can neither see nor touch A's jobs and uploads, and de-duplication tells it nothing.

The gateway is the real servicer behind the real auth interceptor; its job runner runs small real stages that
write their results into the same local store (the analysis itself is not what is tested here)."""

from __future__ import annotations

import io
import logging
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from semforge.analysis import MeasureOptions
from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2 as S
from semforge.gateway.v1 import gateway_pb2 as G
from semforge.jobs import JobRunner
from semforge.pipeline import AnalysisOptions, Measured, prepare_facts
from semforge.pipeline.types import ImageFacts
from semforge.analysis import Calibration
from semforge.rpc import build_server
from semforge.rpc.convert import ref_pb
from semforge.security import Role, TokenRegistry
from semforge.storage import LocalStore


class Stages:
    def __init__(self, store, job_id, gate=None):
        self.store, self.job_id, self.gate = store, job_id, gate

    def _put(self, data):
        return ref_pb(self.store.put_content([data])[0])

    def prepare(self, ref, name, options):
        return prepare_facts(ImageFacts(8, 8, "raw", Calibration(1.0, "user"), 8), name, options, image=ref)

    def segment(self, prep, options):
        if self.gate is not None:
            self.gate(prep.name)
        return self._put(b"mask " + prep.name.encode())

    def measure(self, prep, mask, options):
        return Measured(self._put(b"table " + prep.name.encode()), self._put(b"labels " + prep.name.encode()), 3, 2)

    def classify(self, prep, measured, options):
        return measured

    def report(self, outcomes, options, *, title, warn=None):
        return {"report.html": ref_pb(self.store.put_bytes(f"jobs/{self.job_id}/report/report.html", title.encode()))}


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((48, 64)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Gateway:
    def __init__(self, tmp_path, gate=None, **runner_kw):
        from semforge_gateway.server import GatewayConfig, GatewayServicer

        self.store = LocalStore(tmp_path / "store")
        self.tokens = TokenRegistry(tmp_path / "tokens.json")
        cfg = GatewayConfig(auth="tokens", tokens_file=str(tmp_path / "tokens.json"), resume_after_s=3600)
        self.runner = JobRunner(self.store, lambda job: Stages(self.store, job.job_id, gate),
                                options_of=lambda pb: AnalysisOptions(MeasureOptions()), **runner_kw).start()
        self.server = build_server("gateway", lambda srv: _add(srv, GatewayServicer(self.store, self.runner, cfg)),
                                   cfg)
        self.address = self.server.address

    def client(self, user, tenant, role=Role.USER):
        tok, _ = self.tokens.issue(user, tenant, role=role)
        return GatewayClient(self.address, token=tok)

    def close(self):
        self.runner.close(1.0)
        self.server.stop(0.2)


def _add(server, servicer):
    from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path)
    yield g
    g.close()


def upload(c, data: bytes, name: str):
    return c.stub.Upload(iter([G.UploadRequest(name=name, data=data)]), timeout=30)


def submit(c, refs, sample="s"):
    return c.stub.SubmitJob(G.SubmitJobRequest(request=G.AnalyzeRequest(images=refs, sample=sample)), timeout=30).job


def wait_done(c, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = c.stub.GetJob(G.GetJobRequest(job_id=job_id), timeout=10).job
        if j.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished")


def code_of(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def download(c, **kw):
    return b"".join(m.data for m in c.stub.Download(G.DownloadRequest(**kw), timeout=30))


def test_tenant_b_cannot_see_or_touch_tenant_a(gw, caplog):
    caplog.set_level(logging.INFO, logger="semforge.audit")
    a, b = gw.client("alice", "group-a"), gw.client("bob", "group-b")
    secret = png(1)
    up_a = upload(a, secret, "confidential sample 7.png")
    assert not up_a.deduplicated
    job = submit(a, [up_a.image.ref], sample="confidential-7")
    assert job.tenant == "group-a" and job.owner == "alice"
    done = wait_done(a, job.job_id)
    assert done.state == S.JOB_STATE_SUCCEEDED and list(done.input_names) == ["confidential_sample_7"]
    report_ref = done.outputs["report.html"]

    # B: an unknown id and A's id answer the same NOT_FOUND (no existence oracle)
    unknown = "0" * 32
    for jid in (job.job_id, unknown):
        assert code_of(lambda: b.stub.GetJob(G.GetJobRequest(job_id=jid), timeout=10)) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: list(b.stub.WatchJob(G.WatchJobRequest(job_id=jid), timeout=10))) == \
            grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: b.stub.CancelJob(G.CancelJobRequest(job_id=jid), timeout=10)) == \
            grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: b.stub.DeleteJob(G.DeleteJobRequest(job_id=jid), timeout=10)) == \
            grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: download(b, job_id=jid, name="report.html")) == grpc.StatusCode.NOT_FOUND
    msgs = set()
    for jid in (job.job_id, unknown):
        try:
            b.stub.GetJob(G.GetJobRequest(job_id=jid), timeout=10)
        except grpc.RpcError as exc:
            msgs.add(exc.details().replace(jid, "ID"))
    assert len(msgs) == 1, msgs  # the same words for both
    assert b.stub.ListJobs(G.ListJobsRequest(), timeout=10).jobs == []
    # B cannot fetch A's upload, A's report or any internal object by reference, nor analyse A's upload
    for key in (up_a.image.ref.key, report_ref.key, f"jobs/{job.job_id}/job.json",
                done.outputs[f"_state/{done.input_names[0]}/labels.tif"].key, "index/v1"):
        assert code_of(lambda: download(b, ref=S.ObjectRef(key=key))) == grpc.StatusCode.NOT_FOUND, key
    assert code_of(lambda: submit(b, [up_a.image.ref])) == grpc.StatusCode.NOT_FOUND

    # de-duplication: B uploading A's exact file learns nothing (not "deduplicated"), then owns its own copy
    up_b = upload(b, secret, "mine.png")
    assert not up_b.deduplicated and up_b.image.name == "mine.png"
    assert upload(b, secret, "mine.png").deduplicated  # its own earlier upload does count
    assert download(b, ref=up_b.image.ref) == secret
    job_b = submit(b, [up_b.image.ref])  # names come from B's own upload, never from A's
    assert list(job_b.input_names) == ["mine"]
    assert [j.job_id for j in b.stub.ListJobs(G.ListJobsRequest(), timeout=10).jobs] == [job_b.job_id]

    # A still has everything; internal objects are not downloadable by reference even for their owner
    assert download(a, ref=up_a.image.ref) == secret
    assert download(a, ref=report_ref) == b"semforge report: confidential-7"
    assert download(a, job_id=job.job_id, name="report.html") == b"semforge report: confidential-7"
    assert code_of(lambda: download(a, ref=S.ObjectRef(key=f"jobs/{job.job_id}/job.json"))) == \
        grpc.StatusCode.NOT_FOUND
    assert [j.job_id for j in a.stub.ListJobs(G.ListJobsRequest(), timeout=10).jobs] == [job.job_id]
    labels = done.outputs[f"_state/{done.input_names[0]}/labels.tif"]
    assert code_of(lambda: download(a, ref=labels)) == grpc.StatusCode.NOT_FOUND  # per-image state: not by ref

    # a facility admin sees both tenants
    admin = gw.client("root", "facility", Role.ADMIN)
    seen = {j.job_id for j in admin.stub.ListJobs(G.ListJobsRequest(), timeout=10).jobs}
    assert seen == {job.job_id, job_b.job_id}
    assert admin.stub.GetJob(G.GetJobRequest(job_id=job.job_id), timeout=10).job.sample == "confidential-7"
    assert download(admin, ref=up_a.image.ref) == secret
    for key in (labels.key, f"jobs/{job.job_id}/job.json", "index/v1"):  # internal: not even for an admin
        assert code_of(lambda: download(admin, ref=S.ObjectRef(key=key))) == grpc.StatusCode.NOT_FOUND, key

    # delete: only the owner; audit lines say who deleted which job
    wait_done(b, job_b.job_id)
    r = a.stub.DeleteJob(G.DeleteJobRequest(job_id=job.job_id), timeout=10)
    assert r.objects_deleted >= 2
    assert code_of(lambda: a.stub.GetJob(G.GetJobRequest(job_id=job.job_id), timeout=10)) == grpc.StatusCode.NOT_FOUND
    assert not gw.store.list(f"jobs/{job.job_id}/")
    audit = [(r.method, getattr(r, "user", ""), getattr(r, "job_id", ""), r.code)
             for r in caplog.records if r.name == "semforge.audit"]
    assert ("SubmitJob", "alice", job.job_id, "OK") in audit
    assert ("DeleteJob", "alice", job.job_id, "OK") in audit
    assert ("CancelJob", "bob", job.job_id, "NOT_FOUND") in audit
    assert ("Download", "bob", "", "NOT_FOUND") in audit
    for c in (a, b, admin):
        c.close()


def test_cancel_only_by_the_owner(tmp_path):
    import threading

    release = threading.Event()
    g = Gateway(tmp_path, gate=lambda name: release.wait(20))
    try:
        a, b = g.client("alice", "group-a"), g.client("bob", "group-b")
        job = submit(a, [upload(a, png(2), "x.png").image.ref])
        assert code_of(lambda: b.stub.CancelJob(G.CancelJobRequest(job_id=job.job_id), timeout=10)) == \
            grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: a.stub.DeleteJob(G.DeleteJobRequest(job_id=job.job_id), timeout=10)) == \
            grpc.StatusCode.INVALID_ARGUMENT  # running: cancel first
        assert a.stub.CancelJob(G.CancelJobRequest(job_id=job.job_id), timeout=10).job.state == \
            S.JOB_STATE_CANCELLED
        release.set()
        assert wait_done(a, job.job_id).state == S.JOB_STATE_CANCELLED
    finally:
        release.set()
        g.close()


def test_pages_through_the_gateway_and_the_client(gw):
    a, b = gw.client("alice", "group-a"), gw.client("bob", "group-b")
    ref = upload(a, png(3), "p.png").image.ref
    ids = [submit(a, [ref]).job_id for _ in range(5)]
    submit(b, [upload(b, png(4), "q.png").image.ref])
    page, token = a.list_jobs(page_size=2)
    assert [j.job_id for j in page] == ids[::-1][:2] and token
    assert [j.job_id for j in a.iter_jobs(page_size=2)] == ids[::-1]
    assert code_of(lambda: a.list_jobs(page_size=2, page_token="bogus")) == grpc.StatusCode.INVALID_ARGUMENT
    for j in ids:
        wait_done(a, j)
    assert a.delete_job(ids[0]) >= 2
    assert [j.job_id for j in a.iter_jobs()] == ids[:0:-1]
    a.close()
    b.close()


def test_cli_jobs_pages_and_delete(gw, monkeypatch, capsys):
    from semforge.cli import main

    tok, _ = gw.tokens.issue("carol", "group-c")
    monkeypatch.setenv("SEMFORGE_TOKEN", tok)
    with GatewayClient(gw.address, token=tok) as c:
        ref = upload(c, png(5), "c.png").image.ref
        ids = [submit(c, [ref]).job_id for _ in range(2)]
        for j in ids:
            wait_done(c, j)
    assert main(["client", "--server", gw.address, "jobs", "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ids[1]) and "--page-token" in out
    token = out.rsplit("--page-token ", 1)[1].strip()
    assert main(["client", "--server", gw.address, "jobs", "--limit", "1", "--page-token", token]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ids[0]) and "--page-token" not in out
    assert main(["client", "--server", gw.address, "delete", ids[0]]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["client", "--server", gw.address, "delete", ids[0]]) != 0  # gone: NOT_FOUND, one line
