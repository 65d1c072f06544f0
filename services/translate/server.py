"""translate service: CycleGAN height map -> SEM-like image, content-checked (thin adapter over semforge.training.translation).

Translators live under ``SEMFORGE_TRANSLATORS`` (default ``out/translators``) as
``<name>/generator.pt`` (``semforge train translator``); they are trained on a
facility's own real images and are not shipped. Health is NOT_SERVING while
the default translator is missing; calls then answer FAILED_PRECONDITION.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import grpc
import numpy as np
import tifffile

from semforge.rpc import RpcAbort, env_str, map_exceptions, run_service
from semforge.rpc.convert import put_png, ref_pb
from semforge.storage import ObjectStore
from semforge.translate.v1 import translate_pb2, translate_pb2_grpc


def translators_dir() -> Path:
    return Path(os.environ.get("SEMFORGE_TRANSLATORS", "out/translators"))


class TranslateServicer(translate_pb2_grpc.TranslateServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store
        self._gens: dict = {}
        self._seg = None

    def _generator(self, name: str):
        from semforge.training.translation.train import load_generator

        name = name or "default"
        if "/" in name or name.startswith("."):
            raise ValueError(f"invalid translator name {name!r}")
        if name not in self._gens:
            try:
                self._gens[name] = load_generator(translators_dir() / name)[0]
            except FileNotFoundError as exc:
                raise RpcAbort(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        return self._gens[name]

    @map_exceptions
    def Translate(self, request, context):
        from semforge.training.translation.content_check import check_translated
        from semforge.training.translation.train import translate

        if not request.height_map.key:
            raise ValueError("height_map reference is empty")
        gen = self._generator(request.model)
        try:
            height = tifffile.imread(io.BytesIO(self.store.get_bytes(request.height_map.key))).astype(np.float32)
        except (ValueError, tifffile.TiffFileError) as exc:
            raise ValueError(f"height_map is not a float TIFF height map: {exc}") from None
        if height.ndim != 2:
            raise ValueError(f"height_map must be 2-D, got shape {height.shape}")
        img = translate(gen, height)
        info = put_png(self.store, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        resp = translate_pb2.TranslateResponse(image=ref_pb(info, "image/png"))
        if request.instances.key:
            try:
                ids = tifffile.imread(io.BytesIO(self.store.get_bytes(request.instances.key))).astype(np.int32)
            except (ValueError, tifffile.TiffFileError) as exc:
                raise ValueError(f"instances is not an instance-label TIFF: {exc}") from None
            c = check_translated(self._segmenter(), img, ids)
            resp.accepted, resp.foreground_iou, resp.particle_recall = c["accepted"], c["foreground_iou"], c["particle_recall"]
            resp.invented_fraction, resp.split, resp.merged = c["invented_fraction"], c["split"], c["merged"]
            resp.content_score = c["foreground_iou"] * c["particle_recall"]
            resp.reasons.extend(c["reasons"])
        return resp

    def _segmenter(self):
        if self._seg is None:
            from semforge.inference import create_segmenter

            self._seg = create_segmenter("unetpp")
        return self._seg

    @map_exceptions
    def TranslateBatch(self, request, context):
        import queue
        import threading

        from semforge.training.translation.apply import translate_dataset
        from semforge.training.translation.content_check import CheckThresholds

        if not request.dataset or not request.out_dataset:
            raise ValueError("dataset and out_dataset must both be named")
        for name in ("min_foreground_iou", "min_particle_recall", "max_invented_fraction"):
            if not 0 <= getattr(request, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1] (0 = default), got {getattr(request, name)}")
        d = CheckThresholds()
        th = CheckThresholds(min_foreground_iou=request.min_foreground_iou or d.min_foreground_iou,
                             min_particle_recall=request.min_particle_recall or d.min_particle_recall,
                             max_invented_fraction=request.max_invented_fraction or d.max_invented_fraction)
        gen = self._generator(request.model)
        seg = self._segmenter()
        events: queue.Queue = queue.Queue()
        result: dict = {}

        def work():
            try:
                result["summary"] = translate_dataset(
                    gen, self.store, request.dataset, request.out_dataset, segmenter=seg, thresholds=th,
                    progress=lambda done, total, c: events.put((done, total, c)),
                    cancelled=lambda: not context.is_active())
            except BaseException as exc:  # handed to the RPC thread, which maps it to a status
                result["error"] = exc
            finally:
                events.put(None)

        threading.Thread(target=work, name="translate-batch", daemon=True).start()
        pending, accepted = None, 0
        while (ev := events.get()) is not None:
            if pending is not None:
                yield pending
            done, total, c = ev
            accepted += bool(c["accepted"])
            pending = translate_pb2.TranslateBatchResponse(
                scene=c["scene"].rsplit("/", 1)[-1], scenes_done=done, scenes_total=total, skipped=c["skipped"],
                accepted=c["accepted"], foreground_iou=c["foreground_iou"], particle_recall=c["particle_recall"],
                image=ref_pb(self.store.stat(c["prefix"] + "translated.png"), "image/png"),
                accepted_so_far=accepted)
            pending.reasons.extend(c["reasons"])
        if "error" in result:
            raise result["error"]
        if pending is not None:  # the last scene's message also carries the summary
            key = f"datasets/{request.out_dataset}/content_check.json"
            pending.summary.CopyFrom(ref_pb(self.store.stat(key), "application/json"))
            pending.rejection_rate = result["summary"]["rejection_rate"]
            yield pending


def register(store: ObjectStore):
    def add(server: grpc.Server):
        translate_pb2_grpc.add_TranslateServiceServicer_to_server(TranslateServicer(store), server)
        return [translate_pb2.DESCRIPTOR.services_by_name["TranslateService"].full_name]
    return add


def ready() -> bool:
    return (translators_dir() / env_str("TRANSLATE_MODEL", "default") / "generator.pt").exists()


def main() -> None:
    run_service("translate", register, ready_check=ready)


if __name__ == "__main__":
    main()
