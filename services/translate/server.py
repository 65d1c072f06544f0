"""translate service: CycleGAN height map -> SEM-like image, content-checked (thin adapter over semforge.translation).

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
from semforge.rpc._convert import put_png, ref_pb
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
        from semforge.translation.train import load_generator

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
        from semforge.translation.content_check import content_check
        from semforge.translation.train import translate

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
            ids = tifffile.imread(io.BytesIO(self.store.get_bytes(request.instances.key))).astype(np.int32)
            if self._seg is None:
                from semforge.inference import create_segmenter

                self._seg = create_segmenter("unetpp")
            c = content_check(self._seg.predict(img, modality="se"), ids)
            resp.accepted, resp.foreground_iou, resp.particle_recall = c["accepted"], c["foreground_iou"], c["particle_recall"]
            resp.invented_fraction, resp.split, resp.merged = c["invented_fraction"], c["split"], c["merged"]
            resp.content_score = c["foreground_iou"] * c["particle_recall"]
            resp.reasons.extend(c["reasons"])
        return resp


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
