"""The object store goes away mid-job (real S3 server stopped and restarted): UNAVAILABLE, then the job resumes."""

import time

import grpc
import pytest

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2
from semforge.embedded import start_embedded
from semforge.gateway.v1 import gateway_pb2


def test_outage_gives_unavailable_and_job_resumes(s3_server, sample_tiff):
    path, _ = sample_tiff
    emb = start_embedded(store=s3_server.store(), store_retry_s=60)
    c = GatewayClient(emb.gateway_address)
    try:
        c.wait_ready(30)
        up = c.upload(path)
        job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(
            images=[up.image.ref] * 3, names=["a", "b", "c"]))).job
        s3_server.stop()
        with pytest.raises(grpc.RpcError) as e:
            c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retry" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.upload(path)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        time.sleep(1.0)
        s3_server.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job
            except grpc.RpcError:
                time.sleep(0.5)
                continue
            if j.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED):
                break
            time.sleep(0.3)
        assert j.state == common_pb2.JOB_STATE_SUCCEEDED, j.message
        assert "report.html" in j.outputs
    finally:
        c.close()
        emb.stop(0.5)
