"""End to end over gRPC: real servers on 127.0.0.1 started in this process (the embedded mode)."""

import io
import threading
import time

import grpc
import numpy as np
import pytest
import tifffile
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.client import GatewayClient
from semforge.common.v1 import common_pb2
from semforge.embedded import start_embedded
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.rpc import error_detail_from
from semforge.storage import LocalStore

S = common_pb2




@pytest.fixture
def stub(emb):
    ch = grpc.insecure_channel(emb.gateway_address)
    yield gateway_pb2_grpc.GatewayServiceStub(ch)
    ch.close()


def upload_bytes(stub, data, name="x.tif", chunk=1 << 20):
    def gen():
        yield gateway_pb2.UploadRequest(name=name, data=data[:chunk])
        for i in range(chunk, len(data), chunk):
            yield gateway_pb2.UploadRequest(data=data[i:i + chunk])
    return stub.Upload(gen(), timeout=30)


def assert_status(exc_info, code, text):
    err = exc_info.value
    assert err.code() == code, (err.code(), err.details())
    assert text.lower() in err.details().lower(), err.details()
    detail = error_detail_from(err)
    assert detail is not None and detail.code == code.name


def serving(emb):
    with grpc.insecure_channel(emb.gateway_address) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return r.status == health_pb2.HealthCheckResponse.SERVING


def test_every_service_is_healthy_and_reflective(emb):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from semforge_translate.server import ready as translator_present

    for name, srv in emb.servers.items():
        with grpc.insecure_channel(srv.address) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            # translate serves only with a trained translator (none is shipped): NOT_SERVING without one
            ok = name != "translate" or translator_present()
            want = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            assert r.status == want, name
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = [s.name for s in resp.list_services_response.service]
            assert any(n.startswith("semforge.") for n in names), (name, names)


def test_upload_analyze_download(emb, stub, sample_tiff, tmp_path):
    path, truth = sample_tiff
    c = GatewayClient(emb.gateway_address)
    up = c.upload(path)
    assert up.image.calibration.pixel_size_nm == pytest.approx(2.5)
    assert up.image.calibration.source == "file:zeiss"
    assert up.image.specimen_rows == truth.shape[0] - 56
    again = c.upload(path)
    assert again.deduplicated and again.image.ref.key == up.image.ref.key
    events = []
    job = c.analyze([up.image.ref], ["synthetic_1"], common_pb2.AnalysisOptions(), progress=events.append)
    assert job.state == S.JOB_STATE_SUCCEEDED, job.message
    stages = [e.stage for e in events]
    for st in ("load", "segment", "measure", "classify", "report", "done"):
        assert st in stages
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == 1.0
    for name in ("report.html", "report.xlsx", "report.json", "summary.csv", "synthetic_1/labels.tif",
                 "synthetic_1/particles.csv", "synthetic_1/overlay.png"):
        assert name in job.outputs
    files = c.download_outputs(job, tmp_path / "out")
    labels = tifffile.imread(tmp_path / "out" / "synthetic_1" / "labels.tif")
    assert labels.shape == truth.shape and labels.dtype in (np.uint16, np.uint32)
    assert abs(int(labels.max()) - int(truth.max())) <= 2
    assert len(files) >= 10
    c.close()


def test_gateway_and_in_process_give_the_same_particle_table(emb, sample_tiff, tmp_path):
    """One pipeline: RemoteStages through the services and LocalStages in process write the same files."""
    from semforge.pipeline import analyze_paths

    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    c.analyze_files([path], tmp_path / "gw", sample="same")
    c.close()
    analyze_paths([str(path)], tmp_path / "local", title="semforge report: same")
    for name in ("synthetic_1/particles.csv", "summary.csv"):
        assert (tmp_path / "gw" / name).read_text() == (tmp_path / "local" / name).read_text(), name
    gw = tifffile.imread(tmp_path / "gw" / "synthetic_1" / "labels.tif")
    local = tifffile.imread(tmp_path / "local" / "synthetic_1" / "labels.tif")
    assert gw.dtype == local.dtype and np.array_equal(gw, local)


