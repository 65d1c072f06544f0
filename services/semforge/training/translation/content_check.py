"""Does a translated image still show the particles of its source scene?

The translated image is segmented (the shipped UNet++ by default, as the analysis
would) and compared with the source scene's instance image:

* ``foreground_iou`` — IoU of the predicted and the true foreground;
* ``particle_recall`` — share of the visible source particles (at least
  ``min_particle_px`` visible pixels) of which at least half is found as foreground
  (particles that vanished, e.g. in shadow, lower it);
* ``invented_fraction`` — predicted foreground farther than ``margin_px`` from every
  source particle, as a share of the source foreground (hallucinated particles);
* ``split`` — source particles of which two or more predicted pieces each hold at
  least ``min_piece_share`` (and ``min_piece_px``) (rods turned into chains of spheres);
* ``merged`` — predicted pieces that hold at least ``merge_share`` of each of two or
  more source particles (particles fused into one).

Pieces are the instances the analysis itself would measure: the thresholded
foreground cut by ``separation`` (default ``watershed``, what the analysis runs after
the UNet++; ``none``: connected components).  The defaults were calibrated on the 20
real images against their human masks (content known to be right, so a good check
passes them): with shares and watershed 19 of 20 pass; with connected components 15
(touching particles count as merged); with the earlier absolute 15 px overlap rule
only 12 (components) or 1 (watershed, boundary slivers counted as splits).

An output is rejected when any figure passes its threshold; the reasons are kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label

__all__ = ["CheckThresholds", "content_check", "check_translated", "rejection_by_shape"]


@dataclass
class CheckThresholds:
    min_foreground_iou: float = 0.7
    min_particle_recall: float = 0.85
    max_invented_fraction: float = 0.1
    max_split_fraction: float = 0.1  # split particles / visible particles
    max_merged_fraction: float = 0.2  # merged pieces / visible particles
    min_particle_px: int = 30
    min_piece_px: int = 15
    min_piece_share: float = 0.2  # a piece splits a particle when it holds >= this share of it
    merge_share: float = 0.5  # a piece merges particles when it holds >= this share of each of two
    margin_px: int = 3
    separation: str = "watershed"  # how pieces are cut before split/merge are counted (uecs, watershed, none)

    def to_dict(self) -> dict:
        return asdict(self)


def _pieces(pred: np.ndarray, mode: str) -> np.ndarray:
    from ...analysis import separate

    if mode == "none" or not pred.any():
        return label(pred, connectivity=1)
    return separate(pred, mode=mode).labels


def content_check(pred_prob: np.ndarray, instances: np.ndarray, thresholds: CheckThresholds = CheckThresholds(),
                  shapes: dict[int, str] | None = None) -> dict:
    """Figures, verdict and reasons for one translated image (``pred_prob``: segmenter output)."""
    from ...analysis import SEPARATION_MODES

    t = thresholds
    if t.separation not in SEPARATION_MODES:
        raise ValueError(f"unknown separation {t.separation!r}; valid: {', '.join(SEPARATION_MODES)}")
    from ...inference import foreground

    ids = np.asarray(instances).astype(np.int64)
    pred = foreground(pred_prob)
    if pred.shape != ids.shape:
        raise ValueError(f"translated image {pred.shape} and source mask {ids.shape} differ in size")
    fg = ids > 0
    inter, union = float((pred & fg).sum()), float((pred | fg).sum())
    iou = inter / union if union else 1.0
    n_ids = int(ids.max(initial=0))
    area = np.bincount(ids.ravel(), minlength=n_ids + 1)
    found = np.bincount(ids[pred].ravel(), minlength=n_ids + 1)
    visible = [k for k in range(1, n_ids + 1) if area[k] >= t.min_particle_px]
    lost = [k for k in visible if found[k] < 0.5 * area[k]]
    recall = 1 - len(lost) / len(visible) if visible else 1.0
    near = ndi.binary_dilation(fg, iterations=t.margin_px) if fg.any() else fg
    invented = float((pred & ~near).sum()) / max(float(fg.sum()), 1.0)
    pieces = _pieces(pred, t.separation)
    n_p = int(pieces.max(initial=0))
    # overlap table piece x particle (pixels), only where both are set
    both = (pieces > 0) & fg
    pair = np.bincount(pieces[both] * (n_ids + 1) + ids[both], minlength=(n_p + 1) * (n_ids + 1))
    table = pair.reshape(n_p + 1, n_ids + 1)[1:, 1:]
    share = table / np.maximum(area[1:], 1)[None, :]  # share of each particle inside each piece
    big = (table >= t.min_piece_px) & (share >= t.min_piece_share)
    split = [k + 1 for k in range(n_ids) if k + 1 in set(visible) and big[:, k].sum() >= 2]
    holds = (share >= t.merge_share) & (table >= t.min_piece_px)  # piece x particle: most of it is in the piece
    merged = int((holds.sum(axis=1) >= 2).sum())
    nv = max(len(visible), 1)
    reasons = []
    if iou < t.min_foreground_iou:
        reasons.append(f"foreground IoU {iou:.2f} < {t.min_foreground_iou}")
    if recall < t.min_particle_recall:
        reasons.append(f"{len(lost)} of {len(visible)} particles vanished (recall {recall:.2f} < {t.min_particle_recall})")
    if invented > t.max_invented_fraction:
        reasons.append(f"invented foreground {invented:.2f} of the particle area > {t.max_invented_fraction}")
    if len(split) / nv > t.max_split_fraction:
        reasons.append(f"{len(split)} particles split into pieces (> {t.max_split_fraction:.0%})")
    if merged / nv > t.max_merged_fraction:
        reasons.append(f"{merged} predicted pieces merge several particles (> {t.max_merged_fraction:.0%})")
    out = {"accepted": not reasons, "reasons": reasons, "foreground_iou": iou, "particle_recall": recall,
           "invented_fraction": invented, "split": len(split), "merged": merged, "visible_particles": len(visible),
           "lost_ids": lost, "split_ids": split}
    if shapes:
        per = {}
        for k in visible:
            s = shapes.get(k, "unknown")
            d = per.setdefault(s, {"particles": 0, "lost": 0, "split": 0, "failed": 0})
            d["particles"] += 1
            d["lost"] += k in lost
            d["split"] += k in split
            d["failed"] += k in lost or k in split
        out["by_shape"] = per
    return out


def check_translated(segmenter, image: np.ndarray, instances: np.ndarray,
                     thresholds: CheckThresholds = CheckThresholds(), shapes: dict[int, str] | None = None) -> dict:
    """:func:`content_check` of a translated (SE-like, no data bar) image segmented by the pipeline's own
    segment stage, as the analysis would segment it."""
    from ...analysis import Calibration, MeasureOptions
    from ...pipeline import AnalysisOptions, LocalStages, Prepared

    g = np.asarray(image, dtype=np.float32)
    prep = Prepared(name="translated", calibration=Calibration(None, "none"), specimen_rows=g.shape[0],
                    height=g.shape[0], width=g.shape[1], gray=g)
    mask = LocalStages(segmenter).segment(prep, AnalysisOptions(MeasureOptions(modality="se"))).mask
    return content_check(mask, instances, thresholds, shapes=shapes)


def rejection_by_shape(checks: list[dict]) -> dict:
    """Per shape: particles, lost, split, failed (lost or split, each particle once) and its share, pooled."""
    tot: dict[str, dict] = {}
    for c in checks:
        for s, d in c.get("by_shape", {}).items():
            a = tot.setdefault(s, {"particles": 0, "lost": 0, "split": 0, "failed": 0})
            for k in a:
                a[k] += d[k]
    for a in tot.values():
        a["failed_fraction"] = a["failed"] / max(a["particles"], 1)
    return dict(sorted(tot.items(), key=lambda kv: -kv[1]["failed_fraction"]))
