"""``semforge adapt``: adapt a segmenter to an instrument from unlabeled images (#16; the work is in
:mod:`semforge.training.segmentation.adapt`)."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    a = sub.add_parser("adapt", help="adapt the shipped segmenter to an instrument from unlabeled images "
                                     "(self-training on confident pseudo-labels) -> a new model version")
    a.add_argument("--images", required=True, help="folder of unlabeled images of the instrument")
    a.add_argument("--modality", required=True, choices=["se", "him", "stem", "tem"])
    a.add_argument("--out", required=True, help="model folder (Triton layout); the result is its next version")
    a.add_argument("--base", default="", help="model version folder to start from (default: the shipped model)")
    a.add_argument("--folds", type=int, default=0, help="k >= 2: k versions for cross-validation (folds.json)")
    a.add_argument("--steps", type=int, default=600,
                   help="training steps (default 600: the recipe of the shipped SE version 3, docs/segmentation.md)")
    a.add_argument("--batch", type=int, default=4)
    a.add_argument("--patch", type=int, default=192)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=1)
    a.add_argument("--full", action="store_true", help="fine-tune the encoder too (default: decoder only)")
    a.add_argument("--threshold", type=float, default=0.5, help="pseudo-labels: particle threshold (default 0.5)")
    a.add_argument("--watershed-h", type=float, default=0.5, help="pseudo-labels: watershed h (default 0.5)")
    a.add_argument("--offset-px", type=int, default=0, choices=[-1, 0, 1],
                   help="pseudo-labels: grow (+1) / shrink (-1) outlines by a pixel (default 0)")
    a.add_argument("--min-contrast", type=float, default=0.0,
                   help="pseudo-labels: drop objects with less contrast to their surrounding (default 0: off)")
    a.add_argument("--refine-px", type=int, default=0,
                   help="pseudo-labels: re-decide outlines on the gray image within this band (default 0: off)")
    a.add_argument("--teacher-flips", type=int, default=1, choices=[1, 2, 4, 8],
                   help="pseudo-labels: mean of the base model's outputs over this many mirrored inputs "
                   "(test-time augmentation of the teacher; default 1: plain)")
    a.add_argument("--border-weight", type=float, default=5.0,
                   help="loss weight of the border pixels between touching particles in the border channel "
                   "(default 5, the training recipe's)")
    a.add_argument("--reference-masks", default="", help="REFERENCE ONLY (never ship): learn these human masks "
                   "(NAME_m.tif) instead of pseudo-labels, to measure the headroom of the same fine-tuning")
    a.add_argument("--renders", nargs="+", default=[], metavar="DATASET",
                   help="rendered datasets (scene_*/, e.g. `semforge render --recipe se-grains`) learned beside the "
                   "pseudo-labelled images, with their exact labels")
    a.add_argument("--render-share", type=float, default=None,
                   help="share of each batch from --renders (default 0.5 when --renders is given; 1: renders only, "
                   "no pseudo-labels)")
    a.add_argument("--render-style", default="none", choices=["none", "histogram", "fourier"],
                   help="restyle each rendered crop toward a crop of the images of about the same particle share "
                   "(by the base model): gray-value histogram or low-frequency Fourier amplitude (appearance "
                   "matching; default none)")
    a.add_argument("--style-beta", type=float, default=0.02,
                   help="fourier style: half-width of the low-frequency band taken from the image, as a share of "
                   "the crop size (default 0.02)")
    a.add_argument("--render-image", default=None, help="rendered image to learn from (default se.png; "
                   "transmission.png for stem/tem)")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.segmentation.adapt import adapt_command

    say = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    res = adapt_command(args.images, args.modality, args.out, folds=args.folds, base=args.base, steps=args.steps,
                        batch=args.batch, patch=args.patch, seed=args.seed, threads=args.threads,
                        freeze_encoder=not args.full, progress=say,
                        pseudo={"threshold": args.threshold, "watershed_h": args.watershed_h,
                                "offset_px": args.offset_px, "min_contrast": args.min_contrast, "refine_px": args.refine_px,
                                "teacher_flips": args.teacher_flips},
                        reference_masks=args.reference_masks, renders=args.renders,
                        render_share=(0.5 if args.renders else 0.0) if args.render_share is None else args.render_share,
                        render_style=args.render_style, style_beta=args.style_beta, border_weight=args.border_weight,
                        render_image=args.render_image or ("transmission.png" if args.modality in ("stem", "tem")
                                                           else "se.png"))
    for v, seen in res["versions"].items():
        print(f"{res['out']}/{v}: adapted on {len(seen)} images")
    return 0