def test_second_replica_sees_and_watches_jobs(emb, sample_tiff):
    from semforge.rpc import build_server
    from semforge_gateway.server import GatewayConfig, register

    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    up = c.upload(path)
    job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(images=[up.image.ref])))
    job_id = job.job.job_id
    cfg = GatewayConfig(segment_addr=emb.servers["segment"].address, measure_addr=emb.servers["measure"].address,
                        classify_addr=emb.servers["classify"].address)
    add, orch = register(emb.store, cfg)
    other = build_server("gateway-2", add, cfg)
    try:
        with grpc.insecure_channel(other.address) as ch:
            s2 = gateway_pb2_grpc.GatewayServiceStub(ch)
            last = None
            for msg in s2.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=60):
                if msg.HasField("job"):
                    last = msg.job
            assert last.state == S.JOB_STATE_SUCCEEDED
            listed = [j.job_id for j in s2.ListJobs(gateway_pb2.ListJobsRequest(limit=50)).jobs]
            assert job_id in listed
            got = s2.GetJob(gateway_pb2.GetJobRequest(job_id=job_id)).job
            assert "report.html" in got.outputs
    finally:
        orch.stopping.set()
        other.stop(0)
        c.close()


def test_cancel(emb, sample_tiff):
    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    up = c.upload(path)
    job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(
        request=gateway_pb2.AnalyzeRequest(images=[up.image.ref] * 6, names=[f"n{i}" for i in range(6)]))).job
    c.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id)).job
        if j.state in (S.JOB_STATE_CANCELLED, S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED):
            break
        time.sleep(0.2)
    assert j.state == S.JOB_STATE_CANCELLED and j.images_done < 6
    c.close()


def test_cancel_through_another_replica_wins(emb, sample_tiff):
    """Cancel on replica 2 of a job that replica 1 runs: it stops and stays CANCELLED (replica 1's saves lose)."""
    from semforge.rpc import build_server
    from semforge_gateway.server import GatewayConfig, register

    path, _ = sample_tiff
    c = GatewayClient(emb.gateway_address)
    up = c.upload(path)
    job = c.stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(
        images=[up.image.ref] * 8, names=[f"r{i}" for i in range(8)]))).job
    cfg = GatewayConfig(segment_addr=emb.servers["segment"].address, measure_addr=emb.servers["measure"].address,
                        classify_addr=emb.servers["classify"].address)
    add, runner = register(emb.store, cfg)
    other = build_server("gateway-2", add, cfg)
    try:
        deadline = time.monotonic() + 60
        while c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id)).job.images_done < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with grpc.insecure_channel(other.address) as ch:
            got = gateway_pb2_grpc.GatewayServiceStub(ch).CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id))
        assert got.job.state == S.JOB_STATE_CANCELLED
        states = []
        for _ in range(20):  # replica 1 keeps working on its current image and saves: still CANCELLED
            states.append(c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id)).job.state)
            time.sleep(0.15)
        assert set(states) == {S.JOB_STATE_CANCELLED}
        deadline = time.monotonic() + 60  # the running replica itself stops at a stage boundary and records it
        while "JOB_STATE_CANCELLED" not in emb.store.get_bytes(f"jobs/{job.job_id}/job.json").decode():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        j = c.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id)).job
        assert j.images_done < 8 and "report.html" not in j.outputs
    finally:
        runner.close(0)
        other.stop(0)
        c.close()


# -- bad input and faults: precise status, actionable message, service keeps serving ------------------

def test_zero_byte_upload(emb, stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Upload(iter([gateway_pb2.UploadRequest(name="empty.tif")]), timeout=10)
    assert_status(e, grpc.StatusCode.INVALID_ARGUMENT, "empty")
    assert serving(emb)


def test_non_image_upload_is_rejected_and_not_kept(emb, stub):
    before = emb.store.list("blobs/")
    with pytest.raises(grpc.RpcError) as e:
        upload_bytes(stub, b"%PDF-1.4 definitely not a micrograph" * 100, name="notes.pdf")
    assert_status(e, grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image")
    assert emb.store.list("blobs/") == before
    assert serving(emb)


def test_truncated_tiff(emb, stub):
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(0).integers(0, 255, (512, 512), dtype=np.uint8))
    with pytest.raises(grpc.RpcError) as e:
        upload_bytes(stub, buf.getvalue()[:20000], name="cut.tif")
    assert_status(e, grpc.StatusCode.INVALID_ARGUMENT, "truncated")
    assert serving(emb)


def test_oversized_message(emb, stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Upload(iter([gateway_pb2.UploadRequest(name="big", data=b"\0" * (9 << 20))]), timeout=20)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert serving(emb)


def test_unknown_object_reference(emb, stub):
    ref = common_pb2.ObjectRef(key="blobs/sha256/" + "0" * 64)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Analyze(gateway_pb2.AnalyzeRequest(images=[ref]), timeout=10))
    assert_status(e, grpc.StatusCode.NOT_FOUND, "upload it first")
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Analyze(gateway_pb2.AnalyzeRequest(images=[common_pb2.ObjectRef(key="../../etc/passwd")]), timeout=10))
    assert_status(e, grpc.StatusCode.INVALID_ARGUMENT, "invalid object key")
    assert serving(emb)


