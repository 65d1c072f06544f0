"""Protobuf messages <-> library values: the one place the wire encodings are spelled out.

Services and the client convert at their edge with these functions and work
with library types (``Modality``, ``DataBar``, ``AnalysisOptions``,
``ParticleTable``, ``Calibration``) inside. Objects in the store are written
and read through :mod:`semforge.codec` here too.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from .. import codec
from ..analysis import POST_KEYS, Calibration, MeasureOptions, ParticleTable, PostProcess
from ..errors import InvalidOption
from ..modality import Modality
from ..pipeline import AnalysisOptions, DataBar, ImageFacts
from ..storage import ObjectInfo, ObjectStore

__all__ = ["modality_from_pb", "modality_pb", "separation_from_pb", "separation_pb", "databar_from_pb", "databar_pb",
           "measure_options_from_pb", "analysis_options_from_pb", "analysis_options_pb", "calibration_pb",
           "calibration_from_pb", "ref_pb", "put_png", "put_mask", "put_probability", "get_probability", "put_labels",
           "get_array", "put_json", "get_json",
           "put_table", "get_table", "facts_key", "put_facts", "get_facts", "postprocess_from_pb",
           "postprocess_pb_kwargs", "confidence_pb", "confidence_from_pb"]

# enum values of semforge.common.v1.Modality / SeparationMode (0 = unspecified: the default)
_MODALITY = {1: Modality.SE, 2: Modality.STEM, 3: Modality.TEM, 4: Modality.HIM}
_SEPARATION = {1: "uecs", 2: "watershed", 3: "none"}


def modality_from_pb(value: int, *, field: str = "options.modality") -> Modality:
    if value == 0:
        return Modality.SE
    try:
        return _MODALITY[value]
    except KeyError:
        raise InvalidOption(f"unknown modality {value}; valid: SE, STEM, TEM, HIM", field=field) from None


def modality_pb(m: "Modality | str") -> int:
    m = Modality.parse(m)
    return next(k for k, v in _MODALITY.items() if v is m)


def separation_from_pb(value: int, *, field: str = "options.separation") -> str | None:
    """The separation mode; 0 (unspecified) = None: the one recommended for the segmenter and modality."""
    if value == 0:
        return None
    try:
        return _SEPARATION[value]
    except KeyError:
        raise InvalidOption(f"unknown separation mode {value}; valid: UECS, WATERSHED, NONE", field=field) from None


def separation_pb(name: str | None) -> int:
    if name is None:
        return 0
    for k, v in _SEPARATION.items():
        if v == name.lower():
            return k
    raise InvalidOption(f"unknown separation mode {name!r}; valid: {', '.join(_SEPARATION.values())}",
                        field="separation")


def databar_from_pb(specimen_rows: int, *, field: str = "options.specimen_rows") -> DataBar:
    """``AnalysisOptions.specimen_rows``: 0 detect the data bar, -1 no data bar, N > 0 specimen rows."""
    if specimen_rows == 0:
        return DataBar.auto()
    if specimen_rows == -1:
        return DataBar.none()
    if specimen_rows > 0:
        return DataBar.fixed(specimen_rows)
    raise InvalidOption(f"specimen_rows must be -1 (no data bar), 0 (detect) or a row count, got {specimen_rows}",
                        field=field)


def databar_pb(bar: DataBar) -> int:
    return {"auto": 0, "none": -1}.get(bar.mode, bar.rows)


def measure_options_from_pb(opts, *, classify: bool = False) -> MeasureOptions:
    """The measurement options of an ``AnalysisOptions`` message (validated; 0 = the default)."""
    if not math.isfinite(opts.min_diameter_nm) or opts.min_diameter_nm < 0:
        raise InvalidOption(f"min_diameter_nm must be >= 0, got {opts.min_diameter_nm}", field="options.min_diameter_nm")
    kw = dict(separate=separation_from_pb(opts.separation), modality=modality_from_pb(opts.modality).value,
              classify=classify)
    kw.update(postprocess_from_pb(opts))
    if opts.min_diameter_nm:
        kw["min_diameter_nm"] = opts.min_diameter_nm
    if opts.convexity_threshold:
        kw["convexity_threshold"] = opts.convexity_threshold
    mo = MeasureOptions(**kw)
    mo.validate()
    return mo


#: post-processing keys that are optional fields of the same name in AnalysisOptions (``separate`` is the enum)
_POST_FIELDS = tuple(k for k in POST_KEYS if k != "separate")


def postprocess_from_pb(opts) -> dict:
    """The post-processing keys the caller set (``HasField``: unset keys stay unset), validated."""
    chosen = {k: getattr(opts, k) for k in _POST_FIELDS if opts.HasField(k)}
    for k, v in chosen.items():
        if not math.isfinite(v):
            raise InvalidOption(f"{k} must be a finite number, got {v}", field=f"options.{k}")
    try:
        PostProcess(**chosen).validate()
    except InvalidOption as exc:
        raise InvalidOption(str(exc), field=f"options.{exc.field}" if getattr(exc, "field", "") else "options") \
            from None
    return chosen


def postprocess_pb_kwargs(post: PostProcess) -> dict:
    """AnalysisOptions fields of the chosen (non-None) post-processing keys (``separate`` -> ``separation``)."""
    kw = {k: v for k, v in post.chosen().items() if k != "separate"}
    if post.separate is not None:
        kw["separation"] = separation_pb(post.separate)
    return kw


def confidence_pb(conf: dict | None):
    """``image_confidence``'s dict as an ``ImageConfidence`` message (None -> None: leave the field unset)."""
    if not conf:
        return None
    from semforge.common.v1 import common_pb2

    return common_pb2.ImageConfidence(score=conf["score"], flags=list(conf["flags"]),
                                      foreground_fraction=conf["foreground_fraction"],
                                      uncertain_share=conf["uncertain_share"], mean_confidence=conf["mean_confidence"])


