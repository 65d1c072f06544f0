"""``semforge evaluate``: a segmenter + separation against annotated images, as the analysis runs it.

For each image: segment (the data bar cut automatically), separate and measure with
the analysis pipeline, then compare with the human instances (4-connected components
of the mask; specks under 20 px dropped on both sides, as the pipeline drops them).

Figures, pooled over all images: foreground IoU, pixel precision / recall / F1 and
pixel error; Rand error (1 - Rand index over pixel pairs, on the instance labels);
instance precision / recall / F1 at IoU 0.5; AP@0.5 and AP@0.5:0.95 in the
TP / (TP + FP + FN) form of Mill et al.; particle counts and median ECD of the
included particles vs the human masks put through the same measurement.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
from skimage.measure import label

from ...analysis import MeasureOptions, average_precision, match_instances, measure_mask, pixel_metrics, rand_error
from ...pipeline import AnalysisOptions, LocalStages

__all__ = ["evaluate_segmenter", "format_markdown"]


def _truth(mask_path: Path, rows: int) -> np.ndarray:
    m = tifffile.imread(mask_path)
    if m.ndim == 3:
        m = m.max(axis=-1)
    truth = label(m[:rows] > 0, connectivity=1)
    sizes = np.bincount(truth.ravel())
    truth[(sizes < 20)[truth]] = 0
    return label(truth > 0, connectivity=1)


def evaluate_segmenter(segmenter, images: str | Path, masks: str | Path, *, modality: str = "se",
                       separate: str | None = None, names: list[str] | None = None,
                       progress: Callable[[int, int, str], None] | None = None, **post) -> dict:
    """Score ``segmenter`` as the analysis runs it: post-processing keys (``separate``, ``threshold``,
    ``watershed_h``, ``grow_px``, ``min_contrast``) left None follow the analysis' default for the segmenter
    and modality (:func:`semforge.pipeline.effective_postprocess`); the applied ones are in ``postprocess``."""
    images, masks = Path(images), Path(masks)
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".png", ".jpg", ".dm3", ".dm4"))
    if names is not None:
        paths = [p for p in paths if p.stem in names]
    if not paths:
        raise FileNotFoundError(f"no images in {images}")
    per_image, acc = [], {"inter": 0.0, "union": 0.0, "tp_px": 0.0, "fp_px": 0.0, "fn_px": 0.0, "px": 0}
    ap_rows = None
    pred_ecd, true_ecd, pred_n, true_n = [], [], 0, 0
    seg_t = []
    stages = LocalStages(segmenter)
    opts = AnalysisOptions(MeasureOptions(separate=separate, modality=modality, classify=False,
                                          **{k: v for k, v in post.items() if v is not None}))
    applied = None
    for i, ip in enumerate(paths):
        cands = [masks / f"{ip.stem}_m{ip.suffix}", masks / f"{ip.stem}{ip.suffix}", masks / f"{ip.stem}_m.tif",
                 masks / f"{ip.stem}.png"]
        mp = next((c for c in cands if c.exists()), None)
        if mp is None:
            raise FileNotFoundError(f"no mask for {ip.name} in {masks} (tried {', '.join(c.name for c in cands)})")
        # the analysis's own stages: decode + data bar (auto) + calibration, segment, separate + measure
        prep = stages.prepare(ip, ip.stem, opts)
        rows = prep.specimen_rows
        truth = _truth(mp, rows)
        t0 = time.perf_counter()
        mask = stages.segment(prep, opts)
        seg_t.append(time.perf_counter() - t0)
        measured = stages.measure(prep, mask, opts)
        res = measured.table
        applied = res.postprocess
        pred = measured.labels[:rows].astype(np.int64)
        pm = pixel_metrics(pred > 0, truth > 0)
        p, t = pred > 0, truth > 0
        acc["inter"] += float((p & t).sum())
        acc["union"] += float((p | t).sum())
        acc["tp_px"] += float((p & t).sum())
        acc["fp_px"] += float((p & ~t).sum())
        acc["fn_px"] += float((~p & t).sum())
        acc["px"] += p.size
        ap = average_precision(pred, truth)
        rows_ap = np.array([r[1:] for r in ap["per_threshold"]], float)
        ap_rows = rows_ap if ap_rows is None else ap_rows + rows_ap
        hres = measure_mask(truth > 0, calibration=prep.calibration, options=MeasureOptions(separate="none", classify=False))
        inc_p, inc_t = res.included(), hres.included()
        pred_ecd += [q["ecd"] for q in inc_p]
        true_ecd += [q["ecd"] for q in inc_t]
        pred_n += len(inc_p)
        true_n += len(inc_t)
        m = match_instances(pred, truth)
        per_image.append({"image": ip.name, "iou": pm["iou"], "f1": m["f1"], "tp": m["tp"], "fp": m["fp"],
                          "fn": m["fn"], "rand_error": rand_error(pred, truth), "ap50": ap["ap50"],
                          "ap50_95": ap["ap50_95"], "seconds": seg_t[-1]})
        if progress:
            progress(i + 1, len(paths), ip.name)
    tp, fp, fn = ap_rows[0]
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    ap_all = [r[0] / max(r.sum(), 1) for r in ap_rows]
    pprec = acc["tp_px"] / max(acc["tp_px"] + acc["fp_px"], 1)
    prec_rec = acc["tp_px"] / max(acc["tp_px"] + acc["fn_px"], 1)
    med_p = float(np.median(pred_ecd)) if pred_ecd else float("nan")
    med_t = float(np.median(true_ecd)) if true_ecd else float("nan")
    return {
        "images": len(paths), "segmenter": getattr(segmenter, "name", type(segmenter).__name__),
        "separation": applied["separate"], "modality": modality, "postprocess": applied,
        "foreground_iou": acc["inter"] / max(acc["union"], 1),
        "pixel_precision": pprec, "pixel_recall": prec_rec,
        "pixel_f1": 2 * pprec * prec_rec / max(pprec + prec_rec, 1e-12),
        "pixel_error": (acc["fp_px"] + acc["fn_px"]) / max(acc["px"], 1),
        "rand_error": float(np.mean([r["rand_error"] for r in per_image])),
        "instance_precision": prec, "instance_recall": rec, "instance_f1": 2 * prec * rec / max(prec + rec, 1e-12),
        "ap50": ap_all[0], "ap50_95": float(np.mean(ap_all)),
        "count_pred": pred_n, "count_true": true_n,
        "median_ecd_pred": med_p, "median_ecd_true": med_t,
        "median_ecd_error": med_p / med_t - 1 if true_ecd and pred_ecd else float("nan"),
        "unit": "nm" if pred_ecd and all(np.isfinite(pred_ecd)) else "",
        "seconds_per_image_median": float(np.median(seg_t)),
        "per_image": per_image,
    }


def _post_label(r: dict) -> str:
    from ...analysis import PostProcess

    return PostProcess(**r["postprocess"]).label() if r.get("postprocess") else r["separation"]


def format_markdown(results: list[dict]) -> str:
    head = ("| segmenter / post-processing | fg IoU | pixel F1 | pixel error | Rand error | inst. precision | inst. recall | "
            "inst. F1@0.5 | AP@0.5 | AP@0.5:0.95 | count (pred / human) | median ECD pred / human | error | "
            "s / image (network) |")
    lines = [head, "|" + "---|" * 14]
    for r in results:
        lines.append(
            f"| {r['segmenter']} / {_post_label(r)} | {r['foreground_iou']:.3f} | {r['pixel_f1']:.3f} | "
            f"{r['pixel_error']:.4f} | {r['rand_error']:.4f} | {r['instance_precision']:.3f} | "
            f"{r['instance_recall']:.3f} | **{r['instance_f1']:.3f}** | {r['ap50']:.3f} | {r['ap50_95']:.3f} | "
            f"{r['count_pred']} / {r['count_true']} | {r['median_ecd_pred']:.1f} / {r['median_ecd_true']:.1f} | "
            f"{r['median_ecd_error'] * 100:+.1f} % | {r['seconds_per_image_median']:.2f} |")
    return "\n".join(lines)
