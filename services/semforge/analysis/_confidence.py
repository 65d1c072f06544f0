"""Per-image confidence: is this image inside the segmenter's domain, or are its numbers not to be trusted?

From the network's own output (no reference needed), three signals:

* ``foreground_fraction``: share of pixels with particle probability (border cut out) >= 0.5;
  an empty prediction or one that calls most of the field particle is implausible for a
  particle micrograph;
* ``uncertain_share``: of the pixels the network calls at all particle-like (p > 0.1), the share
  it is unsure about (0.1 < p < 0.9) -- small on the images it was made for (thin rims only),
  large where it hesitates over whole regions;
* ``mean_confidence``: mean of |2p - 1| over the same particle-like pixels.

:func:`image_confidence` returns them, a score in [0, 1] and the flags that fired; ``trusted``
is False when any flag fires. The limits (:data:`LIMITS`) were set from the shipped models on
the 40 real annotated images (in domain) vs the same images given to the other modality's model
and vs blank / noise fields (out of domain); the figures are in docs/segmentation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ConfidenceLimits", "LIMITS", "image_confidence", "confidence_warnings", "CONFIDENCE_FIELDS",
           "PROBABILITY_SCALE", "quantize_probability", "particle_confidence"]


@dataclass(frozen=True)
class ConfidenceLimits:
    min_foreground: float = 0.01  # below: (nearly) empty prediction
    max_foreground: float = 0.80  # above: the whole field called particle
    max_uncertain_share: float = 0.40
    min_mean_confidence: float = 0.60


LIMITS = ConfidenceLimits()


def image_confidence(probs: np.ndarray, *, limits: ConfidenceLimits = LIMITS) -> dict:
    """Signals, score and flags of one image's probabilities: ``(C, H, W)`` (particle [+ border]) or ``(H, W)``.

    Returns ``{"trusted", "score", "flags", "foreground_fraction", "uncertain_share",
    "mean_confidence"}``; ``flags`` is a list of ``empty_prediction``, ``implausible_foreground``,
    ``low_confidence``.
    """
    p = np.asarray(probs, np.float32)
    if p.ndim == 3:
        part = p[0]
        comb = p[0] * (1 - p[1]) if p.shape[0] > 1 else p[0]
    elif p.ndim == 2:
        part = comb = p
    else:
        raise ValueError(f"probabilities must be (H, W) or (C, H, W), got shape {p.shape}")
    if part.size == 0:
        raise ValueError("empty probability map")
    if not np.isfinite(part).all() or part.min() < 0 or part.max() > 1:
        raise ValueError("probabilities must be finite and in [0, 1]")
    fg = float((comb >= 0.5).mean())
    active = part > 0.1
    n_active = int(active.sum())
    if n_active:
        a = part[active]
        uncertain = float((a < 0.9).mean())
        conf = float(np.abs(2 * a - 1).mean())
    else:
        uncertain, conf = 0.0, 1.0
    flags = []
    if fg < limits.min_foreground:
        flags.append("empty_prediction")
    if fg > limits.max_foreground:
        flags.append("implausible_foreground")
    if n_active and (uncertain > limits.max_uncertain_share or conf < limits.min_mean_confidence):
        flags.append("low_confidence")
    # score: 1 well inside every limit, falling to 0 at a limit (the worst signal decides)
    parts = [min(1.0, fg / (2 * limits.min_foreground)),
             min(1.0, (1 - fg) / max(2 * (1 - limits.max_foreground), 1e-6)),
             min(1.0, max(0.0, (limits.max_uncertain_share - uncertain) / (0.5 * limits.max_uncertain_share)) + 0.0)
             if n_active else 1.0,
             min(1.0, max(0.0, (conf - limits.min_mean_confidence) / (0.5 * (1 - limits.min_mean_confidence))))
             if n_active else 1.0]
    score = float(max(0.0, min(parts)))
    return {"trusted": not flags, "score": score, "flags": flags, "foreground_fraction": fg,
            "uncertain_share": uncertain, "mean_confidence": conf}


#: the per-image fields of the report (summary.csv, report.json ``images``, the HTML images table)
CONFIDENCE_FIELDS = ("confidence_score", "confidence_flags", "foreground_fraction", "uncertain_share",
                     "mean_confidence")


def confidence_fields(conf: dict[str, Any] | None) -> dict[str, Any]:
    """The report's per-image confidence columns (empty values when the segmenter gives no confidence)."""
    if not conf:
        return {k: None for k in CONFIDENCE_FIELDS}
    return {"confidence_score": conf["score"], "confidence_flags": " ".join(conf["flags"]),
            "foreground_fraction": conf["foreground_fraction"], "uncertain_share": conf["uncertain_share"],
            "mean_confidence": conf["mean_confidence"]}


