"""classify service: the pipeline's classify stage behind gRPC (shape class of every particle from its crop).

Reads the particle table, the image and the label image by reference (as
measure wrote them), and runs :meth:`semforge.pipeline.LocalStages.classify`
with the configured classifier (``CLASSIFY_MODEL``: ``cnn`` in process by
default, ``cnn-triton`` with ``TRITON_URL``, or ``rules-v1``): every particle
is cropped and the crops classified in batches; the table comes back with
``shape``, ``shape_confidence``, the shape's dimensions, and covered /
agglomerated particles excluded (kept, with the reason). NOT_SERVING until the
classifier's model is ready.
"""

from __future__ import annotations

from collections import Counter

import grpc

from semforge.analysis import CONFIDENCE_LIMIT, MeasureOptions, load_image, to_gray_float
from semforge.classification import DEFAULT_CLASSIFIER, create_classifier
from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
from semforge.errors import InvalidOption
from semforge.pipeline import AnalysisOptions, LocalStages, Measured, Prepared
from semforge.rpc import env_str, map_exceptions, run_service
from semforge.rpc.convert import get_array, get_table, modality_from_pb, put_table, ref_pb
from semforge.storage import ObjectStore


class ClassifyServicer(classify_pb2_grpc.ClassifyServiceServicer):
    def __init__(self, store: ObjectStore, model: str = DEFAULT_CLASSIFIER):
        self.store = store
        self.classifier = create_classifier(model)  # ValueError lists the valid names
        self.stages = LocalStages(classifier=self.classifier)

    def ready(self) -> bool:
        return bool(self.classifier.ready())

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
        gray = labels = None
        if self.classifier.name != "rules-v1":
            if not (request.image.key and request.labels.key):
                raise InvalidOption(f"classifier {self.classifier.name} needs the image and labels references",
                                    field="image" if not request.image.key else "labels")
            try:
                gray = to_gray_float(load_image(self.store.get_bytes(request.image.key),
                                                name=request.image.key).pixels)
                labels = get_array(self.store, request.labels.key)
            except ValueError as exc:
                raise InvalidOption(f"image or labels unreadable: {exc}", field="image") from None
            if labels.ndim == 3:
                labels = labels[..., 0]
            if labels.shape != gray.shape:
                raise InvalidOption(f"labels {labels.shape} and image {gray.shape} differ in size", field="labels")
        prep = Prepared(name=table.image, calibration=table.calibration, specimen_rows=table.specimen_rows,
                        height=0, width=0, image=request.image, gray=gray)
        measured = Measured(table, labels if labels is not None else request.labels, len(table.particles),
                            len(table.included()))
        out = self.stages.classify(prep, measured, AnalysisOptions(MeasureOptions(modality=modality.value)),
                                   confidence_limit=limit).table
        info = put_table(self.store, out)
        counts = Counter(p["shape"] for p in out.particles)
        return classify_pb2.ClassifyResponse(particles=ref_pb(info, "application/json"), model=out.classifier,
                                             counts=dict(counts))


def register(store: ObjectStore, model: str | None = None):
    servicer = ClassifyServicer(store, model or env_str("CLASSIFY_MODEL", DEFAULT_CLASSIFIER))

    def add(server: grpc.Server):
        classify_pb2_grpc.add_ClassifyServiceServicer_to_server(servicer, server)
        return [classify_pb2.DESCRIPTOR.services_by_name["ClassifyService"].full_name]
    add.ready = servicer.ready  # type: ignore[attr-defined]
    return add


def main() -> None:
    holder = {}

    def reg(store):
        holder["add"] = register(store)
        return holder["add"]

    # NOT_SERVING until the classifier answers (with Triton: until the server has loaded the models)
    run_service("classify", reg, ready_check=lambda: holder["add"].ready())


if __name__ == "__main__":
    main()
