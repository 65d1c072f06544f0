"""Comparison of instance label images with ground truth."""

from __future__ import annotations

import numpy as np

__all__ = ["instance_iou", "match_instances"]


def instance_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU matrix, shape (n_true, n_pred), of two label images (0 = background, ids 1..n)."""
    p = np.asarray(pred).astype(np.int64).ravel()
    t = np.asarray(true).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"label images differ in size: {np.shape(pred)} vs {np.shape(true)}")
    n_p, n_t = int(p.max(initial=0)), int(t.max(initial=0))
    inter = np.bincount(t * (n_p + 1) + p, minlength=(n_t + 1) * (n_p + 1)).reshape(n_t + 1, n_p + 1)
    area_t = inter.sum(1)
    area_p = inter.sum(0)
    union = area_t[:, None] + area_p[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou[1:, 1:]


def match_instances(pred: np.ndarray, true: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Match predicted to true instances at an IoU threshold (>= 0.5 makes matches unique).

    Returns tp, fp, fn, precision, recall, f1 and the mean IoU of the matches.
    """
    if threshold < 0.5:
        raise ValueError("threshold must be >= 0.5 for unique matching")
    iou = instance_iou(pred, true)
    # ids that do not occur are not instances
    t_ids = np.unique(true)
    p_ids = np.unique(pred)
    t_ids, p_ids = t_ids[t_ids > 0] - 1, p_ids[p_ids > 0] - 1
    iou = iou[np.ix_(t_ids, p_ids)] if iou.size else iou
    hits = iou > threshold if threshold == 0.5 else iou >= threshold
    tp = int(hits.sum())
    fp = len(p_ids) - tp
    fn = len(t_ids) - tp
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1,
            "mean_matched_iou": float(iou[hits].mean()) if tp else 0.0}
