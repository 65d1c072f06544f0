"""Per-image confidence signals of the shipped models, in domain vs out of domain (#16).

Usage: python tests/bench/confidence_check.py   (after tests/bench/segmentation_cv.py has cached the in-domain outputs)

In domain: each shipped model on the real annotated images of its own modality. Out of domain: the same
images given to the other modality's model, a blank field and a noise field.
Prints one markdown table of the signals (min / median / max) and the flag rate per group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from segmentation_cv import DATA, Model, shipped  # noqa: E402
from semforge.inference import SHIPPED, OnnxSegmenter  # noqa: E402
from semforge.training.segmentation.confidence import image_confidence  # noqa: E402
from semforge.training.segmentation.crossval import load_annotated  # noqa: E402


def main() -> int:
    groups: dict[str, list[dict]] = {}
    other = {"se": "tem", "tem": "se"}
    for mod in ("se", "tem"):
        if not (DATA[mod] / "images").is_dir():
            continue
        samples = load_annotated(DATA[mod])
        own = shipped(mod)
        w = shipped(other[mod])
        wrong = Model(w.key.replace("shipped", f"model-{other[mod]}"), mod, w.channels)
        groups[f"{mod} images, {mod} model (in domain)"] = [image_confidence(own.probs(s, 1.0)) for s in samples]
        groups[f"{mod} images, {other[mod]} model (out of domain)"] = [image_confidence(wrong.probs(s, 1.0))
                                                                        for s in samples]
    seg = OnnxSegmenter(SHIPPED["se"], threads=1)
    rng = np.random.default_rng(0)
    groups["blank / noise fields, se model (out of domain)"] = [
        image_confidence(seg.predict_channels(f)) for f in
        (np.full((512, 512), 0.5, np.float32), rng.random((512, 512)).astype(np.float32),
         np.clip(rng.normal(0.3, 0.05, (512, 512)), 0, 1).astype(np.float32))]
    print("| images, model | n | foreground fraction | uncertain share | mean confidence | score | flagged |")
    print("|---|---|---|---|---|---|---|")
    for g, rs in groups.items():
        def mmm(k):
            v = np.array([r[k] for r in rs])
            return f"{v.min():.3f} / {np.median(v):.3f} / {v.max():.3f}"
        flagged = sum(not r["trusted"] for r in rs)
        print(f"| {g} | {len(rs)} | {mmm('foreground_fraction')} | {mmm('uncertain_share')} | "
              f"{mmm('mean_confidence')} | {mmm('score')} | {flagged} / {len(rs)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
