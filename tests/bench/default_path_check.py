"""What `semforge analyze` does by default, scored on the shared annotated images (#16).

For each modality: the shipped model through the analysis' own stages with NO post-processing option given
(`LocalStages` prepare -> segment -> measure: the defaults of `semforge analyze` / the gateway), scored with
the cross-validation harness' figures (`crossval.image_stats` / `aggregate`, the columns of the CV table);
beside it the harness' own reconstruction of the variant chosen on all 20 images ("final") from the same
network outputs, which the default path must reproduce. Both are IN-SAMPLE for the post-processing (it was
chosen on these images); the held-out figures are the CV rows of docs/segmentation.md. Also the per-image
confidence flags of the default path on these in-domain images.

Run (nice'd, one thread): ``OMP_NUM_THREADS=1 nice -n 10 python tests/bench/default_path_check.py [--json F]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

import numpy as np  # noqa: E402

from semforge.analysis import MeasureOptions  # noqa: E402
from semforge.analysis._refine import refine_boundaries  # noqa: E402
from semforge.inference import create_segmenter  # noqa: E402
from semforge.modality import Modality  # noqa: E402
from semforge.pipeline import AnalysisOptions, LocalStages  # noqa: E402
from semforge.postprocess import recommended  # noqa: E402
from semforge.training.segmentation.crossval import (PostParams, aggregate, image_stats,  # noqa: E402
                                                     instances_from_probabilities, load_annotated)

SHARED = Path(os.environ.get("SEMFORGE_SHARED", REPO.parent / "shared"))
DATA = {"se": SHARED / "data" / "bam-tio2-sem", "tem": SHARED / "data" / "bam-tio2-tsem"}


class Recording:
    """The shipped segmenter, keeping the last network output (so the harness reuses it, no second run)."""

    reports_confidence = True

    def __init__(self, seg):
        self.seg, self.name, self.last, self.seconds = seg, seg.name, None, []

    def channels(self, gray, *, modality="se"):
        t0 = time.perf_counter()
        self.last = self.seg.channels(gray, modality=modality)
        self.seconds.append(time.perf_counter() - t0)
        return self.last

    def predict(self, gray, *, modality="se"):  # pragma: no cover - the stage uses channels()
        raise NotImplementedError


def fmt(label: str, f: dict) -> str:
    a = f["anatomy"]
    return (f"| {label} | {f['foreground_iou']:.3f} | **{f['instance_f1']:.3f}** | {f['ap50_95']:.3f} | "
            f"{f['count_pred']} / {f['count_true']} ({f['count_error'] * 100:+.0f} %) | "
            f"{f['median_ecd_pred']:.0f} / {f['median_ecd_true']:.0f} ({f['median_ecd_error'] * 100:+.1f} %) | "
            f"{f['boundary_offset_px']:+.2f} | {a['matched'] * 100:.0f} / {a['merged'] * 100:.0f} / "
            f"{a['split'] * 100:.0f} / {a['missed'] * 100:.0f} / {a['misshaped'] * 100:.0f} | "
            f"{f['spurious'] * 100:.0f} |")


HEAD = ("| path (all 20 images, in-sample post-processing) | fg IoU | F1@0.5 | AP@0.5:0.95 | count pred / human | "
        "median ECD nm pred / human | boundary offset px | human particles: matched / merged / split / missed / "
        "misshaped % | spurious % |\n|---|---|---|---|---|---|---|---|---|")


def run(modality: str, log) -> dict:
    samples = {s.name: s for s in load_annotated(DATA[modality])}
    seg = Recording(create_segmenter("unetpp", threads=1))
    stages = LocalStages(seg)
    opts = AnalysisOptions(MeasureOptions(modality=modality, classify=False))  # nothing chosen: the defaults
    post = recommended(modality, "unetpp")
    params = PostParams(threshold=post.threshold, separate=post.separate, h=post.watershed_h,
                        offset_px=post.grow_px, min_contrast=post.min_contrast)
    dark = Modality.parse(modality).dark_particles
    default, harness, flags, applied = [], [], {}, None
    for i, ip in enumerate(sorted((DATA[modality] / "images").glob("*.tif"))):
        s = samples[ip.stem]
        prep = stages.prepare(ip, ip.stem, opts)
        segd = stages.segment(prep, opts)
        measured = stages.measure(prep, segd, opts)
        applied = measured.table.postprocess
        rows = min(prep.specimen_rows, s.truth.shape[0])
        default.append(image_stats(measured.labels[:rows].astype(np.int32), s.truth[:rows], s.pixel_size_nm))
        lab = instances_from_probabilities(np.asarray(seg.last, np.float32), params, gray=s.gray, dark=dark,
                                           pixel_size_nm=s.pixel_size_nm)
        if post.refine_px:  # after the filter, before the offset (the harness' order, tests/bench/segmentation_cv.py)
            lab = refine_boundaries(lab, s.gray, dark=dark, band_px=int(post.refine_px))
        harness.append(image_stats(lab[:rows], s.truth[:rows], s.pixel_size_nm))
        flags[ip.stem] = segd.confidence["flags"] if segd.confidence else None
        log(f"  {modality} {i + 1}/{len(samples)} {ip.stem} ({seg.seconds[-1]:.1f} s network)")
    return {"applied": applied, "default": aggregate(default), "harness_final": aggregate(harness),
            "harness_params": params.label() + (f" refine={post.refine_px}px" if post.refine_px else ""), "flags": flags,
            "network_s_median": float(np.median(seg.seconds))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", default="both", choices=("se", "tem", "both"))
    ap.add_argument("--json")
    args = ap.parse_args()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    out = {}
    for mod in ("se", "tem") if args.modality == "both" else (args.modality,):
        if not (DATA[mod] / "images").is_dir():
            log(f"no data at {DATA[mod]}; skipping {mod}")
            continue
        r = out[mod] = run(mod, log)
        print(f"\n### {mod}: applied {r['applied']}\n\n{HEAD}")
        print(fmt("`semforge analyze` default path (pipeline stages)", r["default"]))
        print(fmt(f"CV harness, final variant ({r['harness_params']})", r["harness_final"]))
        n_flag = sum(bool(f) for f in r["flags"].values())
        print(f"\nconfidence flags: {n_flag} / {len(r['flags'])} images flagged "
              f"{ {k: v for k, v in r['flags'].items() if v} }; network {r['network_s_median']:.2f} s / image")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
