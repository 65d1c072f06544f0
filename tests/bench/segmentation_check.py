"""Segmentation figures on the 20 annotated real SEM images (and on held-out rendered transmission scenes).

Usage: python tests/bench/segmentation_check.py --write docs/segmentation.md   (make segcheck)

Runs `semforge evaluate`'s code for: the classical Otsu segmenter, the shipped
UNet++ SE model (trained only on rendered scenes) with each separation, the
particle channel alone (border channel ignored), and, when given with
--reference, a model trained on real images (its training images are left out
of its figures). The shipped transmission model is scored on freshly rendered
transmission scenes with seeds it never saw (no real STEM/TEM annotations here).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))

from semforge.inference import SHIPPED, OnnxSegmenter, create_segmenter, model_dir  # noqa: E402
from semforge.training.segmentation.evaluate import evaluate_segmenter as _evaluate, format_markdown  # noqa: E402

#: the post-processing of these (pre-#16) figures: threshold 0.5, nothing grown or filtered; the analysis'
#: default since #16 is per modality (semforge.postprocess.RECOMMENDED, docs/segmentation.md)
PRE16 = {"threshold": 0.5, "grow_px": 0, "min_contrast": 0.0}


def evaluate_segmenter(*args, **kw):
    return _evaluate(*args, **{**PRE16, **kw})

VAL = ["1908248", "1908258", "1908268", "1908278"]  # used for model selection of both SE models


class ParticleChannelOnly:
    """The shipped model with its border channel ignored (ablation)."""

    def __init__(self, seg):
        self.seg, self.name = seg, "unetpp, particle channel only"

    def predict(self, gray, *, modality="se"):
        return self.seg.for_modality(modality).predict_channels(gray)[0]


def rendered_transmission(tmp: Path, scenes: int = 4) -> tuple[Path, Path]:
    """Held-out transmission scenes as images/ + masks/ (touching particles split by a 1-px line)."""
    import tifffile
    from PIL import Image

    from semforge.training.scenes import SceneSpec, render_batch
    from semforge.training.segmentation.data import touching_gaps
    from semforge.training.segmentation.recipes import recipe_datasets
    from semforge.storage import LocalStore

    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    store = LocalStore(tmp / "store")
    _, spec, _ = recipe_datasets("transmission")[1]
    spec = SceneSpec(**{**spec.__dict__, "seed": 987654})
    render_batch(spec, scenes, store, "heldout")
    for i in range(scenes):
        d = tmp / "store" / "datasets" / "heldout" / f"scene_{i:05d}"
        ids = tifffile.imread(d / "instances.tif")
        mask = ((ids > 0) & ~touching_gaps(ids.astype(np.int32))).astype(np.uint8) * 255
        tifffile.imwrite(tmp / "images" / f"t{i}.tif", np.array(Image.open(d / "transmission.png")))
        tifffile.imwrite(tmp / "masks" / f"t{i}_m.tif", mask)
    return tmp / "images", tmp / "masks"


def _get(rows, seg, sep, key):
    return next(r[key] for r in rows if r["segmenter"] == seg and r["separation"] == sep)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/bam-tio2-sem"))
    ap.add_argument("--reference", help="model folder (models repo root) holding semforge_unetpp_real_reference")
    ap.add_argument("--write")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "images").is_dir():
        print(f"no data at {data}; nothing to check", file=sys.stderr)
        return 0
    imgs, masks = data / "images", data / "masks"
    held = sorted(p.stem for p in imgs.glob("*.tif") if p.stem not in VAL)
    unet = create_segmenter("unetpp")
    classical = create_segmenter("classical")
    results = {"all20": [], "val4": [], "held16": [], "transmission": []}
    for seg, name in ((classical, "classical (Otsu)"), (unet, "unetpp (shipped SE, rendered data only)")):
        for sep in ("uecs", "watershed", "none"):
            r = evaluate_segmenter(seg, imgs, masks, separate=sep)
            r["segmenter"] = name
            results["all20"].append(r)
    r = evaluate_segmenter(ParticleChannelOnly(unet), imgs, masks, separate="uecs")
    r["segmenter"] = "unetpp, particle channel only"
    results["all20"].append(r)
    for sep in ("uecs", "watershed"):
        r = evaluate_segmenter(unet, imgs, masks, separate=sep, names=held)
        r["segmenter"] = "unetpp (shipped SE)"
        results["held16"].append(r)
        r = evaluate_segmenter(unet, imgs, masks, separate=sep, names=VAL)
        r["segmenter"] = "unetpp (shipped SE, rendered data only)"
        results["val4"].append(r)
        r = evaluate_segmenter(classical, imgs, masks, separate=sep, names=VAL)
        r["segmenter"] = "classical (Otsu)"
        results["val4"].append(r)
    if args.reference:
        ref = OnnxSegmenter("semforge_unetpp_real_reference", repo=args.reference)
        ref.name = "unetpp trained on the 16 other real images (reference)"
        for sep in ("uecs", "watershed"):
            r = evaluate_segmenter(ref, imgs, masks, separate=sep, names=VAL)
            r["segmenter"] = ref.name
            results["val4"].append(r)
    with tempfile.TemporaryDirectory() as d:
        ti, tm = rendered_transmission(Path(d))
        tem = create_segmenter("unetpp")
        for sep in ("uecs", "watershed"):
            r = evaluate_segmenter(tem, ti, tm, modality="tem", separate=sep)
            r["segmenter"] = "unetpp (shipped transmission)"
            results["transmission"].append(r)
            r = evaluate_segmenter(classical, ti, tm, modality="tem", separate=sep)
            r["segmenter"] = "classical (Otsu)"
            results["transmission"].append(r)
    se_rec = json.loads((model_dir(SHIPPED["se"]) / "training.json").read_text())
    tem_rec = json.loads((model_dir(SHIPPED["tem"]) / "training.json").read_text())
    lines = ["# Segmentation on real micrographs", "",
             "Reproduce: `make segcheck` (`python tests/bench/segmentation_check.py --write docs/segmentation.md`), "
             "or one row: `semforge evaluate --images ../shared/data/bam-tio2-sem/images "
             "--masks ../shared/data/bam-tio2-sem/masks --segmenter unetpp,classical --separate uecs,watershed`.", "",
             "Data: the 20 annotated SEM images of `../shared/data/bam-tio2-sem/` (TiO2, 7.344 nm/px, data bar cut "
             "automatically). Instances: 4-connected components of the human masks, specks < 20 px dropped. "
             "Every figure is after the full analysis path (segment -> clean -> separate -> measure). "
             "AP is TP / (TP + FP + FN) per IoU threshold (Mill et al. 2021); counts and median ECD are over the "
             "included particles (not cut by the border, not rejected by separation) on both sides.", "",
             "Goals (issue): foreground IoU >= 0.90, instance F1@0.5 >= 0.80, median ECD within 5 % of the human "
             "masks.", "",
             f"The shipped SE model was trained only on {se_rec['training_pairs']} rendered scenes "
             f"(`semforge train segmenter --recipe se`, {se_rec['steps_done']} steps, seed {se_rec['config']['seed']}); "
             f"4 real images ({', '.join(VAL)}) chose its checkpoint. Its record: "
             "`models_repo/semforge_unetpp_se/1/training.json`.", "",
             "## All 20 images", "", format_markdown(results["all20"]), "",
             "## The 16 images not used for checkpoint selection", "", format_markdown(results["held16"]), "",
             "## The 4 selection images: rendered-only vs a model trained on real images", "",
             format_markdown(results["val4"]), "",
             "## Transmission model on held-out rendered transmission scenes", "",
             f"No annotated real STEM/TEM images exist here; the shipped transmission model "
             f"({tem_rec['training_pairs']} rendered scenes, {tem_rec['steps_done']} steps) is scored on 4 "
             "freshly rendered transmission scenes (seed 987654, never seen).", "",
             format_markdown(results["transmission"]), "",
             "## Reading", "",
             "- Rendered-only UNet++ vs the classical pipeline, all 20 images, watershed: foreground IoU "
             f"{_get(results['all20'], 'unetpp (shipped SE, rendered data only)', 'watershed', 'foreground_iou'):.3f} vs "
             f"{_get(results['all20'], 'classical (Otsu)', 'watershed', 'foreground_iou'):.3f}, instance F1 "
             f"{_get(results['all20'], 'unetpp (shipped SE, rendered data only)', 'watershed', 'instance_f1'):.3f} vs "
             f"{_get(results['all20'], 'classical (Otsu)', 'watershed', 'instance_f1'):.3f}. Goals: median ECD within "
             "5 % is met with watershed; foreground IoU >= 0.90 and instance F1 >= 0.80 are not met by the "
             "rendered-only model.",
             "- The border channel earns its place: the same network with the border output ignored loses instance "
             "F1 and over-sizes particles (row 'particle channel only' vs 'uecs').",
             "- Synthetic-to-real gap, measured on the 4 selection images with the reference trained on the 16 "
             "other real images (same architecture and step budget; its weights are not shipped): see the third "
             "table. The gap is a few points of F1 and IoU; closing it is what the CycleGAN route is for.",
             "- With the UNet++, watershed separation beats UECS on every figure here (UECS drops non-convex pieces "
             "that the network already split correctly); the analysis default stays UECS (the seed's routine) until "
             "that decision is taken deliberately.",
             "- The transmission model has no real annotated data to be checked against here; its figures are on "
             "rendered scenes and say only that it learned the rendered domain.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
