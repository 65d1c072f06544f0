"""Real-data check of the analysis core on ../shared/data/bam-tio2-sem (issue: analysis core).

1. Human masks through the pipeline without merging (separation "none"):
   count and median ECD, checked against an independent computation
   (scikit-image regionprops on the same instances).
2. Human masks with touching particles merged (the 1-px separating lines
   removed by a 3x3 closing), then each separation mode: instance F1 at
   IoU 0.5 against the human instances, count and median ECD.
3. For scale: the classical segmenter (Otsu) + UECS on the real images.

Usage: python tests/bench/realdata_check.py [--data DIR] [--write docs/realdata.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from semforge.analysis import MeasureOptions, load_image, match_instances, measure_mask, detect_databar
from semforge.inference import create_segmenter
from semforge.analysis import to_gray_float

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/bam-tio2-sem"))
    ap.add_argument("--write", help="write the markdown table here")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no data at {data}; nothing to check", file=sys.stderr)
        return 0
    seg = create_segmenter("classical")
    rows = {k: {"f1": [], "n": 0, "ecd": [], "tp": 0, "fp": 0, "fn": 0, "t": []} for k in
            ("none", "watershed", "uecs", "classical+uecs")}
    human_n, human_ecd, indep_ecd, feret_ours, feret_indep, gt_total = 0, [], [], [], [], 0
    for ip in sorted((data / "images").glob("*.tif")):
        img = load_image(ip)
        px = img.calibration.pixel_size_nm
        rows_spec = detect_databar(img.pixels)
        hm = tifffile.imread(data / "masks" / (ip.stem + "_m.tif"))[:rows_spec] > 0
        truth = label(hm, connectivity=1)
        # drop human specks below the pipeline's speckle floor, so both sides count the same objects
        sizes = np.bincount(truth.ravel())
        truth[(sizes < 20)[truth]] = 0
        truth = label(truth > 0, connectivity=1)
        gt_total += int(truth.max())
        # 1. human masks as they are
        res = measure_mask(hm, calibration=img.calibration, specimen_rows=rows_spec,
                           options=MeasureOptions(separate="none"))
        inc = res.included()
        human_n += len(inc)
        human_ecd += [p["ecd_nm"] for p in inc]
        feret_ours += [p["feret_max_nm"] for p in inc]
        for p in inc:
            lab = res.labels[p["bbox_y0_px"]:p["bbox_y1_px"], p["bbox_x0_px"]:p["bbox_x1_px"]] == p["id"]
            rp = regionprops(lab.astype(np.uint8))[0]
            indep_ecd.append(rp.equivalent_diameter_area * px)
            feret_indep.append(rp.feret_diameter_max * px)
        # 2. merged masks, each separation mode
        merged = hm | ndi.binary_closing(hm, structure=np.ones((3, 3)))
        for mode in ("none", "watershed", "uecs"):
            t0 = time.perf_counter()
            r = measure_mask(merged, calibration=img.calibration, specimen_rows=rows_spec,
                             options=MeasureOptions(separate=mode, classify=False))
            rows[mode]["t"].append(time.perf_counter() - t0)
            _acc(rows[mode], r, truth)
        # 3. classical segmentation of the real image + UECS
        gray = to_gray_float(img.pixels)[:rows_spec]
        mask = seg.predict(gray, modality="se") >= 0.5
        t0 = time.perf_counter()
        r = measure_mask(mask, calibration=img.calibration, specimen_rows=rows_spec,
                         options=MeasureOptions(separate="uecs", classify=False))
        rows["classical+uecs"]["t"].append(time.perf_counter() - t0)
        _acc(rows["classical+uecs"], r, truth)

    lines = ["# Real-data check of the analysis core", "",
             "Data: the 20 annotated SEM images of `../shared/data/bam-tio2-sem/` (TiO2, 7.344 nm/px, "
             "data bar rows 712+ cut automatically). Reproduce with `make realdata` "
             "(`python tests/bench/realdata_check.py --write docs/realdata.md`).", "",
             "## Human masks through the pipeline (no merging, separation `none`)", "",
             "| quantity | semforge | independent (scikit-image regionprops) |", "|---|---|---|",
             f"| particles measured (not cut by the border) | {human_n} | - |",
             f"| median ECD (nm) | {np.median(human_ecd):.1f} | {np.median(indep_ecd):.1f} |",
             f"| median max Feret (nm) | {np.median(feret_ours):.1f} | {np.median(feret_indep):.1f} |", "",
             "ECD is area based in both; max Feret differs by construction (semforge: calipers on the 0.5 "
             "iso-line hull; scikit-image: hull of pixel corners), so a small systematic difference is expected.", "",
             "## Touching particles merged, then separated", "",
             f"Human instances (>= 20 px): {gt_total}; human median ECD {np.median(human_ecd):.1f} nm.", "",
             "| input / separation | instance F1 @ IoU 0.5 | precision | recall | particles included | "
             "median ECD (nm) | vs human | median time / image (s) |", "|---|---|---|---|---|---|---|---|"]
    hmed = np.median(human_ecd)
    for mode, d in rows.items():
        prec = d["tp"] / max(d["tp"] + d["fp"], 1)
        rec = d["tp"] / max(d["tp"] + d["fn"], 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-12)
        med = np.median(d["ecd"]) if d["ecd"] else float("nan")
        name = f"merged human masks / `{mode}`" if mode != "classical+uecs" else "classical (Otsu) segmentation / `uecs`"
        lines.append(f"| {name} | {f1:.3f} | {prec:.3f} | {rec:.3f} | {d['n']} | {med:.1f} | "
                     f"{(med / hmed - 1) * 100:+.1f} % | {np.median(d['t']):.3f} |")
    lines += ["", "F1 pools the matches of all 20 images (all predicted instances, included or excluded, against "
              "all human instances). Particle counts and median ECD are over included particles "
              "(not cut by the border, not excluded by separation).", "",
              "Reading: closing the 1-px separating lines turns the agglomerated TiO2 into large non-convex "
              "clusters of irregular particles. UECS stops eroding a piece as soon as it is convex at 0.95, "
              "which for irregular, non-spherical particles often happens while several particles are still "
              "joined, so it under-splits (recall 0.29); the distance-transform watershed (h = 0.5 px) splits "
              "more (F1 0.62) but both stay far from the human instances. Separation alone cannot undo merged "
              "agglomerates of this kind: the segmenter must predict the borders between touching particles "
              "(a boundary or distance channel, as the segmentation issue asks)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    return 0


def _acc(d, r, truth):
    m = match_instances(r.labels[: truth.shape[0]], truth)
    d["tp"] += m["tp"]
    d["fp"] += m["fp"]
    d["fn"] += m["fn"]
    inc = r.included()
    d["n"] += len(inc)
    unit = r.unit
    d["ecd"] += [p[f"ecd_{unit}"] for p in inc]


if __name__ == "__main__":
    sys.exit(main())
