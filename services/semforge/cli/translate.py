"""``semforge translate``: rendered height maps -> SEM-like images (CycleGAN), content-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import CliError


def register(sub) -> None:
    tr = sub.add_parser("translate", help="CycleGAN: rendered height maps -> SEM-like images, content-checked")
    tr.add_argument("scenes", nargs="+", metavar="SCENE_OR_DATASET", help="rendered scene folders or dataset roots")
    tr.add_argument("--out", required=True, help="accepted scenes as a training dataset, rejected ones under rejected/")
    tr.add_argument("--model", default="out/translators/default", help="translator folder or generator.pt")
    tr.add_argument("--min-iou", type=float, default=0.7, help="reject below this foreground IoU (default 0.7)")
    tr.add_argument("--min-recall", type=float, default=0.85, help="reject below this particle recall (default 0.85)")
    tr.add_argument("--max-invented", type=float, default=0.1,
                    help="reject above this invented foreground / particle area (default 0.1)")
    tr.add_argument("--separate", choices=["watershed", "uecs", "none"], default="watershed",
                    help="how touching particles are cut before split/merged are counted (default watershed)")
    tr.add_argument("--separation", dest="separate", choices=["watershed", "uecs", "none"], help=argparse.SUPPRESS)
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.translation.apply import find_scenes, translate_scenes
    from ..training.translation.content_check import CheckThresholds
    from ..training.translation.train import load_generator

    try:
        gen, _ = load_generator(args.model)
        scenes = find_scenes(args.scenes)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    th = CheckThresholds(min_foreground_iou=args.min_iou, min_particle_recall=args.min_recall,
                         max_invented_fraction=args.max_invented, separation=args.separate)

    def progress(i: int, n: int, c: dict) -> None:
        if not args.quiet:
            verdict = "accepted" if c["accepted"] else "REJECTED: " + "; ".join(c["reasons"])
            sys.stderr.write(f"  {i}/{n} {c['scene']}: IoU {c['foreground_iou']:.2f}, recall "
                             f"{c['particle_recall']:.2f} - {verdict}\n")

    s = translate_scenes(gen, scenes, args.out, thresholds=th, progress=progress)
    print(f"translated {s['scenes']} scene(s) into {args.out}: {s['accepted']} accepted, "
          f"rejection rate {s['rejection_rate']:.0%} ({Path(args.out) / 'content_check.json'})")
    return 0
