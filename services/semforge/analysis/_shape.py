"""Rule-based shape classes from morphometry: ``rules-v1``, the fallback of the CNN classifier.

The default classifier is the CNN of :mod:`semforge.classification` (crops of
each particle; it also recognises covered and agglomerated particles); this
one remains selectable (``CLASSIFY_MODEL=rules-v1``) and is the baseline of
``docs/classification.md``.

The classes follow Bals & Epple 2023 for SE images (sphere, sphere-like, cube,
rod) and transmission images (circle, rod, triangle, square, hexagon...). A
particle whose best score is below the confidence limit (75 %, as in the
paper) is "unknown". This classifier only sees the outline, so it cannot tell
"covered" particles from odd-shaped ones; separation marks those as excluded.
"""

from __future__ import annotations

import math
from typing import Any

from ..modality import Modality

__all__ = ["CONFIDENCE_LIMIT", "classify_shape"]

CONFIDENCE_LIMIT = 0.75


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 below lo, 1 above hi, linear between."""
    if hi == lo:
        return float(x >= hi)
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def classify_shape(row: dict[str, Any], *, modality: str = "se", unit: str = "nm",
                   confidence_limit: float = CONFIDENCE_LIMIT) -> tuple[str, float]:
    """Shape class and confidence of one measured particle.

    Parameters
    ----------
    row : dict
        A row of :func:`measure_instance` output.
    modality : {"se", "stem", "tem", "him"}
        SE/HIM use the SE class set, STEM/TEM the transmission set.

    Returns
    -------
    (shape, confidence)
        ``shape`` is ``"unknown"`` when the confidence is below the limit.
    """
    ar = row["aspect_ratio"]
    circ = row["circularity"]
    sol = row["solidity"]
    a = row["area"]
    fmin = row["feret_min"]
    # area over squared min Feret: square 1.0, disc pi/4 = 0.785, triangle 0.577
    fill = a / (fmin * fmin) if fmin else 0.0
    scores = {
        "rod": _ramp(ar, 1.6, 2.2) * _ramp(sol, 0.75, 0.85),
        "sphere": _ramp(circ, 0.82, 0.9) * (1 - _ramp(ar, 1.12, 1.25)) * (1 - _ramp(fill, 0.86, 0.93)),
        "sphere-like": _ramp(circ, 0.7, 0.78) * (1 - _ramp(ar, 1.45, 1.7)) * _ramp(sol, 0.85, 0.9),
        "cube": _ramp(fill, 0.88, 0.95) * (1 - _ramp(ar, 1.5, 1.6)) * _ramp(sol, 0.9, 0.95),
    }
    if Modality.parse(modality).transmission:
        scores = {
            "circle": scores["sphere"],
            "rod": scores["rod"],
            "square": scores["cube"],
            "triangle": _ramp(sol, 0.85, 0.92) * (1 - abs(fill - 0.577) / 0.1 if abs(fill - 0.577) < 0.1 else 0.0),
            "hexagon": _ramp(circ, 0.8, 0.86) * (1 - _ramp(ar, 1.2, 1.3)) * _ramp(fill, 0.8, 0.84)
            * (1 - _ramp(fill, 0.9, 0.95)),
        }
    # sphere-like is the fallback of sphere: never more confident than a clear sphere
    if "sphere-like" in scores and scores.get("sphere", 0) >= 0.75:
        scores["sphere-like"] = 0.0
    total = sum(scores.values())
    best = max(scores, key=scores.get)
    conf = scores[best] / total if total > 0 else 0.0
    conf = conf * scores[best] ** 0.5 if total > 0 else 0.0
    conf = round(float(conf), 4)
    if not math.isfinite(conf) or conf < confidence_limit:
        return "unknown", conf
    return best, conf
