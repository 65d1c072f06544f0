"""The render service over gRPC on 127.0.0.1 with a real S3 store: scenes, batches, errors, health."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semforge.render.v1 import render_pb2, render_pb2_grpc
from semforge.rpc import ServiceConfig, build_server, error_detail_from
from semforge_render.server import ready, register

R = render_pb2


@pytest.fixture
def render(s3_server):
    store = s3_server.store()
    srv = build_server("render", register(store, workers=2), ServiceConfig(port=0, host="127.0.0.1"),
                       ready_check=lambda: store.ping() is None and ready(), check_interval_s=0.2)
    ch = grpc.insecure_channel(srv.address)
    yield render_pb2_grpc.RenderServiceStub(ch), store, ch
    ch.close()
    srv.stop(0)


def small(**kw):
    base = dict(particles=20, size_px=96, pixel_size_nm=3.0, seed=3, shapes=["sphere", "cube"], size_nm=30,
                sd_nm=3, frames=40)
    base.update(kw)
    return R.SceneSpec(**base)


def test_render_scene_into_s3_and_repeat_is_free(render):
    stub, store, ch = render
    import time

    deadline = time.monotonic() + 15  # the readiness probe runs in the background
    while health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status != \
            health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "render never became SERVING"
        time.sleep(0.1)
    r = stub.RenderScene(R.RenderSceneRequest(spec=small()), timeout=120)
    assert set(r.outputs) >= {"height.tif", "instances.tif", "mask.png", "borders.png", "scene.json", "se.png"}
    info = json.loads(store.get_bytes(r.outputs["scene.json"].key))
    assert len(info["particles"]) == 20 and info["spec"]["seed"] == 3
    assert r.outputs["mask.png"].content_type == "image/png" and r.outputs["mask.png"].size_bytes > 0
    again = stub.RenderScene(R.RenderSceneRequest(spec=small()), timeout=10)
    assert again.outputs["instances.tif"].key == r.outputs["instances.tif"].key


def test_render_batch_streams_one_message_per_scene_and_resumes(render):
    stub, store, _ = render
    req = R.RenderBatchRequest(spec=small(no_borders=True), scenes=3, dataset="svc-test", workers=2)
    msgs = list(stub.RenderBatch(req, timeout=300))
    assert sorted(m.scene_index for m in msgs) == [0, 1, 2]
    assert [m.scenes_done for m in msgs] == [1, 2, 3]
    manifest = json.loads(store.get_bytes(msgs[-1].manifest.key))
    assert manifest["complete"] and len(manifest["entries"]) == 3
    again = list(stub.RenderBatch(req, timeout=60))
    assert len(again) == 3 and all(m.skipped for m in again)


@pytest.mark.parametrize("spec,text", [
    (small(shapes=["blob"]), "unknown shape 'blob'"),
    (small(particles=-3), "particles must be"),
    (small(size_px=8), "size_px must be"),
    (small(pixel_size_nm=-1), "pixel_size_nm must be"),
])
def test_bad_specs_are_invalid_argument(render, spec, text):
    stub, _, _ = render
    with pytest.raises(grpc.RpcError) as e:
        stub.RenderScene(R.RenderSceneRequest(spec=spec), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.value.details()
    assert error_detail_from(e.value).code == "INVALID_ARGUMENT"


def test_bad_batch_requests(render):
    stub, _, _ = render
    for req, text in ((R.RenderBatchRequest(spec=small(), scenes=0, dataset="x"), "scenes must be"),
                      (R.RenderBatchRequest(spec=small(), scenes=1, dataset=""), "dataset name is empty"),
                      (R.RenderBatchRequest(spec=small(), scenes=1, dataset="../up"), "invalid object key")):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.RenderBatch(req, timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert text in e.value.details()


def test_without_blender_the_service_says_so(render, monkeypatch, tmp_path):
    stub, _, _ = render
    monkeypatch.setenv("SEMFORGE_BLENDER_PYTHON", str(tmp_path / "missing"))
    assert not ready()
    with pytest.raises(grpc.RpcError) as e:
        stub.RenderScene(R.RenderSceneRequest(spec=small(seed=99)), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "SEMFORGE_BLENDER_PYTHON" in e.value.details()
