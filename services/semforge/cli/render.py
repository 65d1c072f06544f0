"""``semforge render``: Blender scenes of dropped particles (one spec, or every dataset of a recipe)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserInputError
from ._common import CliError, positive


def register(sub) -> None:
    rd = sub.add_parser("render", help="Blender scenes of dropped particles (training data without annotation)")
    rd.add_argument("--out", required=True, help="output directory; scenes go to OUT/datasets/DATASET/scene_NNNNN/")
    rd.add_argument("--dataset", default="render", help="dataset name (default render)")
    rd.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    rd.add_argument("--particles", type=int, default=None, help="particles per scene (default 300)")
    rd.add_argument("--size", type=int, default=None, help="image size in pixels (square; default 512)")
    rd.add_argument("--seed", type=int, default=None, help="base seed (scene i gets its own derived seed)")
    rd.add_argument("--shapes", default="sphere", help="comma-separated shapes, equal mixture (default sphere); "
                    "sphere, indented_sphere, short_rod, long_rod, cube, hexagonal_plate, trigonal_plate, disc, "
                    "tetrahedron, octahedron, icosahedron, pentagonal_bipyramid")
    rd.add_argument("--size-nm", type=positive, default=40.0, help="mean particle size in nm (default 40)")
    rd.add_argument("--sd-nm", type=float, default=4.0, help="size standard deviation in nm (default 4)")
    rd.add_argument("--lognormal", action="store_true", help="log-normal instead of normal sizes")
    rd.add_argument("--cluster", type=float, default=0.0,
                    help="share 0..1 of particles dropped beside an earlier one: agglomerates (default 0)")
    rd.add_argument("--pixel-size-nm", type=positive, default=None, help="pixel size in nm (default 2)")
    rd.add_argument("--frames", type=int, default=None, help="rigid-body frames to simulate (default 90)")
    rd.add_argument("--spec", help="scene spec JSON (mixtures with per-shape size distributions); "
                    "--particles/--size/--seed/--pixel-size-nm/--frames override it")
    rd.add_argument("--workers", type=int, default=None, help="Blender worker processes (default: one per core)")
    rd.add_argument("--recipe", choices=["se", "se-grains", "se-piles", "transmission", "se-rods", "tiny"],
                    help="render every dataset of a training-data recipe (OUT/datasets/<recipe dataset>/; resumable)")
    rd.add_argument("--quiet", action="store_true")
    rd.set_defaults(func=run)


def _scene_spec(args):
    import json

    from ..training.scenes import SceneSpec, spec_from_dict

    if args.spec:
        try:
            with open(args.spec) as fh:
                d = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read scene spec {args.spec}: {exc}") from None
        for key in ("particles", "size_px", "seed", "pixel_size_nm", "frames"):
            v = getattr(args, key.replace("size_px", "size"), None)
            if v is not None:
                d[key] = v
        return spec_from_dict(d)
    def given(v, default):
        return default if v is None else v

    spec = SceneSpec.simple(args.shapes.split(","), size_nm=args.size_nm, sd_nm=args.sd_nm,
                            particles=given(args.particles, 300), size_px=given(args.size, 512),
                            seed=given(args.seed, 0), pixel_size_nm=given(args.pixel_size_nm, 2.0),
                            frames=given(args.frames, 90), cluster=args.cluster)
    if args.lognormal:
        for c in spec.components:
            c.distribution = "lognormal"
    spec.validate()
    return spec


def run(args: argparse.Namespace) -> int:
    from ..training.scenes import RenderUnavailable, render_batch
    from ..storage import LocalStore

    if args.recipe:
        return _render_recipe(args)
    try:
        spec = _scene_spec(args)
    except ValueError as exc:  # the scene library validates the spec with ValueError
        raise UserInputError(str(exc)) from None
    out = Path(args.out)
    if args.scenes < 1:
        raise CliError("--scenes must be >= 1")
    store = LocalStore(out)
    t0 = time.perf_counter()

    def progress(done: int, total: int, info: dict) -> None:
        if args.quiet:
            return
        if "resumed" in info:
            if info["resumed"]:
                sys.stderr.write(f"  resuming: {info['resumed']}/{total} scene(s) already rendered\n")
            return
        t = info.get("timings_s", {})
        sys.stderr.write(f"  {done}/{total} scene_{info['index']:05d}: {info['particles']} particles, "
                         f"simulate {t.get('simulate_s', 0):.1f} s, render {t.get('render_s', 0):.1f} s, "
                         f"post {t.get('post_s', 0):.1f} s\n")
        sys.stderr.flush()

    try:
        manifest = render_batch(spec, args.scenes, store, args.dataset, workers=args.workers, progress=progress)
    except RenderUnavailable as exc:
        raise CliError(str(exc), 2) from None
    where = out / "datasets" / args.dataset
    print(f"dataset: {where} ({manifest['scenes']} scene(s), {manifest['rendered_now']} rendered now, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _render_recipe(args) -> int:
    from ..training.scenes import RenderUnavailable, render_batch
    from ..training.segmentation.recipes import recipe_datasets
    from ..storage import LocalStore

    out = Path(args.out)
    store = LocalStore(out)
    t0 = time.perf_counter()
    for name, spec, n in recipe_datasets(args.recipe):
        if not args.quiet:
            sys.stderr.write(f"rendering {name}: {n} scene(s) into {out / 'datasets' / name}\n")
            sys.stderr.flush()
        try:
            manifest = render_batch(spec, n, store, name, workers=args.workers)
        except RenderUnavailable as exc:
            raise CliError(str(exc), 2) from None
        print(f"dataset: {out / 'datasets' / name} ({manifest['scenes']} scene(s), {manifest['rendered_now']} rendered now)")
    print(f"recipe {args.recipe}: done in {time.perf_counter() - t0:.1f} s")
    return 0
