"""The particle table as one typed value: rows plus the calibration, data bar, post-processing and image confidence
they were measured with.

``to_doc`` / ``from_doc`` are the one JSON form (``semforge.particles/v1``)
that crosses the measure -> classify -> report services and is read back by
the report writers; nothing else builds or takes apart that document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ._io import Calibration
from ._morphometry import COLUMNS, particle_columns

__all__ = ["ParticleTable", "TABLE_SCHEMA"]

TABLE_SCHEMA = "semforge.particles/v1"


@dataclass
class ParticleTable:
    """Particles of one image. Rows use the stable internal names of :data:`COLUMNS` (``area``, ``ecd``,
    ``feret_min``...), sizes in ``unit`` (nm with a pixel size, px without); the files' unit suffixes
    (``area_nm2``, ``ecd_nm``) are added by the writers only (:func:`file_column`)."""

    image: str
    calibration: Calibration
    specimen_rows: int
    separation: str
    particles: list[dict[str, Any]] = field(default_factory=list)
    classifier: str = ""
    #: the post-processing applied (``PostProcess.to_doc``: threshold, separate, watershed_h, grow_px, min_contrast)
    postprocess: dict[str, Any] = field(default_factory=dict)
    #: the segmenter's per-image confidence (``image_confidence``); None when the segmenter gives none
    confidence: dict[str, Any] | None = None
    #: the weights the segment stage ran (``name/version`` in the model repository it served from; "" unknown)
    segmenter_model: str = ""

    @property
    def unit(self) -> str:
        return self.calibration.unit

    @property
    def columns(self) -> list[str]:
        return list(COLUMNS)

    @property
    def file_columns(self) -> list[str]:
        return particle_columns(self.unit)

    def included(self) -> list[dict[str, Any]]:
        return [p for p in self.particles if not p["excluded"]]

    def to_doc(self) -> dict[str, Any]:
        return {"schema": TABLE_SCHEMA, "image": self.image, "unit": self.unit,
                "calibration": {"pixel_size_nm": self.calibration.pixel_size_nm, "source": self.calibration.source},
                "specimen_rows": int(self.specimen_rows), "separation": self.separation,
                "classifier": self.classifier, "postprocess": self.postprocess, "confidence": self.confidence,
                "segmenter_model": self.segmenter_model, "particles": self.particles}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "ParticleTable":
        if doc.get("schema") != TABLE_SCHEMA:
            raise ValueError(f"not a particle table document (schema {doc.get('schema')!r}, expected {TABLE_SCHEMA})")
        cal = doc["calibration"]
        px = cal.get("pixel_size_nm")
        calibration = Calibration(float(px) if px is not None and math.isfinite(px) and px > 0 else None,
                                  cal.get("source") or "none")
        # a table written before seg_confidence existed (an older measure service) reads with it unknown (null)
        particles = [p if "seg_confidence" in p else {**p, "seg_confidence": None} for p in doc["particles"]]
        table = cls(image=doc["image"], calibration=calibration, specimen_rows=int(doc["specimen_rows"]),
                    separation=doc["separation"], particles=particles,
                    classifier=doc.get("classifier", ""), postprocess=dict(doc.get("postprocess") or {}), confidence=doc.get("confidence"),
                    segmenter_model=doc.get("segmenter_model", ""))
        if table.unit != doc.get("unit", table.unit):
            raise ValueError(f"particle table unit {doc['unit']!r} does not match its calibration ({table.unit})")
        return table
