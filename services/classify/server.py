"""classify service: shape class of every particle from its crop (adapter over semforge.classification).

Reads the image and the label image by reference (as measure wrote it), crops
every particle, classifies the crops in batches with the configured classifier
(``CLASSIFY_MODEL``: ``cnn`` in process by default, ``cnn-triton`` with
``TRITON_URL``, or ``rules-v1``), and writes the particle table back with
``shape``, ``shape_confidence``, the shape's dimensions, and covered /
agglomerated particles excluded (kept, with the reason).  NOT_SERVING until
the classifier's model is ready.
"""

from __future__ import annotations

import grpc
import numpy as np

from semforge.analysis import CONFIDENCE_LIMIT, load_image, to_gray_float
from semforge.classification import DEFAULT_CLASSIFIER, apply_classes, create_classifier
from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
from semforge.rpc import env_str, map_exceptions, run_service
from semforge.rpc._convert import get_array, get_json, modality_name, put_json, ref_pb
from semforge.storage import ObjectStore


class ClassifyServicer(classify_pb2_grpc.ClassifyServiceServicer):
    def __init__(self, store: ObjectStore, model: str = DEFAULT_CLASSIFIER):
        self.store = store
        self.classifier = create_classifier(model)  # ValueError lists the valid names

    def ready(self) -> bool:
        return bool(self.classifier.ready())

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
        if request.image.key and request.labels.key:
            img = load_image(self.store.get_bytes(request.image.key), name=request.image.key)
            gray = to_gray_float(img.pixels)
            labels = get_array(self.store, request.labels.key)
            if labels.ndim == 3:
                labels = labels[..., 0]
            if labels.shape != gray.shape:
                raise ValueError(f"labels {labels.shape} and image {gray.shape} differ in size")
        elif self.classifier.name != "rules-v1":
            raise ValueError(f"classifier {self.classifier.name} needs the image and labels references")
        else:
            gray = labels = np.zeros((1, 1), np.float32)
        results = self.classifier.classify(gray, labels, doc["particles"], modality=modality, unit=unit,
                                           confidence_limit=limit)
        counts = apply_classes(doc["particles"], results, unit)
        doc["classifier"] = self.classifier.name
        info = put_json(self.store, doc)
        return classify_pb2.ClassifyResponse(particles=ref_pb(info, "application/json"), model=self.classifier.name,
                                             counts=counts)


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
