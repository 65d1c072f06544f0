"""Rendered scenes for people to look at: docs/images/render_gallery.png.

Usage: python tests/bench/render_gallery.py --write docs/images/render_gallery.png   (make gallery)

Three scenes (rows): spheres and indented spheres; rods, cubes and plates;
polyhedra. Columns: SE-like render, transmission-like render, normalized height,
instance ids (random colours), Freestyle borders.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))

from semforge.training.scenes import BlenderWorker, SceneSpec, ShapeComponent, render_scene  # noqa: E402

SCENES = [
    ("spheres + indented spheres, log-normal", [ShapeComponent("sphere", 3, 50, 12, "lognormal"),
                                                ShapeComponent("indented_sphere", 1, 60, 8)], 260),
    ("rods, cubes, hexagonal/trigonal plates", [ShapeComponent("short_rod", 1, 30, 4), ShapeComponent("long_rod", 1, 22, 3),
                                                ShapeComponent("cube", 1, 45, 5), ShapeComponent("hexagonal_plate", 1, 60, 8),
                                                ShapeComponent("trigonal_plate", 1, 60, 8)], 220),
    ("tetra-, octa-, icosahedra, bipyramids, discs", [ShapeComponent(s, 1, 50, 6) for s in (
        "tetrahedron", "octahedron", "icosahedron", "pentagonal_bipyramid", "disc")], 260),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", default="docs/images/render_gallery.png")
    ap.add_argument("--size", type=int, default=320)
    args = ap.parse_args()
    rows = []
    with BlenderWorker() as w:
        for k, (title, comps, n) in enumerate(SCENES):
            spec = SceneSpec(particles=n, size_px=args.size, pixel_size_nm=2.5, seed=40 + k, components=comps)
            f = render_scene(spec, worker=w)
            se = np.array(Image.open(io.BytesIO(f["se.png"])))
            tr = np.array(Image.open(io.BytesIO(f["transmission.png"])))
            h = (tifffile.imread(io.BytesIO(f["height.tif"])) * 255).astype(np.uint8)
            ids = tifffile.imread(io.BytesIO(f["instances.tif"]))
            lut = np.random.default_rng(0).integers(60, 255, (int(ids.max()) + 1, 3)).astype(np.uint8)
            lut[0] = 0
            b = np.array(Image.open(io.BytesIO(f["borders.png"])))
            tiles = [np.repeat(x[..., None], 3, 2) for x in (se, tr, h)] + [lut[ids], np.repeat(b[..., None], 3, 2)]
            gap = np.full((args.size, 6, 3), 255, np.uint8)
            row = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1)
            label = Image.new("RGB", (row.shape[1], 22), "white")
            ImageDraw.Draw(label).text((4, 5), f"{title} ({n} particles, seed {40 + k}) - SE-like | transmission | "
                                       "height | instances | Freestyle borders", fill="black")
            rows += [np.array(label), row]
            print(f"scene {k}: {title}", file=sys.stderr)
    Path(args.write).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.write, optimize=True)
    print(args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