def confidence_warnings(image: str, conf: dict[str, Any] | None, *, limits: ConfidenceLimits = LIMITS) -> list:
    """One plausibility warning per flag of :func:`image_confidence` (code = the flag), with the numbers."""
    from ._checks import Warning_

    if not conf:
        return []
    out = []
    fg, unsure, mc = conf["foreground_fraction"], conf["uncertain_share"], conf["mean_confidence"]
    tail = ("the image may be outside the model's domain (another instrument, modality, magnification or sample): "
            "check the overlay and the modality before using its numbers")
    for flag in conf["flags"]:
        if flag == "empty_prediction":
            msg = (f"the segmenter calls only {100 * fg:.1f} % of the field particle (plausible: at least "
                   f"{100 * limits.min_foreground:g} %): an empty or nearly empty field, or {tail}")
        elif flag == "implausible_foreground":
            msg = (f"the segmenter calls {100 * fg:.0f} % of the field particle (plausible: at most "
                   f"{100 * limits.max_foreground:g} %): is the modality right (SE/HIM bright vs STEM/TEM dark "
                   f"particles)? Otherwise {tail}")
        elif flag == "low_confidence":
            msg = (f"the segmenter is unsure on this image (confidence score {conf['score']:.2f}: {100 * unsure:.0f} % "
                   f"of the particle-like pixels uncertain, limit {100 * limits.max_uncertain_share:g} %; mean "
                   f"confidence {mc:.2f}, limit {limits.min_mean_confidence:g}): {tail}")
        else:
            msg = f"confidence flag {flag}: {tail}"
        out.append(Warning_(flag, image, msg))
    return out


# -- per-particle confidence (#16) ---------------------------------------------------------------

#: the quantised probability map: uint8, ``round(p * 255)``; 255 = probability 1
PROBABILITY_SCALE = 255


def quantize_probability(prob: np.ndarray) -> np.ndarray:
    """The segmenter's combined foreground probability (``semforge.inference.combined``: ``p_particle *
    (1 - p_border)``, float in [0, 1]) as uint8 ``round(p * 255)``: the one form the per-particle confidence is
    computed from, in process and through the services (the segment service stores it as a PNG), so both
    paths give the same ``seg_confidence``. A uint8 array is taken as quantised already."""
    p = np.asarray(prob)
    if p.dtype == np.uint8:
        return p
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"probabilities must be float in [0, 1] (or uint8 already quantised), got {p.dtype}")
    p = np.asarray(p, np.float64)
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    return np.rint(np.clip(p, 0.0, 1.0) * PROBABILITY_SCALE).astype(np.uint8)


def particle_confidence(prob_u8: np.ndarray, mask: np.ndarray) -> float:
    """``seg_confidence`` of one particle: the mean of the quantised probability (:func:`quantize_probability`)
    over the particle's pixels (``mask``: boolean, same shape), in [0, 1], rounded to 4 decimals (as
    ``shape_confidence``). Exact: an integer sum divided once, so every path gives the same number."""
    v = np.asarray(prob_u8)[np.asarray(mask, dtype=bool)]
    if v.size == 0:
        raise ValueError("a particle without pixels has no confidence")
    return round(int(v.sum(dtype=np.int64)) / (PROBABILITY_SCALE * v.size), 4)
