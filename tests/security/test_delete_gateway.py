"""DeleteJob through a real gateway with tokens frees the job's storage (#15, ``semforge.jobs.refs``): the
upload the job used (its blob, facts and the tenant's record) and its per-image results; another tenant's
upload of the same bytes stays; a re-upload after the delete works."""

from __future__ import annotations

import time

import grpc
import pytest

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2 as S
from semforge.gateway.v1 import gateway_pb2 as G
from semforge.storage import BLOB_PREFIX

from .test_admission import _Gateway, _png, _submit, _wait


@pytest.fixture
def gw(tmp_path):
    g = _Gateway(tmp_path, limit=0, retry_s=1.0)
    g.gate.set()
    yield g
    g.close()


def _upload(c, data, name):
    return c.stub.Upload(iter([G.UploadRequest(name=name, data=data)]), timeout=30).image.ref


def test_delete_job_frees_its_upload_and_results(gw):
    with GatewayClient(gw.address, token=gw.token("alice", "group-a")) as a, \
            GatewayClient(gw.address, token=gw.token("bob", "group-b")) as b:
        mine, shared = _png(1), _png(2)
        ra, rs = _upload(a, mine, "mine.png"), _upload(a, shared, "shared.png")
        rb = _upload(b, shared, "bobs.png")
        assert rs.key == rb.key
        job = _wait(a, a.stub.SubmitJob(G.SubmitJobRequest(request=G.AnalyzeRequest(images=[ra, rs])),
                                        timeout=30).job.job_id)
        assert job.state == S.JOB_STATE_SUCCEEDED
        before = set(gw.store.list(BLOB_PREFIX))
        results = {r.key for n, r in job.outputs.items() if n.startswith("_state/")}
        assert results <= before and len(results) == 4
        n = a.delete_job(job.job_id)
        after = set(gw.store.list(BLOB_PREFIX))
        assert after == {rb.key}  # bob's copy of the shared image stays; the rest was only this job's
        assert {ra.key} | results < before - after  # its own upload, tables, label images (and masks)
        assert n >= 2 + 5
        with pytest.raises(grpc.RpcError) as e:  # alice's upload is gone: same answer as never uploaded
            _submit(a, ra)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "upload it first" in e.value.details()
        assert _wait(b, _submit(b, rb).job_id).state == S.JOB_STATE_SUCCEEDED
        again = _upload(a, mine, "mine.png")  # uploading again works as the first time
        assert again.key == ra.key and gw.store.exists(ra.key)
        t0 = time.monotonic()
        assert _wait(a, _submit(a, again).job_id).state == S.JOB_STATE_SUCCEEDED
        assert time.monotonic() - t0 < 30
