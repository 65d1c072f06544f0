"""render service: headless Blender scenes into the object store (thin adapter over semforge.training.scenes).

Blender runs in worker processes of its own Python (``SEMFORGE_BLENDER_PYTHON``,
default ``.venv-blender``); health is NOT_SERVING while that Python is missing.
"""

from __future__ import annotations

import hashlib
import os

import grpc

from semforge.render.v1 import render_pb2, render_pb2_grpc
from semforge.rpc import RpcAbort, env_int, map_exceptions, run_service
from semforge.rpc.convert import ref_pb
from semforge.training.scenes import SCENE_FILES, RenderError, RenderUnavailable, SceneSpec, ShapeComponent
from semforge.training.scenes import blender_python, render_batch, render_scene
from semforge.storage import ObjectStore

_CONTENT_TYPES = {".tif": "image/tiff", ".png": "image/png", ".json": "application/json"}
_DISTRIBUTIONS = {0: "normal", 1: "normal", 2: "lognormal"}


def spec_from_pb(pb) -> SceneSpec:
    """Proto SceneSpec -> library SceneSpec (zero values mean the defaults); raises ValueError."""
    d = SceneSpec()
    size_nm = pb.size_nm or 40.0
    sd_nm = pb.sd_nm if pb.sd_nm or pb.size_nm else 4.0
    if pb.components:
        comps = []
        for c in pb.components:
            if c.distribution not in _DISTRIBUTIONS:
                raise ValueError(f"unknown size distribution {c.distribution}")
            comps.append(ShapeComponent(c.shape, c.fraction or 1.0, c.size_nm or size_nm, c.sd_nm,
                                        _DISTRIBUTIONS[c.distribution], c.aspect or None))
    else:
        comps = [ShapeComponent(s, 1.0, size_nm, sd_nm) for s in (pb.shapes or ["sphere"])]
    spec = SceneSpec(particles=pb.particles or d.particles, size_px=pb.size_px or d.size_px,
                     pixel_size_nm=pb.pixel_size_nm or d.pixel_size_nm, seed=pb.seed, components=comps,
                     frames=pb.frames or d.frames, borders=not pb.no_borders, cluster=pb.cluster)
    spec.validate()
    return spec


def _content_type(name: str) -> str:
    return _CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, store: ObjectStore, workers: int = 0):
        self.store = store
        self.workers = workers or None

    def _refs(self, prefix: str) -> dict:
        return {name: ref_pb(self.store.stat(prefix + name), _content_type(name)) for name in SCENE_FILES}

    @staticmethod
    def _guard(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except RenderUnavailable as exc:
            raise RpcAbort(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        except RenderError as exc:
            raise RpcAbort(grpc.StatusCode.INTERNAL, str(exc)) from None

    @map_exceptions
    def RenderScene(self, request, context):
        spec = spec_from_pb(request.spec)
        # the same spec always gives the same scene: its hash names it, a repeat is free
        prefix = f"scenes/{hashlib.sha256(spec.to_json().encode()).hexdigest()[:24]}/"
        if not self.store.exists(prefix + "scene.json"):
            files = self._guard(render_scene, spec)
            for name in SCENE_FILES:  # scene.json last
                self.store.put_bytes(prefix + name, files[name])
        return render_pb2.RenderSceneResponse(outputs=self._refs(prefix))

    @map_exceptions
    def RenderBatch(self, request, context):
        spec = spec_from_pb(request.spec)
        if not 1 <= request.scenes <= 100000:
            raise ValueError(f"scenes must be 1..100000, got {request.scenes}")
        if not request.dataset:
            raise ValueError("dataset name is empty")
        import queue
        import threading

        events: queue.Queue = queue.Queue()
        result: dict = {}

        def work():
            try:
                result["manifest"] = self._guard(
                    render_batch, spec, request.scenes, self.store, request.dataset,
                    workers=request.workers or self.workers,
                    progress=lambda done, total, info: events.put((done, total, info)),
                    cancelled=lambda: not context.is_active())
            except BaseException as exc:  # handed to the RPC thread, which maps it to a status
                result["error"] = exc
            finally:
                events.put(None)

        threading.Thread(target=work, name="render-batch", daemon=True).start()
        manifest_key = f"datasets/{request.dataset}/manifest.json"
        resumed_sent = False
        while (ev := events.get()) is not None:
            done, total, info = ev
            if "resumed" in info:
                if resumed_sent:
                    continue
                resumed_sent = True
                for i in range(total):
                    prefix = f"datasets/{request.dataset}/scene_{i:05d}/"
                    if info["resumed"] and self.store.exists(prefix + "scene.json"):
                        yield render_pb2.RenderBatchResponse(scene_index=i, scenes_total=total, skipped=True,
                                                             scenes_done=done, outputs=self._refs(prefix))
                continue
            yield render_pb2.RenderBatchResponse(scene_index=info["index"], scenes_total=total, scenes_done=done,
                                                 outputs=self._refs(info["prefix"]),
                                                 manifest=ref_pb(self.store.stat(manifest_key), "application/json"))
        if "error" in result:
            raise result["error"]


def register(store: ObjectStore, workers: int = 0):
    def add(server: grpc.Server):
        render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(store, workers), server)
        return [render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name]
    return add


def ready() -> bool:
    """Serving only where Blender's Python exists."""
    try:
        blender_python()
        return True
    except RenderUnavailable:
        return False


def main() -> None:
    run_service("render", lambda store: register(store, env_int("RENDER_WORKERS", 0)), ready_check=ready)


if __name__ == "__main__":
    main()
