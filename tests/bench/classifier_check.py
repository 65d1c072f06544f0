"""Shape-classifier figures: held-out rendered scenes, the 20 real SEM images with human visibility marks, speed.

Usage: python tests/bench/classifier_check.py --json out/classifier_check.json --figures docs/images
       python tests/bench/classifier_check.py --speed          (classification vs segmentation time, 2 threads)

* Rendered (``cls-se-test-*``, ``cls-tem-test-*``: seeds never trained on): every particle the
  shipped segmenter + separation finds, with its true class from ``scene.json`` (same rules as the
  training data), classified by ``cnn`` and by ``rules-v1``: confusion matrix, per-class precision / recall.
* Real (``../shared/data/bam-tio2-sem``): the analysis (shipped UNet++, UECS) finds the particles; each
  is matched to a human particle of ``masks-4class`` (IoU >= 0.5; green = fully visible, blue =
  partly hidden, red = fragment).  The "unmeasurable" decision (cnn: class covered or agglomerate;
  rules-v1: excluded by the separation as non-separable / non-convex) is scored against blue + red,
  and the count and median ECD of the particles that stay measured are compared with the human
  green particles.  A threshold on P(covered) + P(agglomerate) is also chosen by 5-fold
  cross-validation over the images (figures on the held-out folds only).  No model was trained on these masks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from semforge.analysis import (MeasureOptions, detect_databar, load_image, measure_mask,  # noqa: E402
                               to_gray_float)
from semforge.classification import CLASSES, UNMEASURED, create_classifier  # noqa: E402
from semforge.classification.classes import modality_set  # noqa: E402
from semforge.classification.train import confusion, per_class_figures  # noqa: E402
from semforge.inference import create_segmenter  # noqa: E402

BAM = REPO.parent / "shared" / "data" / "bam-tio2-sem"
RENDERED = REPO / "out" / "cls" / "render" / "datasets"
RULES_UNMEASURED = ("not_separable", "nonconvex_after_uecs")
CACHE = REPO / "out" / "cls" / "eval-cache-v2"  # segmentation results (they do not depend on the classifier)


def segmented(seg, gray, modality: str, key: str, calibration=None):
    """Labels and particle rows of the analysis (shipped UNet++, UECS, rules-v1 shapes), cached by ``key``."""
    from semforge.analysis import Calibration

    f = CACHE / f"{key}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        return z["labels"], json.loads(str(z["rows"])), str(z["unit"])
    cal = calibration or Calibration(None, "none")
    res = measure_mask(seg.predict(gray, modality=modality) >= 0.5, calibration=cal,
                       options=MeasureOptions(modality=modality))
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f, labels=res.labels, rows=json.dumps(res.particles), unit=res.unit)
    return res.labels, res.particles, res.unit


def rendered_figures(seg, cnn, rules, cls_set: str, roots: list[Path]) -> dict:
    from semforge.classification.data import IMAGE_FOR, _read_scene, label_regions, scene_dirs

    classes = CLASSES[cls_set]
    modality = "se" if cls_set == "se" else "tem"
    truth_y, cnn_y, rules_y = [], [], []
    for d in scene_dirs(roots):
        info, gray, truth = _read_scene(d, IMAGE_FOR[cls_set])
        parts = {int(p["id"]): p for p in info["particles"]}
        labels, rows, unit = segmented(seg, gray, modality, f"{d.parent.name}-{d.name}")
        rows = [r for r in rows if r["exclude_reason"] not in ("border", "too_small")]
        lab = label_regions(labels, truth, parts, cls_set, ids={r["id"] for r in rows})
        rows = [r for r in rows if r["id"] in lab]
        out = cnn.classify(gray, labels, rows, modality=modality, unit=unit) if cnn else [("unknown", 0)] * len(rows)
        for r, (s, _) in zip(rows, out):
            truth_y.append(lab[r["id"]])
            cnn_y.append(s)
            rr = r["shape"]
            if r["exclude_reason"] in RULES_UNMEASURED:
                rr = "covered"  # what rules-v1 + separation do with it: excluded
            rules_y.append(rr if rr in classes else "unknown")
    ext = classes + ["unknown"]
    t = np.array([ext.index(c) for c in truth_y])
    res = {}
    for name, pred in (("cnn", cnn_y), ("rules-v1", rules_y)):
        p = np.array([ext.index(c) for c in pred])
        c = confusion(t, p, len(ext))
        fig = per_class_figures(c, ext)
        fig["per_class"].pop("unknown")
        res[name] = {"confusion": c.tolist(), "labels": ext, **fig,
                     "unknown_share": float((p == len(ext) - 1).mean()) if len(p) else 0.0}
    res["particles"] = len(truth_y)
    return res


def human_instances(path: Path):
    """Human particles of a 4-class mask: labels and colour per label (green / blue / red)."""
    import tifffile
    from scipy import ndimage as ndi

    m = tifffile.imread(path)
    lab, n = ndi.label(m.max(-1) > 0)  # 4-connected
    colour = {}
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        sub = m[sl][lab[sl] == k]
        g, b, r = (sub[:, 1] > 0).sum(), (sub[:, 2] > 0).sum(), (sub[:, 0] > 0).sum()
        colour[k] = ("green", "blue", "red")[int(np.argmax([g, b, r]))]
    return lab, colour


def real_rows(seg, cnn, names=None) -> list[dict]:
    """Per found particle: image, ECD, rules exclusion, cnn class and P(unmeasurable), human colour (or None)."""
    out = []
    for ip in sorted((BAM / "images").glob("*.tif")):
        if names and ip.stem not in names:
            continue
        img = load_image(ip)
        rows_n = detect_databar(img.pixels)
        gray = to_gray_float(img.pixels)
        hl, colour = human_instances(BAM / "masks-4class" / f"{ip.stem}_cm.tif")
        rows_n = min(rows_n, hl.shape[0])
        lab, rows, _ = segmented(seg, gray[:rows_n], "se", f"real-{ip.stem}", img.calibration)
        rows = [r for r in rows if r["exclude_reason"] not in ("border", "too_small")]
        if cnn is not None:
            probs, classes = cnn.probabilities(gray[:rows_n], lab, [r["id"] for r in rows], modality="se")
        else:  # segmentation and rules-v1 only
            classes = CLASSES["se"]
            probs = np.full((len(rows), len(classes)), 1.0 / len(classes), np.float32)
        unm = [classes.index(c) for c in UNMEASURED]
        # overlap table predicted x human
        sel = lab > 0
        pairs, cnt = np.unique(np.stack([lab[sel], hl[:rows_n][sel]]), axis=1, return_counts=True)
        area_p = np.bincount(lab.ravel())
        area_h = np.bincount(hl[:rows_n].ravel())
        best = {}
        for (pi, hi), c in zip(pairs.T, cnt):
            if hi == 0:
                continue
            iou = c / (area_p[pi] + area_h[hi] - c)
            if iou > best.get(int(pi), (0, 0))[0]:
                best[int(pi)] = (float(iou), int(hi))
        for r, p in zip(rows, probs):
            iou, hi = best.get(r["id"], (0.0, 0))
            k = int(np.argmax(p))
            out.append({"image": ip.stem, "ecd_nm": r["ecd"], "rules_excluded": r["exclude_reason"] in RULES_UNMEASURED,
                        "cnn_class": classes[k] if p[k] >= 0.75 else "unknown", "cnn_conf": float(p[k]),
                        "p_unmeasurable": float(p[unm].sum()),
                        "human": colour[hi] if iou >= 0.5 else None})
        # the human "fully visible" reference: green particles not touching the border, ECD from area
        px = img.calibration.pixel_size_nm
        from scipy import ndimage as ndi

        for k, sl in enumerate(ndi.find_objects(hl[:rows_n]), start=1):
            if sl is None or colour[k] != "green":
                continue
            if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop >= rows_n or sl[1].stop >= hl.shape[1]:
                continue
            a = float((hl[sl] == k).sum())
            if a < 20:
                continue
            out.append({"image": ip.stem, "human_green_ecd_nm": 2 * np.sqrt(a / np.pi) * px})
    return out


def decision_figures(rows: list[dict], excluded) -> dict:
    """Precision / recall of the unmeasurable decision vs human blue + red (matched particles), kept count and ECD."""
    found = [r for r in rows if "ecd_nm" in r]
    matched = [r for r in found if r["human"] is not None]
    y = np.array([r["human"] in ("blue", "red") for r in matched])
    p = np.array([excluded(r) for r in matched])
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    kept = [r["ecd_nm"] for r in found if not excluded(r)]
    green = [r["human_green_ecd_nm"] for r in rows if "human_green_ecd_nm" in r]
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / max(prec + rec, 1e-12), "tp": tp, "fp": fp,
            "fn": fn, "matched": len(matched), "found": len(found), "kept": len(kept),
            "median_ecd_kept_nm": float(np.median(kept)) if kept else float("nan"),
            "human_green": len(green), "median_ecd_green_nm": float(np.median(green)) if green else float("nan")}


def cv_threshold(rows: list[dict], folds: int = 5) -> dict:
    """Threshold on P(covered) + P(agglomerate) chosen by F1 on 4/5 of the images, scored on the other 1/5."""
    images = sorted({r["image"] for r in rows})
    grid = np.round(np.arange(0.1, 0.91, 0.05), 2)
    chosen, held = [], []
    for f in range(folds):
        test = set(images[f::folds])
        train = [r for r in rows if r["image"] not in test]
        f1 = [decision_figures(train, lambda r, t=t: r["p_unmeasurable"] >= t)["f1"] for t in grid]
        t = float(grid[int(np.argmax(f1))])
        chosen.append(t)
        held += [dict(r, _t=t) for r in rows if r["image"] in test]
    fig = decision_figures(held, lambda r: r["p_unmeasurable"] >= r["_t"])
    return {"thresholds": chosen, **fig}


def speed(repeats: int = 5, threads: int = 2) -> dict:
    """Classification of ~300 particles in one 1024 x 712 image vs its segmentation (ONNX Runtime, ``threads``)."""
    from semforge.training.synth import synthetic_sem

    img, lab = synthetic_sem(seed=1, size=(712, 1024), n_particles=300, radius_px=(13, 2), databar_rows=0)
    gray = img.astype(np.float32) / 255
    parts = [{"id": int(i)} for i in np.unique(lab) if i]
    seg = create_segmenter("unetpp", threads=threads)
    cnn = create_classifier("cnn", threads=threads)
    seg.predict(gray)
    cnn.classify(gray, lab, parts)
    ts, tc = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg.predict(gray)
        ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cnn.classify(gray, lab, parts)
        tc.append(time.perf_counter() - t0)
    return {"particles": len(parts), "threads": threads, "segmentation_s": float(np.median(ts)),
            "classification_s": float(np.median(tc)), "crops_per_s": len(parts) / float(np.median(tc))}


def plots(out: Path, fig: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for cls_set in ("se", "transmission"):
        r = fig.get("rendered", {}).get(cls_set)
        if not r:
            continue
        fig_, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, name in zip(axes, ("cnn", "rules-v1")):
            c = np.array(r[name]["confusion"], float)
            labels = r[name]["labels"]
            keep = [i for i in range(len(labels)) if c[i].sum() or c[:, i].sum()]
            c = c[np.ix_(keep, keep)]
            norm = c / np.maximum(c.sum(1, keepdims=True), 1)
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(len(keep)), [labels[i] for i in keep], rotation=45, ha="right")
            ax.set_yticks(range(len(keep)), [labels[i] for i in keep])
            for i in range(len(keep)):
                for j in range(len(keep)):
                    if c[i, j]:
                        ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
            ax.set_xlabel("predicted")
            ax.set_ylabel("true (scene.json)")
            ax.set_title(f"{name}: accuracy {r[name]['accuracy']:.2f}, macro F1 {r[name]['macro_f1']:.2f}")
        fig_.suptitle(f"held-out rendered {cls_set} scenes, particles found by the shipped segmenter ({r['particles']})")
        fig_.tight_layout()
        fig_.savefig(out / f"classifier_confusion_{cls_set}.png", dpi=90)
        plt.close(fig_)
    rows = fig.get("_real_rows")
    if rows:
        found = [r for r in rows if "ecd_nm" in r]
        green = [r["human_green_ecd_nm"] for r in rows if "human_green_ecd_nm" in r]
        bins = np.linspace(0, 500, 41)
        plt.figure(figsize=(7, 4.2))
        plt.hist(green, bins, histtype="step", lw=2, color="green", label=f"human, fully visible (n={len(green)})")
        plt.hist([r["ecd_nm"] for r in found if not r["rules_excluded"]], bins, histtype="step", lw=1.5,
                 color="gray", label="analysis, rules-v1 (separation exclusions)")
        plt.hist([r["ecd_nm"] for r in found if r["cnn_class"] not in UNMEASURED], bins, histtype="step", lw=1.5,
                 color="C0", label="analysis, cnn (covered/agglomerate excluded)")
        plt.xlabel("ECD (nm)")
        plt.ylabel("particles")
        plt.title("20 real TiO2 SEM images: measured particles")
        plt.legend(fontsize=8)
        plt.tight_layout()
        plt.savefig(out / "classifier_real_ecd.png", dpi=90)
        plt.close()


def covered_threshold_figure(out: Path) -> None:
    """Visible fraction of the rendered particles and the ECD bias it causes (why COVERED_BELOW = 0.85)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semforge.classification import COVERED_BELOW

    vf = []
    for f in RENDERED.glob("cls-se-n*/scene_*/scene.json"):
        vf += [p["visible_fraction"] for p in json.loads(f.read_text())["particles"] if not p["cut_by_border"]]
    vf = np.array(vf)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].hist(vf, bins=np.linspace(0, 1, 41), color="gray")
    ax[0].axvline(COVERED_BELOW, color="C3")
    ax[0].set_xlabel("visible fraction (scene.json)")
    ax[0].set_ylabel("particles (rendered SE training scenes)")
    ax[0].set_yscale("log")
    ax[0].set_title(f"{(vf < COVERED_BELOW).mean():.0%} of {len(vf)} particles below {COVERED_BELOW}")
    f = np.linspace(0.2, 1, 100)
    ax[1].plot(f, (np.sqrt(f) - 1) * 100, label="ECD of the visible part vs the whole particle")
    ax[1].axvline(COVERED_BELOW, color="C3", label=f"covered below {COVERED_BELOW}: bias > {100 * (1 - COVERED_BELOW ** .5):.0f} %")
    ax[1].set_xlabel("visible fraction")
    ax[1].set_ylabel("ECD bias (%)")
    ax[1].legend(fontsize=8)
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "classifier_covered_threshold.png", dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write all figures here")
    ap.add_argument("--figures", help="folder for the PNG figures (docs/images)")
    ap.add_argument("--speed", action="store_true", help="only the speed benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-rendered", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--prepare", action="store_true", help="only segment (fills out/cls/eval-cache)")
    args = ap.parse_args()
    if args.prepare:
        seg = create_segmenter("unetpp", threads=args.threads)
        for cls_set, pat in (("se", "cls-se-test-*"), ("transmission", "cls-tem-test-*")):
            rendered_figures(seg, None, None, cls_set, sorted(RENDERED.glob(pat)))
        real_rows(seg, None)
        return 0
    if args.speed:
        print(json.dumps(speed(threads=args.threads), indent=1))
        return 0
    seg = create_segmenter("unetpp", threads=args.threads)
    cnn = create_classifier("cnn", threads=args.threads)
    rules = create_classifier("rules-v1")
    fig: dict = {"rendered": {}}
    if not args.skip_rendered:
        for cls_set, pat in (("se", "cls-se-test-*"), ("transmission", "cls-tem-test-*")):
            roots = sorted(RENDERED.glob(pat))
            if roots:
                fig["rendered"][cls_set] = rendered_figures(seg, cnn, rules, cls_set, roots)
                r = fig["rendered"][cls_set]
                print(f"rendered {cls_set}: {r['particles']} particles; cnn accuracy {r['cnn']['accuracy']:.3f} "
                      f"macro F1 {r['cnn']['macro_f1']:.3f}; rules-v1 accuracy {r['rules-v1']['accuracy']:.3f} "
                      f"macro F1 {r['rules-v1']['macro_f1']:.3f}", flush=True)
    if not args.skip_real and (BAM / "masks-4class").is_dir():
        rows = real_rows(seg, cnn)
        fig["_real_rows"] = rows
        fig["real"] = {
            "cnn": decision_figures(rows, lambda r: r["cnn_class"] in UNMEASURED),
            "rules-v1": decision_figures(rows, lambda r: r["rules_excluded"]),
            "none": decision_figures(rows, lambda r: False),
            "cnn_cv_threshold": cv_threshold(rows),
        }
        for k, v in fig["real"].items():
            print(f"real {k}: precision {v['precision']:.3f} recall {v['recall']:.3f} F1 {v['f1']:.3f}; kept "
                  f"{v['kept']} median ECD {v['median_ecd_kept_nm']:.1f} nm; human green {v['human_green']} "
                  f"median {v['median_ecd_green_nm']:.1f} nm", flush=True)
    if args.figures:
        plots(Path(args.figures), fig)
        covered_threshold_figure(Path(args.figures))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
