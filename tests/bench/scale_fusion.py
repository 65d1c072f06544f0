"""Two-scale instance fusion on the real annotated images: does taking the x1.5 cuts inside the x1 outlines
separate merged small grains without splitting large particles? (#16, the merge lever)

Usage:
  python tests/bench/scale_fusion.py [--modality se] [--model semforge_unetpp_se/1 | --adapted DIR]
                                     [--scale 1.5] [--write out/fusion.md]

Per image: the network at x1 and at ``--scale`` (input up-sampled; separated at that size, labels brought
back by nearest neighbour); the fusion (:func:`semforge.training.segmentation.scalefuse.fuse_instances`)
for a grid of the largest piece allowed and the finer scale's threshold, then the shipped boundary
refinement. The rows: fixed variants on all images, and the fusion parameters chosen by 5-fold CV
(contiguous blocks of sorted ids, objective of segmentation_cv), scored on the held-out folds.
Network outputs are cached under out/fusion/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from semforge.analysis._refine import refine_boundaries  # noqa: E402
from semforge.analysis._separate import RECOMMENDED  # noqa: E402
from semforge.inference import OnnxSegmenter  # noqa: E402
from semforge.training.segmentation.crossval import (PostParams, aggregate, cross_validate,  # noqa: E402
                                                     image_stats, instances_from_probabilities, load_annotated)
from semforge.training.segmentation.scalefuse import fine_instances, fuse_instances  # noqa: E402

DATA = {"se": REPO.parent / "shared/data/bam-tio2-sem", "tem": REPO.parent / "shared/data/bam-tio2-tsem"}
CACHE = REPO / "out" / "fusion"


def upsample(gray: np.ndarray, scale: float) -> np.ndarray:
    from skimage.transform import resize

    h, w = gray.shape
    return resize(gray, (round(h * scale), round(w * scale)), order=1, preserve_range=True,
                  anti_aliasing=False).astype(np.float32)


def make_predictor(args):
    """(cache key, per_image(name) -> predict_channels)."""
    if args.adapted:
        path = Path(args.adapted)
        rec = json.loads((path / "folds.json").read_text())
        h = hashlib.md5()
        for v in sorted(rec["versions"]):
            h.update((path / v / "model.onnx").read_bytes())
        segs = {}

        def per_image(name):
            for v, seen in sorted(rec["versions"].items()):
                if name not in seen:
                    if v not in segs:
                        segs[v] = OnnxSegmenter(path.name, version=int(v), repo=path.parent, threads=args.threads)
                    return segs[v].predict_channels
            raise ValueError(f"every version of {path} saw {name}")
        return f"{path.name}-{h.hexdigest()[:8]}", per_image
    name, version = args.model.split("/")
    seg = OnnxSegmenter(name, version=int(version), threads=args.threads)
    from semforge.inference import model_dir

    digest = hashlib.md5((model_dir(name, int(version)) / "model.onnx").read_bytes()).hexdigest()[:8]
    return f"{name}-{version}-{digest}", lambda _n: seg.predict_channels


def probs(key, fn, s, scale):
    f = CACHE / key / f"{s.name}@{scale:g}.npy"
    if f.exists():
        return np.load(f).astype(np.float32)
    g = s.gray if scale == 1 else upsample(s.gray, scale)
    t0 = time.perf_counter()
    p = np.asarray(fn(g), np.float32)
    f.parent.mkdir(parents=True, exist_ok=True)
    np.save(f, p.astype(np.float16))
    print(f"  {s.name} x{scale:g}: {time.perf_counter() - t0:.1f} s", flush=True)
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", default="se", choices=["se", "tem"])
    ap.add_argument("--model", default="semforge_unetpp_se/1")
    ap.add_argument("--adapted", default="")
    ap.add_argument("--scale", type=float, default=1.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", default="")
    args = ap.parse_args()
    samples = load_annotated(DATA[args.modality])
    key, per_image = make_predictor(args)
    rec = RECOMMENDED[args.modality]
    dark = args.modality == "tem"
    base = PostParams(threshold=rec["threshold"], separate="watershed", h=rec.get("watershed_h", 0.5),
                      min_contrast=rec.get("min_contrast", 0.0))
    band = rec.get("refine_px", 0)
    pieces_nm = (100, 130, 160, 200, 250, math.inf)
    fine_t = (0.5, 0.6)
    table: dict[str, dict] = {}
    for s in samples:
        fn = per_image(s.name)
        p1 = probs(key, fn, s, 1.0)
        pf = probs(key, fn, s, args.scale)
        coarse = instances_from_probabilities(p1, base, gray=s.gray, dark=dark, pixel_size_nm=s.pixel_size_nm)

        def finish(lab):
            return refine_boundaries(lab, s.gray, dark=dark, band_px=band) if band else lab
        table.setdefault("x1 (shipped default)", {})[s.name] = image_stats(finish(coarse), s.truth, s.pixel_size_nm)
        for tf in fine_t:
            fine = fine_instances(pf, coarse.shape, PostParams(threshold=tf, separate="watershed", h=base.h),
                                  pixel_size_nm=s.pixel_size_nm, scale=args.scale)
            if base.min_contrast:
                fine = np.where(coarse > 0, fine, 0)
            table.setdefault(f"x{args.scale:g} alone t={tf:g}", {})[s.name] = image_stats(
                finish(np.where(coarse > 0, fine, 0)), s.truth, s.pixel_size_nm)
            for pn in pieces_nm:
                max_px = math.pi / 4 * (pn / s.pixel_size_nm) ** 2 if math.isfinite(pn) else math.inf
                fused = fuse_instances(coarse, fine, max_piece_px=max_px)
                table.setdefault(f"fused t_fine={tf:g} piece<={pn:g}nm", {})[s.name] = image_stats(
                    finish(fused), s.truth, s.pixel_size_nm)
        print(f"{s.name} done", flush=True)
    names = [s.name for s in samples]
    lines = [f"Model `{args.adapted or args.model}` ({key}), {args.modality}, fine scale x{args.scale:g}; "
             f"base {base.label()}, refinement band {band} px.", "",
             "| rows | fg IoU | F1@0.5 | AP@0.5:0.95 | count | median ECD | matched / merged / split / missed % | "
             "recall <100 / 100-150 / 150-250 / >=250 nm |", "|---|---|---|---|---|---|---|---|"]

    def row(label, fig):
        a, rb = fig["anatomy"], fig["recall_by_size"]
        return (f"| {label} | {fig['foreground_iou']:.3f} | **{fig['instance_f1']:.3f}** | {fig['ap50_95']:.3f} | "
                f"{fig['count_pred']} / {fig['count_true']} ({fig['count_error'] * 100:+.0f} %) | "
                f"{fig['median_ecd_error'] * 100:+.1f} % | {a['matched'] * 100:.0f} / {a['merged'] * 100:.0f} / "
                f"{a['split'] * 100:.0f} / {a['missed'] * 100:.0f} | "
                + " / ".join(f"{v:.2f}" for v in rb.values()) + " |")
    for label, per in table.items():
        lines.append(row(label + " (all 20, fixed)", aggregate([per[n] for n in names])))
    fused = {k: v for k, v in table.items() if k.startswith("fused") or k.startswith("x1 ")}
    cv = cross_validate(fused, names)
    lines.append(row("**fusion, parameters by 5-fold CV (held out)**", cv["figures"]))
    lines += ["", f"CV chose per fold: {'; '.join(cv['chosen'])}; on all 20: {cv['final']}"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
