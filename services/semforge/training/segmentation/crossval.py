"""Honest figures on the annotated real images: cached network outputs, post-processing variants, k-fold CV.

Everything that is tuned (threshold, separation and its parameters, boundary offset, spurious-object
filter, inference scale, checkpoint) is chosen on the training folds of a k-fold split of the shared
annotated images and scored on the held-out fold only; the held-out figures of all folds are pooled.

The network runs once per image and scale (:func:`predict_probabilities`); every post-processing
variant then works on the cached probabilities, so a sweep costs seconds per image, not a network pass.

Per image and variant, :func:`image_stats` keeps sufficient statistics (pixel intersection / union,
TP / FP / FN per IoU threshold 0.5..0.95, ECDs of the included particles on both sides, the error
anatomy by size bin, boundary offsets of the matched particles) so that any subset of images can be
aggregated without recomputing (:func:`aggregate`).

Error anatomy (each human particle is exactly one of):
``matched`` (a prediction with IoU > 0.5); ``missed`` (under half of it is predicted foreground);
``merged`` (its main prediction also covers at least half of another human particle);
``split`` (two or more predictions each cover >= 20 % of it); ``misshaped`` (the rest: found, but
the outline is off). Each prediction without a match is ``spurious`` when under half of it lies on
human foreground. Size bins by the human particle's ECD (nm): < 100, 100-150, 150-250, >= 250.

Boundary offset of a matched pair: (area_pred - area_human) / perimeter_human in px, i.e. how far
the predicted outline sits outside (+) or inside (-) the human one on average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label

from ...analysis import detect_databar, load_image, to_gray_float
from ...analysis._separate import clean_mask, particle_contrast, separate

__all__ = ["Sample", "PostParams", "load_annotated", "predict_probabilities", "instances_from_probabilities",
           "image_stats", "aggregate", "folds", "cross_validate", "score", "SIZE_BINS_NM", "THRESHOLDS"]

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))
SIZE_BINS_NM = (0.0, 100.0, 150.0, 250.0, math.inf)
BIN_NAMES = ("<100", "100-150", "150-250", ">=250")
ANATOMY = ("matched", "merged", "split", "missed", "misshaped")
_CROSS = ndi.generate_binary_structure(2, 1)


@dataclass
class Sample:
    """One annotated image: specimen rows only (the data bar cut)."""

    name: str
    gray: np.ndarray  # float32 in [0, 1], as the image shows it (particles bright in SE, dark in TSEM)
    truth: np.ndarray  # int32 instance labels (4-connected components of the mask, specks < 20 px dropped)
    pixel_size_nm: float


def load_annotated(root: str | Path, *, names: Iterable[str] | None = None) -> list[Sample]:
    """``root/images/NAME.tif`` + ``root/masks/NAME_m.tif`` (the BAM layout) as samples, sorted by name."""
    import tifffile

    root = Path(root)
    out = []
    for ip in sorted((root / "images").glob("*.tif")):
        if names is not None and ip.stem not in names:
            continue
        img = load_image(ip)
        rows = detect_databar(img.pixels)
        m = tifffile.imread(root / "masks" / f"{ip.stem}_m.tif")
        if m.ndim == 3:
            m = m.max(axis=-1)
        rows = min(rows, m.shape[0])
        truth = label(m[:rows] > 0, connectivity=1)
        sizes = np.bincount(truth.ravel())
        truth[(sizes < 20)[truth]] = 0
        truth = label(truth > 0, connectivity=1).astype(np.int32)
        out.append(Sample(ip.stem, to_gray_float(img.pixels)[:rows].astype(np.float32), truth,
                          float(img.calibration.pixel_size_nm or 1.0)))
    if not out:
        raise FileNotFoundError(f"no annotated images under {root}")
    return out


def predict_probabilities(channels: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, *,
                          scale: float = 1.0) -> np.ndarray:
    """``channels(gray) -> (C, H, W)`` run at ``scale`` x the image size (linear up, area-mean down)."""
    if scale == 1.0:
        return np.asarray(channels(gray), np.float32)
    from skimage.transform import resize

    h, w = gray.shape
    up = resize(gray, (round(h * scale), round(w * scale)), order=1, preserve_range=True,
                anti_aliasing=False).astype(np.float32)
    p = np.asarray(channels(up), np.float32)
    return np.stack([resize(c, (h, w), order=1, preserve_range=True, anti_aliasing=True) for c in p]).astype(np.float32)


@dataclass(frozen=True)
class PostParams:
    """From probabilities to instances.

    ``separate``: ``watershed`` / ``uecs`` / ``none`` (the analysis' separation of the mask
    ``p_particle * (1 - p_border) >= threshold``) or ``seeded``: markers are the components of
    ``p_particle * (1 - p_border) >= marker`` (at least ``min_marker_px``), grown by a watershed on
    that probability inside ``>= threshold``. ``offset_px``: each instance grown (+1) or shrunk (-1)
    by one pixel afterwards. Spurious-object filter (0 = off): instances with fewer than
    ``min_area_px`` pixels, a mean probability under ``min_mean_prob`` or a contrast to their
    surrounding ring under ``min_contrast`` (gray levels, particle-minus-background in the
    particle's polarity) are dropped. ``offset_px``: then each instance is grown (+1) or shrunk
    (-1) by one pixel.
    """

    threshold: float = 0.5
    separate: str = "watershed"
    h: float = 0.5
    marker: float = 0.8
    min_marker_px: int = 10
    offset_px: int = 0
    min_area_px: int = 20
    min_mean_prob: float = 0.0
    min_contrast: float = 0.0

    def label(self) -> str:
        s = f"t={self.threshold:g} {self.separate}"
        if self.separate == "watershed":
            s += f" h={self.h:g}"
        if self.separate == "seeded":
            s += f" marker={self.marker:g}"
        if self.offset_px:
            s += f" offset={self.offset_px:+d}px"
        if self.min_area_px > 20 or self.min_mean_prob or self.min_contrast:
            s += f" filter(area>={self.min_area_px}, p>={self.min_mean_prob:g}, contrast>={self.min_contrast:g})"
        return s


def _combined(probs: np.ndarray) -> np.ndarray:
    return probs[0] if probs.shape[0] == 1 else probs[0] * (1 - probs[1])


def instances_from_probabilities(probs: np.ndarray, params: PostParams, *, gray: np.ndarray | None = None,
                                 dark: bool = False, pixel_size_nm: float | None = None) -> np.ndarray:
    """Instance labels (int32) of one image's probabilities ``(C, H, W)`` under ``params``."""
    from skimage.segmentation import watershed

    comb = _combined(probs)
    mask = clean_mask(comb >= params.threshold, min_area_px=20, max_hole_area_px=20)
    if params.separate == "seeded":
        mk = clean_mask(comb >= params.marker, min_area_px=params.min_marker_px, max_hole_area_px=0) & mask
        markers, n = ndi.label(mk, structure=_CROSS)
        lab = watershed(-comb, markers, mask=mask, connectivity=1)
        missing = mask & (lab == 0)
        if missing.any():
            extra, _ = ndi.label(missing, structure=_CROSS)
            lab = np.where(extra > 0, extra + lab.max(), lab)
        lab = lab.astype(np.int32)
    else:
        lab = separate(mask, mode=params.separate, pixel_size_nm=pixel_size_nm, watershed_h=params.h).labels.astype(np.int32)
    return _refine_labels(lab, probs, gray, params, dark)


def instance_features(lab: np.ndarray, probs: np.ndarray, gray: np.ndarray | None, dark: bool) -> dict:
    """Per instance (index k-1 for label k): area px, mean combined probability, contrast to a 3-px ring."""
    n = int(lab.max())
    idx = np.arange(1, n + 1)
    comb = _combined(probs)
    feats = {"area": np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(float),
             "mean_prob": np.asarray(ndi.mean(comb, lab, idx)) if n else np.zeros(0)}
    if gray is not None and n:
        feats["contrast"] = particle_contrast(lab, gray, dark=dark)
    return feats


def _refine_labels(lab: np.ndarray, probs: np.ndarray, gray: np.ndarray | None, params: PostParams,
                   dark: bool, feats: dict | None = None) -> np.ndarray:
    """Spurious-object filter, then boundary offset, on separated labels; renumbered, specks < 20 px dropped."""
    if params.min_area_px > 20 or params.min_mean_prob > 0 or params.min_contrast > 0:
        f = feats if feats is not None else instance_features(lab, probs, gray, dark)
        drop = f["area"] < params.min_area_px
        if params.min_mean_prob > 0:
            drop |= f["mean_prob"] < params.min_mean_prob
        if params.min_contrast > 0 and "contrast" in f:
            drop |= f["contrast"] < params.min_contrast
        lut = np.concatenate([[0], np.where(drop, 0, np.arange(1, len(drop) + 1))]).astype(np.int32)
        lab = lut[lab]
    for _ in range(max(params.offset_px, 0)):  # grow into background by one 4-neighbour pixel
        nb = ndi.grey_dilation(lab, footprint=_CROSS)
        lab = np.where(lab == 0, nb, lab)
    if params.offset_px < 0:
        for _ in range(-params.offset_px):
            edge = np.zeros(lab.shape, bool)
            edge[1:] |= lab[1:] != lab[:-1]
            edge[:-1] |= lab[:-1] != lab[1:]
            edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
            edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
            lab = np.where(edge, 0, lab)
    sizes = np.bincount(lab.ravel())
    keep = sizes >= 20
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[lab]


def _perimeter_px(lab: np.ndarray, n: int) -> np.ndarray:
    edge = np.zeros(lab.shape, bool)
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[0] = edge[-1] = True
    edge[:, 0] = edge[:, -1] = True
    return np.bincount(lab[edge & (lab > 0)], minlength=n + 1)


def _included_ecd(lab: np.ndarray, px: float) -> np.ndarray:
    """ECD (nm) of instances not touching the image border and at least 3 px in both box sides."""
    n = int(lab.max())
    if n == 0:
        return np.zeros(0)
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    ok = np.ones(n + 1, bool)
    ok[0] = False
    ok[border] = False
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None or sl[0].stop - sl[0].start < 3 or sl[1].stop - sl[1].start < 3:
            ok[k] = False
    ok &= areas > 0
    return np.sqrt(4 * areas[ok] / np.pi) * px


def image_stats(pred: np.ndarray, truth: np.ndarray, pixel_size_nm: float) -> dict:
    """Sufficient statistics of one image (see the module doc)."""
    pred = pred.astype(np.int64)
    truth = truth.astype(np.int64)
    n_p, n_t = int(pred.max(initial=0)), int(truth.max(initial=0))
    inter = np.bincount((truth * (n_p + 1) + pred).ravel(), minlength=(n_t + 1) * (n_p + 1)).reshape(n_t + 1, n_p + 1)
    a_t, a_p = inter.sum(1), inter.sum(0)
    iou = inter[1:, 1:] / np.maximum(a_t[1:, None] + a_p[None, 1:] - inter[1:, 1:], 1)
    present_t = a_t[1:] > 0
    present_p = a_p[1:] > 0
    ap = []
    for th in THRESHOLDS:
        hits = iou > th if th == 0.5 else iou >= th
        tp = int(hits.sum())
        ap.append((tp, int(present_p.sum()) - tp, int(present_t.sum()) - tp))
    hits = iou > 0.5
    matched_t = hits.any(1)
    matched_p = hits.any(0)
    # anatomy of human particles
    ecd_t = np.sqrt(4 * a_t[1:] / np.pi) * pixel_size_nm
    bins = np.digitize(ecd_t, SIZE_BINS_NM[1:-1])
    anat = np.zeros((len(ANATOMY), len(BIN_NAMES)), np.int64)
    fg_cov = 1 - inter[1:, 0] / np.maximum(a_t[1:], 1)
    main_p = np.argmax(inter[1:, 1:], axis=1) if n_p else np.zeros(n_t, int)
    frac_of_t = inter[1:, 1:] / np.maximum(a_t[1:, None], 1)  # share of each human particle covered by each pred
    for i in range(n_t):
        if not present_t[i]:
            continue
        if matched_t[i]:
            kind = 0
        elif fg_cov[i] < 0.5 or n_p == 0:
            kind = 3
        else:
            q = main_p[i]
            others = frac_of_t[:, q] >= 0.5
            others[i] = False
            if others.any():
                kind = 1
            elif (frac_of_t[i] >= 0.2).sum() >= 2:
                kind = 2
            else:
                kind = 4
        anat[kind, bins[i]] += 1
    on_fg = 1 - inter[0, 1:] / np.maximum(a_p[1:], 1)
    spurious = int((present_p & ~matched_p & (on_fg < 0.5)).sum())
    # boundary offset of matched pairs
    per = _perimeter_px(truth, n_t)[1:]
    ti, pi = np.nonzero(hits)
    offsets = (a_p[1:][pi] - a_t[1:][ti]) / np.maximum(per[ti], 1)
    p, t = pred > 0, truth > 0
    return {"inter": int((p & t).sum()), "union": int((p | t).sum()), "ap": np.array(ap, np.int64),
            "ecd_pred": _included_ecd(pred.astype(np.int32), pixel_size_nm),
            "ecd_true": _included_ecd(truth.astype(np.int32), pixel_size_nm),
            "anatomy": anat, "spurious": spurious, "unmatched_pred": int((present_p & ~matched_p).sum()),
            "offsets": offsets.astype(np.float32), "fg_pred": float(p.mean())}


def aggregate(stats: list[dict]) -> dict:
    """Pooled figures over images (sums of counts, ECD lists concatenated)."""
    ap = sum(s["ap"] for s in stats)
    tp, fp, fn = ap[0]
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    ecd_p = np.concatenate([s["ecd_pred"] for s in stats])
    ecd_t = np.concatenate([s["ecd_true"] for s in stats])
    anat = sum(s["anatomy"] for s in stats)
    offs = np.concatenate([s["offsets"] for s in stats])
    n_h = int(anat.sum())
    n_pred = int(tp + fp)
    med_p = float(np.median(ecd_p)) if len(ecd_p) else float("nan")
    med_t = float(np.median(ecd_t)) if len(ecd_t) else float("nan")
    recall_by_bin = {b: float(anat[0, j] / max(anat[:, j].sum(), 1)) for j, b in enumerate(BIN_NAMES)}
    return {
        "images": len(stats),
        "foreground_iou": sum(s["inter"] for s in stats) / max(sum(s["union"] for s in stats), 1),
        "instance_precision": prec, "instance_recall": rec,
        "instance_f1": 2 * prec * rec / max(prec + rec, 1e-12),
        "ap50": float(tp / max(tp + fp + fn, 1)),
        "ap50_95": float(np.mean([r[0] / max(r.sum(), 1) for r in ap])),
        "count_pred": int(len(ecd_p)), "count_true": int(len(ecd_t)),
        "count_error": len(ecd_p) / max(len(ecd_t), 1) - 1,
        "median_ecd_pred": med_p, "median_ecd_true": med_t, "median_ecd_error": med_p / med_t - 1,
        "anatomy": {k: float(anat[i].sum() / max(n_h, 1)) for i, k in enumerate(ANATOMY)},
        "spurious": float(sum(s["spurious"] for s in stats) / max(n_pred, 1)),
        "recall_by_size": recall_by_bin,
        "humans_by_size": {b: int(anat[:, j].sum()) for j, b in enumerate(BIN_NAMES)},
        "boundary_offset_px": float(np.median(offs)) if len(offs) else float("nan"),
    }


def score(fig: dict) -> float:
    """The selection objective: F1@0.5 + AP@0.5:0.95 - 0.5 |count error| - |median ECD error|."""
    return (fig["instance_f1"] + fig["ap50_95"] - 0.5 * abs(fig["count_error"])
            - abs(fig["median_ecd_error"]))


def folds(names: list[str], k: int = 5) -> list[list[str]]:
    """``k`` contiguous blocks of the sorted names (neighbouring acquisitions stay in one fold)."""
    names = sorted(names)
    bounds = np.linspace(0, len(names), k + 1).round().astype(int)
    return [names[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def cross_validate(table: dict[str, dict[str, dict]], names: list[str], *, k: int = 5,
                   objective: Callable[[dict], float] = score) -> dict:
    """Select a variant on the training folds, score it on the held-out fold; pool the held-out stats.

    ``table[variant][image] -> image_stats``. Returns the pooled held-out figures (``figures``),
    the variant chosen per fold (``chosen``) and the variant chosen on all images (``final``, what
    a shipped default would be).
    """
    variants = list(table)
    held_stats, chosen = [], []
    for fold in folds(names, k):
        train = [n for n in names if n not in fold]
        best = max(variants, key=lambda v: objective(aggregate([table[v][n] for n in train])))
        chosen.append(best)
        held_stats += [table[best][n] for n in fold]
    final = max(variants, key=lambda v: objective(aggregate([table[v][n] for n in names])))
    return {"figures": aggregate(held_stats), "chosen": chosen, "final": final}


def params_dict(p: PostParams) -> dict:
    return asdict(p)


def variant(p: PostParams, **kw) -> PostParams:
    return replace(p, **kw)
