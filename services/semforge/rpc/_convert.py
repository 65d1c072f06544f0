"""Conversions between protobuf messages and library values."""

from __future__ import annotations

import io
import json
import math

import numpy as np

from ..analysis import Calibration, MeasureOptions
from ..storage import ObjectInfo, ObjectStore

__all__ = ["modality_name", "modality_enum", "separation_name", "separation_enum", "ref_pb", "measure_options",
           "put_png", "put_tiff", "get_array", "put_json", "get_json", "calibration_pb", "calibration_from_pb"]

_MODALITIES = {1: "se", 2: "stem", 3: "tem", 4: "him"}
_SEPARATIONS = {1: "uecs", 2: "watershed", 3: "none"}


def modality_name(value: int, default: str = "se") -> str:
    if value == 0:
        return default
    try:
        return _MODALITIES[value]
    except KeyError:
        raise ValueError(f"unknown modality {value}; valid: SE, STEM, TEM, HIM") from None


def modality_enum(name: str) -> int:
    for k, v in _MODALITIES.items():
        if v == name.lower():
            return k
    raise ValueError(f"unknown modality {name!r}; valid: {', '.join(_MODALITIES.values())}")


def separation_name(value: int, default: str = "uecs") -> str:
    if value == 0:
        return default
    try:
        return _SEPARATIONS[value]
    except KeyError:
        raise ValueError(f"unknown separation mode {value}; valid: UECS, WATERSHED, NONE") from None


def separation_enum(name: str) -> int:
    for k, v in _SEPARATIONS.items():
        if v == name.lower():
            return k
    raise ValueError(f"unknown separation mode {name!r}; valid: {', '.join(_SEPARATIONS.values())}")


def ref_pb(info: ObjectInfo, content_type: str = ""):
    from semforge.common.v1 import common_pb2

    return common_pb2.ObjectRef(key=info.key, sha256=info.sha256, size_bytes=info.size, content_type=content_type)


def calibration_pb(cal: Calibration):
    from semforge.common.v1 import common_pb2

    return common_pb2.Calibration(pixel_size_nm=cal.pixel_size_nm or 0.0, source=cal.source)


def calibration_from_pb(pb) -> Calibration:
    if pb.pixel_size_nm < 0 or not math.isfinite(pb.pixel_size_nm):
        raise ValueError(f"pixel size must be a positive number of nm, got {pb.pixel_size_nm}")
    if pb.pixel_size_nm == 0:
        return Calibration(None, "none")
    return Calibration(pb.pixel_size_nm, pb.source or "user")


def measure_options(opts, *, classify: bool = False) -> MeasureOptions:
    """MeasureOptions from an AnalysisOptions message (validated)."""
    if opts.pixel_size_nm < 0 or not math.isfinite(opts.pixel_size_nm):
        raise ValueError(f"pixel_size_nm must be > 0 (or 0 to use the file's calibration), got {opts.pixel_size_nm}")
    if opts.min_diameter_nm < 0:
        raise ValueError(f"min_diameter_nm must be >= 0, got {opts.min_diameter_nm}")
    kw = dict(separate=separation_name(opts.separation), modality=modality_name(opts.modality), classify=classify)
    if opts.min_diameter_nm:
        kw["min_diameter_nm"] = opts.min_diameter_nm
    if opts.convexity_threshold:
        kw["convexity_threshold"] = opts.convexity_threshold
    mo = MeasureOptions(**kw)
    mo.validate()
    return mo


def put_png(store: ObjectStore, arr: np.ndarray) -> ObjectInfo:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    info, _ = store.put_content([buf.getvalue()])
    return info


def put_tiff(store: ObjectStore, arr: np.ndarray) -> ObjectInfo:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, compression="zlib")
    info, _ = store.put_content([buf.getvalue()])
    return info


def get_array(store: ObjectStore, key: str) -> np.ndarray:
    data = store.get_bytes(key)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def put_json(store: ObjectStore, doc, key: str | None = None) -> ObjectInfo:
    data = json.dumps(doc, allow_nan=True).encode()
    if key:
        return store.put_bytes(key, data)
    info, _ = store.put_content([data])
    return info


def get_json(store: ObjectStore, key: str):
    return json.loads(store.get_bytes(key))
