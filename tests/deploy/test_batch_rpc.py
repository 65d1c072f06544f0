"""The gateway's batch RPCs (#12) on a real gateway on 127.0.0.1 with bearer tokens: `semforge client batch submit
FOLDER` uploads, submits (SubmitBatch), follows (WatchBatch) and downloads a report equal to the in-process run;
batches are tenant-scoped (NOT_FOUND for foreign ids), cancellable, and bad requests get a clear status.

The gateway is the real servicer behind the real auth interceptor, with the default local batch back end (real
worker processes running the real analysis on the shared store)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from .compare import assert_same_results
from semforge.batch import remote
from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2 as S
from semforge.gateway.v1 import gateway_pb2 as G
from semforge.jobs import JobRunner
from semforge.rpc import build_server
from semforge.security import TokenRegistry
from semforge.storage import LocalStore

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    d = tmp_path_factory.mktemp("batch-rpc-images")
    for i in range(3):
        img, _ = synthetic_sem(seed=40 + i, n_particles=12, size=(384, 768))
        write_zeiss_tiff(d / f"img_{i}.tif", img, 2.5)
    return d


class Gateway:
    def __init__(self, tmp_path):
        from semforge_gateway.server import GatewayConfig, GatewayServicer

        from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc

        self.store = LocalStore(tmp_path / "store")
        self.tokens = TokenRegistry(tmp_path / "tokens.json")
        cfg = GatewayConfig(auth="tokens", tokens_file=str(tmp_path / "tokens.json"), resume_after_s=3600)
        self.runner = JobRunner(self.store, lambda job: None, options_of=lambda pb: None).start()  # no jobs here

        def add(server):
            gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(self.store, self.runner, cfg),
                                                                  server)
            return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

        self.server = build_server("gateway", add, cfg)
        self.address = self.server.address

    def token(self, user, tenant):
        return self.tokens.issue(user, tenant)[0]

    def close(self):
        self.runner.close(1.0)
        self.server.stop(0.2)


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path)
    yield g
    g.close()


def _inprocess(images, out):
    r = subprocess.run([str(BIN / "semforge"), "analyze", *map(str, sorted(images.glob("*.tif"))), "--out", str(out),
                        "--sample", "s", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_client_batch_submit_folder_equals_in_process_and_is_tenant_scoped(gw, images, tmp_path):
    tok_a = gw.token("alice", "lab-a")
    env = dict(os.environ, SEMFORGE_TOKEN=tok_a, SEMFORGE_GATEWAY=gw.address)
    r = subprocess.run([str(BIN / "semforge"), "client", "batch", "submit", str(images), "--out",
                        str(tmp_path / "report"), "--sample", "s", "--shards", "2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and "3/3 images" in r.stderr
    batch_id = r.stdout.strip().rsplit("(batch ", 1)[1].rstrip(")")
    _inprocess(images, tmp_path / "inprocess")
    assert_same_results(tmp_path / "inprocess", tmp_path / "report")

    with GatewayClient(gw.address, token=tok_a) as a:
        b = remote.get(a, batch_id)
        assert b.state == S.JOB_STATE_SUCCEEDED and b.images_done == b.images_total == 3 and b.shards == 2
        assert b.tenant == "lab-a" and b.owner == "alice" and b.backend == "local" and b.finished_at
        assert {"report.html", "report.json", "summary.csv", "img_0/particles.csv"} <= set(b.outputs)
        # the same images again: every result is reused (content addressed), the batch is done at once
        refs = [a.upload(p).image.ref for p in sorted(images.glob("*.tif"))]
        again = remote.submit(a, refs, ["x0", "x1", "x2"], sample="again")
        assert again.images_done == 3
        assert remote.watch(a, again.batch_id).state == S.JOB_STATE_SUCCEEDED

    # another tenant: every batch RPC and the report download answer NOT_FOUND, like an unknown id
    with GatewayClient(gw.address, token=gw.token("bob", "lab-b")) as b_client:
        for call in (lambda: remote.get(b_client, batch_id), lambda: remote.cancel(b_client, batch_id),
                     lambda: remote.watch(b_client, batch_id),
                     lambda: b"".join(m.data for m in b_client.stub.Download(
                         G.DownloadRequest(batch_id=batch_id, name="report.html"))),
                     lambda: remote.get(b_client, "0" * 32)):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
            assert "no batch" in info.value.details()
        # nor can it batch lab-a's uploads by reference
        with pytest.raises(grpc.RpcError) as info:
            remote.submit(b_client, refs)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancel_stops_the_workers_and_bad_requests_are_clear(gw, images, tmp_path):
    with GatewayClient(gw.address, token=gw.token("alice", "lab-a")) as a:
        refs = [a.upload(p).image.ref for p in sorted(images.glob("*.tif"))]
        b = remote.submit(a, refs * 2, [f"i{k}" for k in range(6)], sample="c", shards=1)
        assert b.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING) and b.images_total == 6
        c = remote.cancel(a, b.batch_id)  # before the worker process has analysed anything
        assert c.state == S.JOB_STATE_CANCELLED
        end = remote.watch(a, b.batch_id)
        assert end.state == S.JOB_STATE_CANCELLED
        deadline = time.monotonic() + 60
        while "cancelled after" not in remote.get(a, b.batch_id).message:  # the driver saw its worker stop
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert remote.get(a, b.batch_id).images_done < 6 and not remote.get(a, b.batch_id).outputs
        with pytest.raises(grpc.RpcError) as info:
            b"".join(m.data for m in a.stub.Download(G.DownloadRequest(batch_id=b.batch_id, name="report.html")))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no report yet" in info.value.details()
        for req, what in ((G.SubmitBatchRequest(), "no images"),
                          (G.SubmitBatchRequest(images=refs, names=["a"]), "1 names for 3 images"),
                          (G.SubmitBatchRequest(images=refs, names=["a", "a", "b"]), "share a name"),
                          (G.SubmitBatchRequest(images=refs, shards=-1), "shards")):
            with pytest.raises(grpc.RpcError) as info:
                a.stub.SubmitBatch(req)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and what in info.value.details()


def test_kubernetes_back_end_without_a_cluster_fails_the_batch_with_the_reason(tmp_path, images, monkeypatch):
    """BATCH_BACKEND=kubernetes is wired to the Indexed Job back end; with no cluster to reach (no KUBECONFIG,
    not in a pod) the batch ends FAILED and says why, instead of hanging in RUNNING."""
    pytest.importorskip("kubernetes")
    for k in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config either
    monkeypatch.setenv("BATCH_BACKEND", "kubernetes")
    monkeypatch.setenv("BATCH_IMAGE", "semforge-cpu:0.1.0")
    g = Gateway(tmp_path)
    try:
        with GatewayClient(g.address, token=g.token("alice", "lab-a")) as a:
            refs = [a.upload(p).image.ref for p in sorted(images.glob("*.tif"))]
            b = remote.submit(a, refs, sample="k8s")
            assert b.backend == "kubernetes"
            end = remote.watch(a, b.batch_id)
            assert end.state == S.JOB_STATE_FAILED and "KUBECONFIG" in end.message and "config" in end.message.lower(), end.message
    finally:
        g.close()
