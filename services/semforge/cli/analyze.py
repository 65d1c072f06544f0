"""``semforge analyze``: micrographs of one sample -> report (in process, or through a gateway with --server)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from ._common import (RemoteAnalysis, add_analysis_options, analysis_options, analyze_remote, check_inputs,
                      text_progress)


def register(sub) -> None:
    a = sub.add_parser("analyze", help="analyse micrographs of one sample into a report")
    a.add_argument("images", nargs="+", metavar="IMAGE")
    a.add_argument("--out", required=True, help="output directory")
    add_analysis_options(a)
    a.add_argument("--segmenter", default=None, help="in process: unetpp (shipped UNet++, default), classical "
                   "(Otsu) or unetpp-triton (TRITON_URL)")
    a.add_argument("--server", help="gateway address HOST:PORT (default: analyse in process)")
    a.add_argument("--sample", default="sample", help="sample name for the report title")
    a.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the server to be ready")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=run)


@dataclass(frozen=True)
class LocalAnalysis:
    images: list
    out: str
    options: object
    sample: str
    quiet: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LocalAnalysis":
        return cls(list(args.images), args.out, analysis_options(args), args.sample, args.quiet)


def run(args: argparse.Namespace) -> int:
    check_inputs(args.images)
    if args.server:
        return analyze_remote(RemoteAnalysis.from_args(args))
    a = LocalAnalysis.from_args(args)
    from ..pipeline import analyze_paths

    t0 = time.perf_counter()
    written = analyze_paths(a.images, a.out, options=a.options, progress=None if a.quiet else text_progress,
                            title=f"semforge report: {a.sample}")
    print(f"report: {written['html']} ({len(a.images)} image(s), {time.perf_counter() - t0:.1f} s)")
    return 0
