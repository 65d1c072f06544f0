"""The pipeline's stages through the services: images, masks, tables and labels travel as object references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..pipeline import AnalysisOptions, ImageOutcome, Measured, Prepared, Segmented, describe_image, prepare_facts
from ..storage import ObjectNotFound, ObjectStore
from .convert import (analysis_options_pb, calibration_pb, confidence_from_pb, confidence_pb, get_facts, modality_pb,
                      put_facts)

__all__ = ["ServiceStubs", "RemoteStages", "image_facts"]


@dataclass
class ServiceStubs:
    """gRPC stubs of the stage services (shared by every job of a gateway)."""

    segment: Any
    measure: Any
    classify: Any
    timeout_s: float | None = None  # deadline of every call (None: none)

    @classmethod
    def connect(cls, segment_addr: str, measure_addr: str, classify_addr: str, *, max_message_mb: int = 64,
                channel=None, timeout_s: float | None = None):
        """``channel(address, options=...)`` opens each channel (default plaintext; the gateway passes
        :func:`semforge.security.service_channel`, which carries its service identity and TLS)."""
        import grpc

        from semforge.classify.v1 import classify_pb2_grpc
        from semforge.measure.v1 import measure_pb2_grpc
        from semforge.segment.v1 import segment_pb2_grpc

        channel = channel or grpc.insecure_channel
        opts = [("grpc.max_receive_message_length", max_message_mb << 20)]
        return cls(segment_pb2_grpc.SegmentServiceStub(channel(segment_addr, options=opts)),
                   measure_pb2_grpc.MeasureServiceStub(channel(measure_addr, options=opts)),
                   classify_pb2_grpc.ClassifyServiceStub(channel(classify_addr, options=opts)), timeout_s)


def image_facts(store: ObjectStore, key: str, *, name: str = ""):
    """The facts of a stored image: from its record (written at upload), else by decoding it once now."""
    try:
        return get_facts(store, key)
    except ObjectNotFound:
        from ..analysis import load_image

        facts = describe_image(load_image(store.get_bytes(key), name=name or key))
        put_facts(store, key, facts, name)
        return facts, name


class RemoteStages:
    """:class:`semforge.pipeline.Stages` over gRPC. ``prepare`` reads the image's facts recorded at upload
    (no decoding here); the report is written by the measure service under ``output_prefix``."""

    def __init__(self, store: ObjectStore, stubs: ServiceStubs, *, output_prefix: str = ""):
        self.store, self.stubs, self.output_prefix = store, stubs, output_prefix

    def prepare(self, ref, name: str, options: AnalysisOptions) -> Prepared:
        facts, _ = image_facts(self.store, ref.key, name=name)
        return prepare_facts(facts, name, options, image=ref)

    def segment(self, prep: Prepared, options: AnalysisOptions) -> Segmented:
        from semforge.segment.v1 import segment_pb2

        r = self.stubs.segment.Segment(segment_pb2.SegmentRequest(
            image=prep.image, modality=modality_pb(options.measure.modality), specimen_rows=prep.specimen_rows,
            model=options.segmenter or "", threshold=options.measure.threshold), timeout=self.stubs.timeout_s)
        return Segmented(r.mask, r.model, r.threshold or None, confidence_from_pb(r.confidence,
                                                                                  r.HasField("confidence")),
                         r.model_version, r.probability if r.HasField("probability") else None)

    def measure(self, prep: Prepared, segmented: Segmented, options: AnalysisOptions) -> Measured:
        from semforge.measure.v1 import measure_pb2

        r = self.stubs.measure.Measure(measure_pb2.MeasureRequest(
            mask=segmented.mask, image_name=prep.name, calibration=calibration_pb(prep.calibration),
            specimen_rows=prep.specimen_rows, options=analysis_options_pb(options), segmenter=segmented.segmenter,
            threshold=segmented.threshold or 0.0, confidence=confidence_pb(segmented.confidence), image=prep.image,
            model_version=segmented.model_version, probability=segmented.probability),
            timeout=self.stubs.timeout_s)
        return Measured(table=r.particles, labels=r.labels, count=r.count, included=r.included)

    def classify(self, prep: Prepared, measured: Measured, options: AnalysisOptions) -> Measured:
        from semforge.classify.v1 import classify_pb2

        r = self.stubs.classify.Classify(classify_pb2.ClassifyRequest(
            particles=measured.table, image=prep.image, labels=measured.labels,
            modality=modality_pb(options.measure.modality)), timeout=self.stubs.timeout_s)
        return Measured(table=r.particles, labels=measured.labels, count=measured.count, included=measured.included)

    def report(self, outcomes: list[ImageOutcome], options: AnalysisOptions, *, title: str,
               warn=None) -> dict[str, Any]:
        from semforge.measure.v1 import measure_pb2

        req = measure_pb2.ReportRequest(title=title, output_prefix=self.output_prefix,
                                        options=analysis_options_pb(options))
        for o in outcomes:
            req.images.add(name=o.prepared.name, image=o.prepared.image, labels=o.measured.labels,
                           particles=o.measured.table)
        resp = self.stubs.measure.Report(req, timeout=self.stubs.timeout_s)
        if warn is not None:  # the sample's plausibility warnings (#13), as the measure service found them
            from ..analysis import Warning_

            for w in resp.warnings:
                warn(Warning_(w.code, w.image, w.message))
        return dict(resp.outputs)


