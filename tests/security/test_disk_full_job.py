"""Disk full on the local store in the middle of a job: the job waits, nothing half-written, it finishes (#15)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import grpc
import pytest

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2
from semforge.embedded import start_embedded
from semforge.gateway.v1 import gateway_pb2


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path):
    """Write until ENOSPC; returns the filler file."""
    filler = path / "filler.bin"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError:
            pass
    try:
        with open(path / "filler2.bin", "wb") as fh:  # the last partial MiB
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass
    return filler


def _free(disk):
    for f in ("filler.bin", "filler2.bin"):
        (disk / f).unlink(missing_ok=True)


def test_disk_full_mid_job_waits_then_finishes(small_disk, sample_tiff, tmp_path):
    path, _ = sample_tiff
    emb = start_embedded(store=str(small_disk / "store"), store_retry_s=120)
    try:
        with GatewayClient(emb.gateway_address) as c:
            c.wait_ready(30)
            up = c.upload(path)
            _fill(small_disk)
            with pytest.raises(grpc.RpcError) as e:  # an upload now: a clear RESOURCE_EXHAUSTED, nothing kept
                c.stub.Upload(iter([gateway_pb2.UploadRequest(name="new.tif", data=os.urandom(200_000))]), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "no space left" in e.value.details()
            _free(small_disk)
            job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(
                images=[up.image.ref] * 3, names=["a", "b", "c"])), timeout=10).job
            events = []

            def watch():
                with GatewayClient(emb.gateway_address) as w:
                    for m in w.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=180):
                        if m.HasField("event"):
                            events.append(m.event)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            _fill(small_disk)  # the disk fills while the job runs
            deadline = time.monotonic() + 60
            while not any(e.stage == "waiting" for e in events) and time.monotonic() < deadline:
                time.sleep(0.2)
            waiting = [e for e in events if e.stage == "waiting"]
            assert waiting and "no space left" in waiting[0].message, [(e.stage, e.message) for e in events]
            mid = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job
            assert mid.state in (common_pb2.JOB_STATE_QUEUED, common_pb2.JOB_STATE_RUNNING), mid.message
            assert mid.images_done < 3
            _free(small_disk)  # space returns
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10).job
                if j.state in (common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED):
                    break
                time.sleep(0.5)
            assert j.state == common_pb2.JOB_STATE_SUCCEEDED, j.message
            assert "report.html" in j.outputs and j.images_done == 3
            watcher.join(30)
        assert os.listdir(small_disk / "store" / ".tmp") == []  # nothing half-written left behind
    finally:
        emb.stop(0.2)
