"""#15: a broken progress stream is not the end of a job. The client re-attaches to the job (WatchJob) when the
gateway comes back, and otherwise says which job goes on in the server (exit 3 with the job id)."""

from __future__ import annotations

import shutil
import threading

import pytest

from semforge.client import GatewayClient, StreamLost
from semforge.common.v1 import common_pb2
from semforge.embedded import start_embedded
from semforge.storage import LocalStore

S = common_pb2.JobState


def _images(tmp_path, sample_tiff, n=3):
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.tif"
        shutil.copy(sample_tiff[0], p)
        paths.append(p)
    return paths


def _analyze_killing_the_gateway(client, emb, refs, names, *, restart=None):
    """Analyze; at the first 'segment' event stop the gateway (as SIGTERM does), optionally start a new one."""
    seen, fired = [], threading.Event()

    def kill():
        emb.stop(0)
        if restart:
            restart()

    def progress(ev):
        seen.append(ev)
        if ev.stage == "segment" and not fired.is_set():
            fired.set()
            threading.Thread(target=kill, daemon=True).start()

    return client.analyze(refs, names, common_pb2.AnalysisOptions(), sample="reattach", progress=progress), seen


def test_client_reattaches_to_its_job_when_the_gateway_comes_back(tmp_path, sample_tiff):
    store = LocalStore(tmp_path / "store")
    first = start_embedded(store=store)
    port = first.servers["gateway"].port
    c = GatewayClient(first.gateway_address, busy_wait_s=120)
    c.wait_ready(30)
    paths = _images(tmp_path, sample_tiff)
    refs = [c.upload(p).image.ref for p in paths]
    names = [p.stem for p in paths]
    started = {}

    def restart():
        started["second"] = start_embedded(store=store, gateway_port=port, resume_after_s=1.0)

    try:
        job, seen = _analyze_killing_the_gateway(c, first, refs, names, restart=restart)
        assert job.state == S.JOB_STATE_SUCCEEDED, job.message
        assert job.job_id == seen[0].job_id  # the same job, followed through the new replica
        assert job.images_done == len(paths)
        assert all(f"{n}/particles.csv" in job.outputs for n in names)
    finally:
        c.close()
        if "second" in started:
            started["second"].stop(0)


def test_client_names_the_job_when_it_cannot_reattach(tmp_path, sample_tiff):
    store = LocalStore(tmp_path / "store")
    first = start_embedded(store=store)
    c = GatewayClient(first.gateway_address, busy_wait_s=3)
    c.wait_ready(30)
    paths = _images(tmp_path, sample_tiff, n=2)
    refs = [c.upload(p).image.ref for p in paths]
    with pytest.raises(StreamLost) as info:
        _analyze_killing_the_gateway(c, first, refs, [p.stem for p in paths])
    c.close()
    job_id = info.value.job_id
    assert job_id and f"job {job_id} goes on" in str(info.value)
    assert f"semforge client status {job_id}" in str(info.value)