def confidence_from_pb(msg, present: bool) -> dict | None:
    """The dict of :func:`semforge.analysis.image_confidence` (``trusted`` follows the flags)."""
    if not present:
        return None
    flags = list(msg.flags)
    return {"trusted": not flags, "score": msg.score, "flags": flags, "foreground_fraction": msg.foreground_fraction,
            "uncertain_share": msg.uncertain_share, "mean_confidence": msg.mean_confidence}


def analysis_options_from_pb(opts) -> AnalysisOptions:
    if not math.isfinite(opts.pixel_size_nm) or opts.pixel_size_nm < 0:
        raise InvalidOption(f"pixel_size_nm must be > 0 (or 0 to use the file's calibration), got {opts.pixel_size_nm}",
                            field="options.pixel_size_nm")
    return AnalysisOptions(measure=measure_options_from_pb(opts), pixel_size_nm=opts.pixel_size_nm or None,
                           databar=databar_from_pb(opts.specimen_rows), segmenter=opts.segmenter or None)


def analysis_options_pb(o: AnalysisOptions):
    from semforge.common.v1 import common_pb2

    defaults = MeasureOptions()
    m = o.measure
    return common_pb2.AnalysisOptions(
        modality=modality_pb(m.modality), pixel_size_nm=o.pixel_size_nm or 0.0, **postprocess_pb_kwargs(m.post),
        specimen_rows=databar_pb(o.databar), segmenter=o.segmenter or "",
        min_diameter_nm=0.0 if m.min_diameter_nm == defaults.min_diameter_nm else m.min_diameter_nm,
        convexity_threshold=0.0 if m.convexity_threshold == defaults.convexity_threshold else m.convexity_threshold)


def ref_pb(info: ObjectInfo, content_type: str = ""):
    from semforge.common.v1 import common_pb2

    return common_pb2.ObjectRef(key=info.key, sha256=info.sha256, size_bytes=info.size, content_type=content_type)


def calibration_pb(cal: Calibration):
    from semforge.common.v1 import common_pb2

    return common_pb2.Calibration(pixel_size_nm=cal.pixel_size_nm or 0.0, source=cal.source)


