"""measure service: cleaning, separation and morphometry of a mask reference (adapter over semforge.analysis)."""

from __future__ import annotations

import grpc
import numpy as np

from semforge.analysis import measure_mask
from semforge.measure.v1 import measure_pb2, measure_pb2_grpc
from semforge.rpc import map_exceptions, run_service
from semforge.rpc._convert import calibration_from_pb, get_array, measure_options, put_json, put_tiff, ref_pb
from semforge.storage import ObjectStore


class MeasureServicer(measure_pb2_grpc.MeasureServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store

    @map_exceptions
    def Measure(self, request, context):
        if not request.mask.key:
            raise ValueError("mask reference is empty")
        opts = measure_options(request.options, classify=False)
        cal = calibration_from_pb(request.calibration)
        mask = get_array(self.store, request.mask.key)
        if mask.ndim == 3:
            mask = mask[..., 0]
        rows = request.specimen_rows or mask.shape[0]
        res = measure_mask(mask > 0, calibration=cal, image_name=request.image_name or "image",
                           specimen_rows=rows, options=opts)
        n = int(res.labels.max())
        labels = put_tiff(self.store, res.labels.astype(np.uint16 if n < 65535 else np.uint32))
        doc = {"unit": res.unit, "calibration": {"pixel_size_nm": cal.pixel_size_nm, "source": cal.source},
               "specimen_rows": rows, "separation": opts.separate, "particles": res.particles}
        parts = put_json(self.store, doc)
        return measure_pb2.MeasureResponse(labels=ref_pb(labels, "image/tiff"),
                                           particles=ref_pb(parts, "application/json"),
                                           count=len(res.particles), included=len(res.included()))


def register(store: ObjectStore):
    def add(server: grpc.Server):
        measure_pb2_grpc.add_MeasureServiceServicer_to_server(MeasureServicer(store), server)
        return [measure_pb2.DESCRIPTOR.services_by_name["MeasureService"].full_name]
    return add


def main() -> None:
    run_service("measure", register)


if __name__ == "__main__":
    main()
