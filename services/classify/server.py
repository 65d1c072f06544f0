"""classify service: the pipeline's classify stage behind gRPC (shape class per particle of a table reference).

Until a trained CNN classifier ships, the model is the rule-based one of the
analysis library (outline features); the response names it. ``image`` and
``labels`` are sent so that an image-based classifier can crop each particle.
"""

from __future__ import annotations

from collections import Counter

import grpc

from semforge.analysis import CONFIDENCE_LIMIT, MeasureOptions
from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
from semforge.errors import InvalidOption
from semforge.pipeline import AnalysisOptions, LocalStages, Measured, Prepared
from semforge.rpc import map_exceptions, run_service
from semforge.rpc.convert import get_table, modality_from_pb, put_table, ref_pb
from semforge.storage import ObjectStore


class ClassifyServicer(classify_pb2_grpc.ClassifyServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    @map_exceptions
    def Classify(self, request, context):
        if not request.particles.key:
            raise InvalidOption("particles reference is empty", field="particles")
        limit = request.confidence_limit or CONFIDENCE_LIMIT
        if not 0 < limit <= 1:
            raise InvalidOption(f"confidence_limit must be in (0, 1], got {request.confidence_limit}",
                                field="confidence_limit")
        modality = modality_from_pb(request.modality, field="modality")
        table = get_table(self.store, request.particles.key)
        prep = Prepared(name=table.image, calibration=table.calibration, specimen_rows=table.specimen_rows,
                        height=0, width=0, image=request.image)
        measured = Measured(table, request.labels, len(table.particles), len(table.included()))
        out = LocalStages().classify(prep, measured, AnalysisOptions(MeasureOptions(modality=modality.value)),
                                     confidence_limit=limit).table
        info = put_table(self.store, out)
        counts = Counter(p["shape"] for p in out.particles)
        return classify_pb2.ClassifyResponse(particles=ref_pb(info, "application/json"), model=out.classifier,
                                             counts=dict(counts))


def register(store: ObjectStore):
    def add(server: grpc.Server):
        classify_pb2_grpc.add_ClassifyServiceServicer_to_server(ClassifyServicer(store), server)
        return [classify_pb2.DESCRIPTOR.services_by_name["ClassifyService"].full_name]
    return add


def main() -> None:
    run_service("classify", register)


if __name__ == "__main__":
    main()