def calibration_from_pb(pb) -> Calibration:
    if pb.pixel_size_nm < 0 or not math.isfinite(pb.pixel_size_nm):
        raise InvalidOption(f"pixel size must be a positive number of nm, got {pb.pixel_size_nm}",
                            field="calibration.pixel_size_nm")
    if pb.pixel_size_nm == 0:
        return Calibration(None, "none")
    return Calibration(pb.pixel_size_nm, pb.source or "user")


# -- objects in the store -------------------------------------------------------------------

def _put(store: ObjectStore, data: bytes) -> ObjectInfo:
    info, _ = store.put_content([data])
    return info


def put_png(store: ObjectStore, arr: np.ndarray) -> ObjectInfo:
    """An 8-bit image as PNG, content addressed."""
    return _put(store, codec.encode_png(arr))


def put_mask(store: ObjectStore, mask: np.ndarray) -> ObjectInfo:
    """A foreground mask as uint8 PNG (255 = particle), content addressed."""
    return put_png(store, (np.asarray(mask) > 0).astype(np.uint8) * 255)


def put_probability(store: ObjectStore, prob_u8: np.ndarray) -> ObjectInfo:
    """The quantised probability map (``semforge.analysis.quantize_probability``, uint8) as PNG, lossless."""
    p = np.asarray(prob_u8)
    if p.dtype != np.uint8 or p.ndim != 2:
        raise ValueError(f"a quantised probability map is 2-D uint8, got {p.dtype} {p.shape}")
    return put_png(store, p)


def get_probability(store: ObjectStore, key: str, shape: tuple[int, int]) -> np.ndarray:
    """The map :func:`put_probability` stored, checked against the mask's ``shape`` (InvalidOption otherwise)."""
    p = get_array(store, key)
    if p.dtype != np.uint8 or p.shape != tuple(shape):
        raise InvalidOption(f"the probability map must be a uint8 image of the mask's size {tuple(shape)}, got "
                            f"{p.dtype} {p.shape}", field="probability")
    return p


def put_labels(store: ObjectStore, labels: np.ndarray, calibration=None) -> ObjectInfo:
    """Store a label image; with a ``calibration`` as the ImageJ TIFF the in-process ``labels.tif`` is (#13:
    Fiji opens it calibrated, byte for byte the same file), up to 65535 labels (beyond: plain uint32 TIFF)."""
    lab = np.asarray(labels)
    if calibration is not None and (int(lab.max()) if lab.size else 0) <= 65535:
        from ..analysis._io import write_labels_tiff

        buf = io.BytesIO()
        write_labels_tiff(buf, lab, calibration)
        return _put(store, buf.getvalue())
    return _put(store, codec.encode_labels(labels))


def get_array(store: ObjectStore, key: str) -> np.ndarray:
    return codec.decode_array(store.get_bytes(key))


def put_json(store: ObjectStore, doc, key: str | None = None) -> ObjectInfo:
    data = json.dumps(doc, allow_nan=True).encode()
    return store.put_bytes(key, data) if key else _put(store, data)


def get_json(store: ObjectStore, key: str):
    return json.loads(store.get_bytes(key))


def put_table(store: ObjectStore, table: ParticleTable) -> ObjectInfo:
    return put_json(store, table.to_doc())


def get_table(store: ObjectStore, key: str) -> ParticleTable:
    return ParticleTable.from_doc(get_json(store, key))


def facts_key(image_key: str) -> str:
    """Where the facts of an uploaded image are kept (written once, at upload)."""
    return f"images/{image_key.rsplit('/', 1)[-1]}.json"


def put_facts(store: ObjectStore, image_key: str, facts: ImageFacts, name: str = "") -> dict:
    doc = dict(facts.to_doc(), name=name)
    put_json(store, doc, facts_key(image_key))
    return doc


def get_facts(store: ObjectStore, image_key: str) -> tuple[ImageFacts, str]:
    doc = get_json(store, facts_key(image_key))
    return ImageFacts.from_doc(doc), doc.get("name", "")
