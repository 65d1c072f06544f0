"""Comparison of instance label images with ground truth."""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "instance_iou", "match_instances", "pixel_metrics", "rand_error"]


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


def pixel_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Foreground IoU, precision, recall, F1 (= Dice) and pixel error of two binary masks."""
    p, t = np.asarray(pred) > 0, np.asarray(true) > 0
    if p.shape != t.shape:
        raise ValueError(f"masks differ in size: {p.shape} vs {t.shape}")
    tp = float((p & t).sum())
    fp = float((p & ~t).sum())
    fn = float((~p & t).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0, "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "pixel_error": (fp + fn) / p.size}


def rand_error(pred: np.ndarray, true: np.ndarray) -> float:
    """1 - Rand index of two label images over all pixel pairs (background is one label)."""
    p = np.asarray(pred).astype(np.int64).ravel()
    t = np.asarray(true).astype(np.int64).ravel()
    n = p.size
    _, pi = np.unique(p, return_inverse=True)
    _, ti = np.unique(t, return_inverse=True)
    cont = np.bincount(ti * (pi.max() + 1) + pi).astype(np.float64)
    pairs = lambda x: (x * (x - 1) / 2).sum()  # noqa: E731
    same_both = pairs(cont)
    same_t = pairs(np.bincount(ti).astype(np.float64))
    same_p = pairs(np.bincount(pi).astype(np.float64))
    total = n * (n - 1) / 2
    agree = total + 2 * same_both - same_t - same_p  # pairs together in both + apart in both
    return float(1 - agree / total)


def average_precision(pred: np.ndarray, true: np.ndarray, thresholds=None) -> dict[str, float]:
    """Instance AP as in the 2018 Data Science Bowl / Mill et al.: TP / (TP + FP + FN) per IoU threshold.

    Returns ``ap50`` (threshold 0.5), ``ap50_95`` (mean over 0.5, 0.55, ..., 0.95) and the raw
    counts per threshold (``per_threshold``: list of (threshold, tp, fp, fn)).
    """
    ths = np.round(np.arange(0.5, 0.951, 0.05), 2) if thresholds is None else np.asarray(thresholds)
    rows = []
    for th in ths:
        m = match_instances(pred, true, threshold=float(th))
        rows.append((float(th), m["tp"], m["fp"], m["fn"]))
    ap = [tp / (tp + fp + fn) if tp + fp + fn else 1.0 for _, tp, fp, fn in rows]
    return {"ap50": ap[0], "ap50_95": float(np.mean(ap)), "per_threshold": rows}