def test_unknown_job(emb, stub):
    for call in (lambda: stub.GetJob(gateway_pb2.GetJobRequest(job_id="nope"), timeout=10),
                 lambda: stub.CancelJob(gateway_pb2.CancelJobRequest(job_id="nope"), timeout=10),
                 lambda: list(stub.Download(gateway_pb2.DownloadRequest(job_id="nope", name="report.html"), timeout=10))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert_status(e, grpc.StatusCode.NOT_FOUND, "no job")


def test_invalid_options(emb, stub, sample_tiff):
    path, _ = sample_tiff
    ref = GatewayClient(emb.gateway_address).upload(path).image.ref
    for opts, text in ((common_pb2.AnalysisOptions(pixel_size_nm=-2.0), "pixel_size_nm"),
                       (common_pb2.AnalysisOptions(modality=99), "modality"),
                       (common_pb2.AnalysisOptions(separation=42), "separation"),
                       (common_pb2.AnalysisOptions(specimen_rows=-5), "specimen_rows")):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Analyze(gateway_pb2.AnalyzeRequest(images=[ref], options=opts), timeout=10))
        assert_status(e, grpc.StatusCode.INVALID_ARGUMENT, text)
    assert serving(emb)


def test_rich_status_names_the_offending_field(emb, stub, sample_tiff):
    from semforge.rpc import bad_request_from

    path, _ = sample_tiff
    ref = GatewayClient(emb.gateway_address).upload(path).image.ref
    for opts, field in ((common_pb2.AnalysisOptions(modality=99), "options.modality"),
                        (common_pb2.AnalysisOptions(specimen_rows=-5), "options.specimen_rows"),
                        (common_pb2.AnalysisOptions(pixel_size_nm=-1), "options.pixel_size_nm")):
        with pytest.raises(grpc.RpcError) as e:
            stub.SubmitJob(gateway_pb2.SubmitJobRequest(request=gateway_pb2.AnalyzeRequest(images=[ref], options=opts)),
                           timeout=10)
        br = bad_request_from(e.value)
        assert br is not None and [v.field for v in br.field_violations] == [field], br
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_disconnect_mid_upload_leaves_no_object(emb, stub):
    before = emb.store.list("blobs/")
    sent = threading.Event()
    release = threading.Event()

    def gen():
        yield gateway_pb2.UploadRequest(name="slow.tif", data=b"II*\x00" + b"\1" * 500_000)
        sent.set()
        release.wait(10)
        yield gateway_pb2.UploadRequest(data=b"\2" * 500_000)

    fut = stub.Upload.future(gen(), timeout=30)
    assert sent.wait(10)
    time.sleep(0.3)
    fut.cancel()
    release.set()
    time.sleep(0.5)
    assert emb.store.list("blobs/") == before
    assert not list((emb.store.root / ".tmp").iterdir())
    assert serving(emb)


def test_stale_job_of_a_dead_replica_is_resumed(tmp_path, sample_tiff):
    """A job left RUNNING by a replica that died is picked up by another one and finished."""
    from semforge.jobs import JobStore

    path, _ = sample_tiff
    store = LocalStore(tmp_path / "store")
    first = start_embedded(store=store)
    c = GatewayClient(first.gateway_address)
    c.wait_ready(30)
    ref = c.upload(path).image.ref
    c.close()
    first.stop(0)  # the replica "dies" before running anything
    job = common_pb2.Job(job_id="deadbeef" * 4, state=S.JOB_STATE_RUNNING, created_at="2026-01-01T00:00:00+00:00",
                         updated_at="2026-01-01T00:00:00+00:00", images_total=1, sample="orphan")
    job.inputs.append(ref)
    job.input_names.append("orphan")
    JobStore(store).create(job)  # as the dead replica wrote it: record, index entries, active marker
    second = start_embedded(store=store, resume_after_s=1.0)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            j = second.orchestrator.load(job.job_id)
            if j.state == S.JOB_STATE_SUCCEEDED:
                break
            time.sleep(0.3)
        assert j.state == S.JOB_STATE_SUCCEEDED, j.message
        assert "orphan/particles.csv" in j.outputs
    finally:
        second.stop(0)
