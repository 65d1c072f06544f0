"""Size distribution figure for docs/metrology.md (issue #13): the human-annotated particles of the
20 real SEM images (../shared/data/bam-tio2-sem), ECD by number and by volume, bootstrap intervals,
normal and log-normal fits; and the share of particles whose convexity is exactly 1.0 (now / with the
table's definition before #13).

Usage: python tests/bench/distribution_figure.py [--data DIR] [--out docs/images/distribution_bam_human.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tifffile

from semforge.analysis import MeasureOptions, load_image, measure_mask
from semforge.analysis._geometry import convexity as separation_convexity
from semforge.analysis._distribution import distribution_summary, plot_distribution

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bam-tio2-sem"))
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "distribution_bam_human.png"))
    a = ap.parse_args()
    data = Path(a.data)
    ecd, conv_new, conv_old = [], [], []
    for p in sorted((data / "images").glob("*.tif")):
        img = load_image(p)
        hm = tifffile.imread(data / "masks" / f"{p.stem}_m.tif")[:712] > 0
        res = measure_mask(hm, calibration=img.calibration, options=MeasureOptions(separate="none"))
        ecd += [q["ecd"] for q in res.included()]
        for q in res.included():
            crop = res.labels[q["bbox_y0_px"]:q["bbox_y1_px"], q["bbox_x0_px"]:q["bbox_x1_px"]] == q["id"]
            conv_new.append(q["convexity"])
            conv_old.append(separation_convexity(crop))  # the table's definition before #13
    s = distribution_summary(ecd)
    plot_distribution(s, ecd, a.out, title=f"ECD of the human-annotated particles, 20 BAM SEM images (n = {len(ecd)})")
    brief = {"count": s["count"], "mean": s["mean"], "mean_ci": s["mean_ci"],
             "quantiles": {q["label"]: [round(q["value"], 1), round(q["ci_low"], 1), round(q["ci_high"], 1)]
                           for q in s["quantiles"]},
             "fits": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in s["fits"].items()},
             "warnings": s["warnings"],
             "convexity_exactly_1": {"now": round(sum(c == 1.0 for c in conv_new) / len(conv_new), 4),
                                     "before_13": round(sum(c == 1.0 for c in conv_old) / len(conv_old), 4)}}
    print(json.dumps(brief, indent=1))


if __name__ == "__main__":
    main()
