"""Upload limits checked from the header before any decode; a rejected upload is not kept (#15)."""

from __future__ import annotations

import hashlib
import resource
import time

import grpc
import pytest

from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.storage import blob_key

from .test_probe import _huge_tiff_header




def test_bomb_upload_rejected_from_header_and_not_kept(emb):
    data = _huge_tiff_header(30000, 30000)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with grpc.insecure_channel(emb.gateway_address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gateway_pb2_grpc.GatewayServiceStub(ch).Upload(iter([gateway_pb2.UploadRequest(name="bomb.tif", data=data)]),
                                                           timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "30000x30000 px" in e.value.details() and "MAX_MEGAPIXELS" in e.value.details()
    assert time.monotonic() - t0 < 10
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mb < 200, f"peak RSS grew by {grown_mb:.0f} MB"  # a decode would need 900 MB
    assert not emb.store.exists(blob_key(hashlib.sha256(data).hexdigest()))  # never kept, cannot be analysed


def test_truncated_image_fails_clearly_then_reupload_heals(emb, sample_tiff):
    """The report's case: a truncated blob, re-uploaded, must not answer "deduplicated" and jobs must work again."""
    from semforge.client import GatewayClient
    from semforge.common.v1 import common_pb2

    path, _ = sample_tiff
    good = path.read_bytes()
    with GatewayClient(emb.gateway_address) as c:
        up = c.upload(path)
        key = up.image.ref.key
        emb.store.put_bytes(key, good[: len(good) // 3])  # the store truncated it (outage, bad disk)
        job = c.analyze([up.image.ref], ["trunc"], common_pb2.AnalysisOptions())
        assert job.state == common_pb2.JOB_STATE_FAILED
        assert "corrupt" in job.message and "upload the file again" in job.message, job.message
        again = c.upload(path)
        assert not again.deduplicated and again.image.ref.key == key
        assert emb.store.get_bytes(key) == good
        job = c.analyze([again.image.ref], ["healed"], common_pb2.AnalysisOptions())
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.message
