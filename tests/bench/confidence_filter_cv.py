"""Does dropping the least confident particles pay? (#16, per-particle confidence as a filter)

Scores, on the SE fold models of an adapted route (``--adapted DIR``, `semforge adapt --folds 2` output), the
shipped default post-processing (RECOMMENDED) followed by a filter on each particle's mean combined probability
(the `seg_confidence` of the reports): drop particles under 0 (off) / 0.55 / 0.6 / 0.65 / 0.7 / 0.75; the cut is
chosen by 5-fold CV with the objective of tests/bench/segmentation_cv.py and scored on the held-out folds.

  OMP_NUM_THREADS=1 python tests/bench/confidence_filter_cv.py --adapted out/adapt/s600/semforge_unetpp_se_st_s600
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from segmentation_cv import DATA, adapted, recommended_variant  # noqa: E402

from semforge.analysis._refine import refine_boundaries  # noqa: E402
from semforge.training.segmentation.crossval import (PostParams, _combined, _refine_labels, aggregate,  # noqa: E402
                                                     cross_validate, image_stats, instances_from_probabilities,
                                                     load_annotated)

CUTS = (0.0, 0.55, 0.6, 0.65, 0.7, 0.75)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapted", required=True)
    ap.add_argument("--modality", default="se")
    args = ap.parse_args()
    samples = load_annotated(DATA[args.modality])
    model = adapted(Path(args.adapted), args.modality)
    v = recommended_variant(args.modality)
    dark = args.modality == "tem"
    table: dict[str, dict] = {}
    for s in samples:
        p = model.probs(s, 1.0)
        lab = instances_from_probabilities(p, PostParams(threshold=v.threshold, separate=v.separate, h=v.h),
                                           pixel_size_nm=s.pixel_size_nm)
        lab = _refine_labels(lab, p, s.gray, v.post, dark)
        if v.refine is not None:
            lab = refine_boundaries(lab, s.gray, dark=dark, band_px=v.refine.band_px)
            lab = _refine_labels(lab, p, s.gray, PostParams(), dark)  # specks < 20 px dropped, as the harness
        q = np.round(_combined(p) * 255) / 255
        n = int(lab.max())
        conf = np.asarray(ndi.mean(q, lab, np.arange(1, n + 1))) if n else np.zeros(0)
        for cut in CUTS:
            keep = np.concatenate([[0], np.where(conf >= cut, np.arange(1, n + 1), 0)]).astype(np.int32)
            table.setdefault(f"seg_confidence >= {cut:g}", {})[s.name] = image_stats(keep[lab], s.truth,
                                                                                     s.pixel_size_nm)
    names = [s.name for s in samples]
    print(f"{args.adapted}: {v.label()}")
    print("| rows | fg IoU | F1@0.5 | AP@0.5:0.95 | count | median ECD |\n|---|---|---|---|---|---|")
    for k, per in table.items():
        f = aggregate([per[n] for n in names])
        print(f"| {k} (all 20) | {f['foreground_iou']:.3f} | {f['instance_f1']:.3f} | {f['ap50_95']:.3f} | "
              f"{f['count_pred']} ({f['count_error'] * 100:+.0f} %) | {f['median_ecd_error'] * 100:+.1f} % |")
    cv = cross_validate(table, names)
    f = cv["figures"]
    print(f"| **cut by CV (held out)** | {f['foreground_iou']:.3f} | {f['instance_f1']:.3f} | {f['ap50_95']:.3f} | "
          f"{f['count_pred']} ({f['count_error'] * 100:+.0f} %) | {f['median_ecd_error'] * 100:+.1f} % |")
    print(f"chosen per fold: {cv['chosen']}; on all 20: {cv['final']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
