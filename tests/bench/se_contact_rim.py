"""Write a variant SE look into rendered datasets: the edge brightening weighted down where two particles meet
(``appearance.se_image(..., contact_rim=c)``, c drawn per scene), from each scene's height map and instances, no
Blender (#16, round 4). The network then learns it with ``semforge adapt --render-image se_contact.png``.

Usage: python tests/bench/se_contact_rim.py DATASET... [--low 0 --high 0.3] [--name se_contact.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services"))


def main() -> int:
    import tifffile
    from PIL import Image

    from semforge.training.scenes.appearance import se_image, to_uint8

    ap = argparse.ArgumentParser()
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--low", type=float, default=0.0)
    ap.add_argument("--high", type=float, default=0.3)
    ap.add_argument("--name", default="se_contact.png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 0 <= args.low <= args.high <= 1:
        ap.error(f"need 0 <= --low <= --high <= 1, got {args.low:g}, {args.high:g}")
    n = 0
    for ds in args.datasets:
        scenes = sorted(d for d in Path(ds).glob("scene_*") if (d / "scene.json").exists())
        if not scenes:
            ap.error(f"no rendered scenes (scene_*/scene.json) under {ds}")
        for k, d in enumerate(scenes):
            scene = json.loads((d / "scene.json").read_text())
            rng = np.random.default_rng([args.seed, int(scene["spec"]["seed"]) % 2**32, k])
            c = float(rng.uniform(args.low, args.high))
            img = se_image(tifffile.imread(d / "height_nm.tif"), tifffile.imread(d / "instances.tif"),
                           float(scene["pixel_size_nm"]), rng, contact_rim=c)
            Image.fromarray(to_uint8(img)).save(d / args.name)
            n += 1
    print(f"{n} scenes: {args.name} written (contact rim {args.low:g}..{args.high:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
