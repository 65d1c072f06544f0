"""Per-tenant admission control (#15) against a real gateway on 127.0.0.1 with bearer tokens.

A tenant with ``MAX_ACTIVE_JOBS_PER_TENANT`` jobs queued or running gets RESOURCE_EXHAUSTED with a retry hint
(trailer ``retry-after-ms`` + ``google.rpc.RetryInfo``, like the stream cap) for a new one, and no job is
created; another tenant is still admitted; the client waits as told and gets in once a job has finished; the
CLI gives up after ``--busy-wait`` with one line and exit code 3.

The gateway is the real servicer behind the real auth interceptor; its runner runs small real stages (the
analysis itself is not what is tested), held at a gate so that jobs stay running as long as the test wants.
"""

from __future__ import annotations

import io
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from semforge.analysis import Calibration, MeasureOptions
from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2 as S
from semforge.gateway.v1 import gateway_pb2 as G
from semforge.jobs import JobRunner
from semforge.pipeline import AnalysisOptions, Measured, prepare_facts
from semforge.pipeline.types import ImageFacts
from semforge.rpc import build_server, error_detail_from
from semforge.rpc._errors import _detail
from semforge.rpc._limits import retry_after_ms
from semforge.rpc.convert import ref_pb
from semforge.security import TokenRegistry
from semforge.storage import LocalStore


class _Stages:
    def __init__(self, store, job_id, gate):
        self.store, self.job_id, self.gate = store, job_id, gate

    def _put(self, data):
        return ref_pb(self.store.put_content([data])[0])

    def prepare(self, ref, name, options):
        return prepare_facts(ImageFacts(8, 8, "raw", Calibration(1.0, "user"), 8), name, options, image=ref)

    def segment(self, prep, options):
        self.gate.wait(30)
        return self._put(b"mask " + prep.name.encode())

    def measure(self, prep, mask, options):
        return Measured(self._put(b"table " + prep.name.encode()), self._put(b"labels " + prep.name.encode()), 3, 2)

    def classify(self, prep, measured, options):
        return measured

    def report(self, outcomes, options, *, title, warn=None):
        return {"report.html": ref_pb(self.store.put_bytes(f"jobs/{self.job_id}/report/report.html", title.encode()))}


class _Gateway:
    def __init__(self, tmp_path, *, limit: int, retry_s: float):
        from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
        from semforge_gateway.server import GatewayConfig, GatewayServicer

        self.gate = threading.Event()
        self.store = LocalStore(tmp_path / "store")
        self.tokens = TokenRegistry(tmp_path / "tokens.json")
        cfg = GatewayConfig(auth="tokens", tokens_file=str(tmp_path / "tokens.json"), resume_after_s=3600)
        self.runner = JobRunner(self.store, lambda job: _Stages(self.store, job.job_id, self.gate),
                                options_of=lambda pb: AnalysisOptions(MeasureOptions()), workers=4,
                                max_active_per_tenant=limit, busy_retry_s=retry_s).start()
        servicer = GatewayServicer(self.store, self.runner, cfg)

        def add(server):
            gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
            return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

        self.server = build_server("gateway", add, cfg)
        self.address = self.server.address

    def token(self, user, tenant):
        return self.tokens.issue(user, tenant)[0]

    def close(self):
        self.gate.set()
        self.runner.close(1.0)
        self.server.stop(0.2)


