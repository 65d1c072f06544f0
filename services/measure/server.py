"""measure service: the pipeline's measure stage (cleaning, separation, morphometry of a mask reference) and the
report stage (per-image files and the sample report) behind gRPC."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import grpc

from semforge.analysis import load_image, to_gray_float
from semforge.errors import InvalidOption
from semforge.measure.v1 import measure_pb2, measure_pb2_grpc
from semforge.pipeline import AnalysisOptions, ImageOutcome, LocalStages, Measured, Prepared, Segmented
from semforge.pipeline import effective_postprocess
from semforge.rpc import map_exceptions, run_service
from semforge.rpc.convert import (analysis_options_from_pb, calibration_from_pb, confidence_from_pb, get_array,
                                  get_probability, get_table, measure_options_from_pb, put_labels, put_table, ref_pb)
from semforge.storage import ObjectStore, validate_key


class MeasureServicer(measure_pb2_grpc.MeasureServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    @map_exceptions
    def Measure(self, request, context):
        if not request.mask.key:
            raise InvalidOption("mask reference is empty", field="mask")
        opts = AnalysisOptions(measure_options_from_pb(request.options), segmenter=request.options.segmenter or None)
        if request.threshold and not 0 < request.threshold < 1:
            raise InvalidOption(f"threshold must be in (0, 1), got {request.threshold}", field="threshold")
        seg = Segmented(None, request.segmenter or opts.segmenter or "", request.threshold or None,
                        confidence_from_pb(request.confidence, request.HasField("confidence")), request.model_version)
        mask = get_array(self.store, request.mask.key)
        if mask.ndim == 3:
            mask = mask[..., 0]
        h, w = mask.shape
        seg.mask = mask > 0
        if request.probability.key:  # the segment stage's quantised probability: per-particle seg_confidence (#16)
            seg.probability = get_probability(self.store, request.probability.key, (h, w))
        gray = None
        if effective_postprocess(opts, seg.segmenter, seg.threshold).needs_image:  # contrast filter, refinement
            if not request.image.key:
                raise InvalidOption("the contrast filter (min_contrast) and the boundary refinement (refine_px) "
                                    "need the image reference", field="image")
            gray = to_gray_float(load_image(self.store.get_bytes(request.image.key), name=request.image.key).pixels)
            if gray.shape != (h, w):
                raise InvalidOption(f"image {gray.shape} and mask {(h, w)} differ in size", field="image")
        prep = Prepared(name=request.image_name or "image", calibration=calibration_from_pb(request.calibration),
                        specimen_rows=request.specimen_rows or h, height=h, width=w, gray=gray)
        m = LocalStages().measure(prep, seg, opts)
        labels = put_labels(self.store, m.labels, prep.calibration)  # labels.tif as in process, calibrated
        table = put_table(self.store, m.table)
        return measure_pb2.MeasureResponse(labels=ref_pb(labels, "image/tiff"),
                                           particles=ref_pb(table, "application/json"),
                                           count=m.count, included=m.included)

    @map_exceptions
    def Report(self, request, context):
        if not request.images:
            raise InvalidOption("no images to report", field="images")
        prefix = request.output_prefix
        if prefix:
            validate_key(prefix.rstrip("/"))
        opts = analysis_options_from_pb(request.options)
        outcomes = []
        for im in request.images:
            table = get_table(self.store, im.particles.key)
            labels = get_array(self.store, im.labels.key)
            data = self.store.get_bytes(im.image.key)
            gray = to_gray_float(load_image(data, name=im.name).pixels)
            prep = Prepared(name=im.name, calibration=table.calibration, specimen_rows=table.specimen_rows,
                            height=labels.shape[0], width=labels.shape[1], gray=gray, source=im.image.key,
                            sha256=hashlib.sha256(data).hexdigest())
            outcomes.append(ImageOutcome(prep, Measured(table, labels, len(table.particles), len(table.included()))))
        resp = measure_pb2.ReportResponse()
        with tempfile.TemporaryDirectory(prefix="semforge-report-") as tmp:
            LocalStages(outdir=tmp).report(outcomes, opts, title=request.title or "semforge report",
                                           write_labels=False,
                                           warn=lambda w: resp.warnings.add(code=w.code, image=w.image,
                                                                            message=w.message))
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    rel = path.relative_to(tmp).as_posix()
                    resp.outputs[rel].CopyFrom(ref_pb(self.store.put_file(prefix + rel, path)))
        for im in request.images:  # the label images are stored already: no second copy
            resp.outputs[f"{im.name}/labels.tif"].CopyFrom(im.labels)
        return resp


def register(store: ObjectStore):
    def add(server: grpc.Server):
        measure_pb2_grpc.add_MeasureServiceServicer_to_server(MeasureServicer(store), server)
        return [measure_pb2.DESCRIPTOR.services_by_name["MeasureService"].full_name]
    return add


def main() -> None:
    run_service("measure", register)


if __name__ == "__main__":
    main()
