"""``semforge evaluate``: segmenter + separation against annotated images (the analysis's own stages)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..postprocess import POST_HELP, POST_KEYS, POST_TYPES
from ._common import MODALITY_CHOICES, CliError


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="segmenter + post-processing against annotated images (default: as "
                                        "`semforge analyze` runs it)")
    e.add_argument("--images", required=True)
    e.add_argument("--masks", required=True)
    e.add_argument("--segmenter", default="unetpp", help="comma-separated: unetpp, classical, unetpp-triton")
    e.add_argument("--triton-url", help="Triton gRPC address for unetpp-triton (default $TRITON_URL)")
    e.add_argument("--modality", choices=MODALITY_CHOICES, default="se")
    e.add_argument("--separate", default=None,
                   help="comma-separated separations: uecs, watershed, none (default: what `semforge analyze` applies "
                        "for the segmenter and modality)")
    for key in POST_KEYS[:1] + POST_KEYS[2:]:  # every key but separate (a list here)
        e.add_argument("--" + key.replace("_", "-"), dest=key, type=POST_TYPES[key], default=None,
                       help=f"{POST_HELP[key]} (default: what `semforge analyze` applies)")
    e.add_argument("--names", help="comma-separated image stems (default all)")
    e.add_argument("--json", help="write the full figures (per image too) here")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..inference import create_segmenter
    from ..training.segmentation.evaluate import evaluate_segmenter, format_markdown

    for d in (args.images, args.masks):
        if not Path(d).is_dir():
            raise CliError(f"no such directory: {d}")
    results = []
    for name in args.segmenter.split(","):
        kw = {"url": args.triton_url} if name == "unetpp-triton" and args.triton_url else {}
        seg = create_segmenter(name, **kw)
        for sep in args.separate.split(",") if args.separate else [None]:
            post = {k: getattr(args, k) for k in POST_KEYS if k != "separate"}
            try:
                from ..postprocess import PostProcess

                PostProcess(separate=sep, **post).validate()
            except ValueError as exc:
                raise CliError(str(exc)) from None
            r = evaluate_segmenter(seg, args.images, args.masks, modality=args.modality, separate=sep, **post,
                                   names=args.names.split(",") if args.names else None,
                                   progress=None if args.quiet else
                                   (lambda i, n, im: sys.stderr.write(f"  {i}/{n} {im}\n")))
            r["segmenter"] = name
            results.append(r)
    print(format_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
