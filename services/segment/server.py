"""segment service: the pipeline's segment stage behind gRPC (foreground mask from an image reference)."""

from __future__ import annotations

import math
import time

import grpc

from semforge.analysis import Calibration, MeasureOptions, load_image, to_gray_float
from semforge.errors import InvalidOption
from semforge.inference import DEFAULT_SEGMENTER, create_segmenter
from semforge.pipeline import AnalysisOptions, LocalStages, Prepared
from semforge.rpc import env_str, map_exceptions, run_service
from semforge.rpc.convert import confidence_pb, modality_from_pb, put_mask, put_probability, ref_pb
from semforge.segment.v1 import segment_pb2, segment_pb2_grpc
from semforge.storage import ObjectStore

DEFAULT_MODEL = DEFAULT_SEGMENTER


class SegmentServicer(segment_pb2_grpc.SegmentServiceServicer):
    def __init__(self, store: ObjectStore, default_model: str = DEFAULT_MODEL):
        self.store = store
        self.default_model = default_model
        self._models = {default_model: create_segmenter(default_model)}

    def ready(self) -> bool:
        model = self._models[self.default_model]
        return bool(model.ready()) if hasattr(model, "ready") else True

    def _model(self, name: str):
        name = name or self.default_model
        if name not in self._models:
            self._models[name] = create_segmenter(name)  # InvalidOption lists the valid names
        return name, self._models[name]

    @map_exceptions
    def Segment(self, request, context):
        if not request.image.key:
            raise InvalidOption("image reference is empty", field="image")
        t0 = time.perf_counter()
        modality = modality_from_pb(request.modality, field="modality")
        chosen = {}  # an explicit threshold; unset: the one recommended for the model and the modality
        if request.HasField("threshold"):
            if not (math.isfinite(request.threshold) and 0 < request.threshold < 1):
                raise InvalidOption(f"threshold must be in (0, 1), got {request.threshold}", field="threshold")
            chosen["threshold"] = request.threshold
        name, model = self._model(request.model)
        gray = to_gray_float(load_image(self.store.get_bytes(request.image.key), name=request.image.key).pixels)
        h, w = gray.shape
        rows = request.specimen_rows or h
        if not 0 < rows <= h:
            raise InvalidOption(f"specimen_rows must be in 1..{h}, got {request.specimen_rows}", field="specimen_rows")
        prep = Prepared(name=request.image.key, calibration=Calibration(None, "none"), specimen_rows=rows,
                        height=h, width=w, gray=gray)
        out = LocalStages(model).segment(prep, AnalysisOptions(MeasureOptions(modality=modality.value, **chosen),
                                                               segmenter=name))
        info = put_mask(self.store, out.mask)
        # the quantised probability for the measure stage's per-particle seg_confidence (#16), by reference
        prob = {} if out.probability is None else {
            "probability": ref_pb(put_probability(self.store, out.probability), "image/png")}
        return segment_pb2.SegmentResponse(mask=ref_pb(info, "image/png"), model=name, threshold=out.threshold,
                                           confidence=confidence_pb(out.confidence),
                                           model_version=out.model_version, seconds=time.perf_counter() - t0,
                                           **prob)


def register(store: ObjectStore, model: str = DEFAULT_MODEL):
    servicer = SegmentServicer(store, model)

    def add(server: grpc.Server):
        segment_pb2_grpc.add_SegmentServiceServicer_to_server(servicer, server)
        return [segment_pb2.DESCRIPTOR.services_by_name["SegmentService"].full_name]
    add.ready = servicer.ready  # type: ignore[attr-defined]
    return add


def main() -> None:
    holder = {}

    def reg(store):
        holder["add"] = register(store, env_str("SEGMENT_MODEL", DEFAULT_MODEL))
        return holder["add"]

    # NOT_SERVING until the model answers (with Triton: until the server has loaded the models)
    run_service("segment", reg, ready_check=lambda: holder["add"].ready())


if __name__ == "__main__":
    main()