@pytest.fixture
def gw(tmp_path):
    g = _Gateway(tmp_path, limit=2, retry_s=0.3)
    yield g
    g.close()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((48, 64)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _upload(c, seed):
    return c.stub.Upload(iter([G.UploadRequest(name=f"img{seed}.png", data=_png(seed))]), timeout=30).image.ref


def _submit(c, ref):
    return c.stub.SubmitJob(G.SubmitJobRequest(request=G.AnalyzeRequest(images=[ref])), timeout=30).job


def _wait(c, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = c.stub.GetJob(G.GetJobRequest(job_id=job_id), timeout=10).job
        if j.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished")


def test_a_full_tenant_is_refused_with_a_retry_hint_and_others_are_admitted(gw):
    from google.rpc import error_details_pb2

    with GatewayClient(gw.address, token=gw.token("alice", "group-a")) as a, \
            GatewayClient(gw.address, token=gw.token("bob", "group-b")) as b:
        ref = _upload(a, 1)
        first = [_submit(a, ref), _submit(a, ref)]  # held running at the gate
        with pytest.raises(grpc.RpcError) as e:
            _submit(a, ref)
        err = e.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "group-a" in err.details() and "MAX_ACTIVE_JOBS_PER_TENANT=2" in err.details(), err.details()
        assert retry_after_ms(err) == 300
        info = _detail(err, error_details_pb2.RetryInfo)
        assert info is not None and info.retry_delay.ToMilliseconds() == 300
        assert error_detail_from(err).code == "RESOURCE_EXHAUSTED"
        with pytest.raises(grpc.RpcError) as e:  # Analyze is refused the same way, before any event
            list(a.stub.Analyze(G.AnalyzeRequest(images=[ref]), timeout=30))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(e.value) == 300
        assert len(a.list_jobs()[0]) == 2  # the refused submissions created nothing

        bob_job = _submit(b, _upload(b, 2))  # another tenant is still admitted
        assert bob_job.tenant == "group-b"

        gw.gate.set()
        for j in first + [bob_job]:
            assert _wait(b if j is bob_job else a, j.job_id).state == S.JOB_STATE_SUCCEEDED
        assert _wait(a, _submit(a, ref).job_id).state == S.JOB_STATE_SUCCEEDED  # a slot is free again
        # finished jobs leave the tenant's count; the runner drops the count entry right after the final record
        # (which the client may see first), so give it a moment
        deadline = time.monotonic() + 10
        while gw.store.list("busy/") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not gw.store.list("busy/")


def test_the_client_waits_as_told_and_gets_in(gw):
    with GatewayClient(gw.address, token=gw.token("alice", "group-a"), busy_wait_s=30) as a:
        ref = _upload(a, 1)
        held = [_submit(a, ref), _submit(a, ref)]
        events = []
        threading.Timer(1.0, gw.gate.set).start()  # the held jobs finish after about a second
        t0 = time.monotonic()
        job = a.analyze([ref], ["third"], S.AnalysisOptions(), progress=events.append)
        assert job.state == S.JOB_STATE_SUCCEEDED, job.message
        assert time.monotonic() - t0 >= 0.9  # it did wait
        waiting = [ev for ev in events if ev.stage == "waiting"]
        assert len(waiting) == 1 and "MAX_ACTIVE_JOBS_PER_TENANT" in waiting[0].message
        assert all(_wait(a, j.job_id).state == S.JOB_STATE_SUCCEEDED for j in held)


def test_cli_gives_up_after_busy_wait_with_one_line(gw, tmp_path, monkeypatch, capsys):
    from semforge.cli import main

    tok = gw.token("alice", "group-a")
    with GatewayClient(gw.address, token=tok) as a:
        ref = _upload(a, 1)
        _submit(a, ref), _submit(a, ref)
    img = tmp_path / "img1.png"
    img.write_bytes(_png(1))
    monkeypatch.setenv("SEMFORGE_TOKEN", tok)
    t0 = time.monotonic()
    rc = main(["client", "--server", gw.address, "analyze", str(img), "--out", str(tmp_path / "out"),
               "--quiet", "--busy-wait", "1.5", "--pixel-size-nm", "2"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3, err
    assert err[-1].startswith("semforge: error: the gateway is still busy after 1.5 s"), err
    assert "MAX_ACTIVE_JOBS_PER_TENANT=2" in err[-1] and "--busy-wait" in err[-1]
    assert 1.0 <= took < 10


def test_gateway_setting_reaches_the_runner(monkeypatch, tmp_path):
    from semforge_gateway.server import GatewayConfig, job_runner

    for k, v in {"SEGMENT_ADDR": "127.0.0.1:1", "MEASURE_ADDR": "127.0.0.1:1", "CLASSIFY_ADDR": "127.0.0.1:1",
                 "MAX_ACTIVE_JOBS_PER_TENANT": "7"}.items():
        monkeypatch.setenv(k, v)
    cfg = GatewayConfig.from_env()
    assert cfg.max_active_jobs_per_tenant == 7
    assert job_runner(LocalStore(tmp_path / "s"), cfg).max_active_per_tenant == 7
    monkeypatch.setenv("MAX_ACTIVE_JOBS_PER_TENANT", "-1")
    from semforge.rpc import ConfigError

    with pytest.raises(ConfigError, match="MAX_ACTIVE_JOBS_PER_TENANT=-1 must be >= 0"):
        GatewayConfig.from_env()
