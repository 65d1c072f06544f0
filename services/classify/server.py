"""classify service: shape class per particle (adapter over semforge.analysis.classify_shape).

Until a trained CNN classifier ships, the model is the rule-based one of
the analysis library (outline features); the response names it.
"""

from __future__ import annotations

import grpc

from semforge.analysis import CONFIDENCE_LIMIT, classify_shape, shape_dimensions
from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
from semforge.rpc import map_exceptions, run_service
from semforge.rpc._convert import get_json, modality_name, put_json, ref_pb
from semforge.storage import ObjectStore


class ClassifyServicer(classify_pb2_grpc.ClassifyServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    @map_exceptions
    def Classify(self, request, context):
        if not request.particles.key:
            raise ValueError("particles reference is empty")
        limit = request.confidence_limit or CONFIDENCE_LIMIT
        if not 0 < limit <= 1:
            raise ValueError(f"confidence_limit must be in (0, 1], got {request.confidence_limit}")
        modality = modality_name(request.modality)
        doc = get_json(self.store, request.particles.key)
        unit = doc["unit"]
        counts: dict[str, int] = {}
        for row in doc["particles"]:
            shape, conf = classify_shape(row, modality=modality, unit=unit, confidence_limit=limit)
            row["shape"], row["shape_confidence"] = shape, conf
            row.update(shape_dimensions(row, shape, unit))
            counts[shape] = counts.get(shape, 0) + 1
        info = put_json(self.store, doc)
        return classify_pb2.ClassifyResponse(particles=ref_pb(info, "application/json"), model="rules-v1",
                                             counts=counts)


def register(store: ObjectStore):
    def add(server: grpc.Server):
        classify_pb2_grpc.add_ClassifyServiceServicer_to_server(ClassifyServicer(store), server)
        return [classify_pb2.DESCRIPTOR.services_by_name["ClassifyService"].full_name]
    return add


def main() -> None:
    run_service("classify", register)


if __name__ == "__main__":
    main()
