"""What several commands share: argument types, the analysis options, input checks, progress lines."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from ..errors import UserInputError
from ..modality import MODALITIES

__all__ = ["CliError", "positive", "databar", "add_analysis_options", "analysis_options", "check_inputs",
           "text_progress", "MODALITY_CHOICES"]

MODALITY_CHOICES = list(MODALITIES)


class CliError(Exception):
    """A one-line error with an exit code (2 bad input/usage, 3 server unreachable, 1 failed)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def positive(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if not f > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return f


def databar(v: str):
    from ..pipeline import DataBar

    try:
        return DataBar.parse(v)
    except UserInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_analysis_options(p: argparse.ArgumentParser, *, databar_default: str = "auto") -> None:
    p.add_argument("--modality", choices=MODALITY_CHOICES, default="se",
                   help="imaging mode: SE/HIM bright particles, STEM/TEM dark particles (default se)")
    p.add_argument("--pixel-size-nm", type=positive, default=None,
                   help="pixel size in nm; overrides the file's calibration")
    add_postprocess_options(p)
    p.add_argument("--databar", type=databar, default=databar(databar_default),
                   help=f"instrument data bar: auto (detect), none, or the number of specimen rows "
                        f"(default {databar_default})")


def add_postprocess_options(p: argparse.ArgumentParser) -> None:
    """``--threshold``, ``--separate``, ``--watershed-h``, ``--grow-px``, ``--min-contrast`` (one per key of
    :class:`semforge.analysis.PostProcess`): unset, the analysis applies the values recommended for the
    segmenter and the modality (docs/segmentation.md); given, they win."""
    from ..postprocess import POST_HELP, POST_KEYS, POST_TYPES, SEPARATION_MODES

    for key in POST_KEYS:
        hlp = f"{POST_HELP[key]} (default: recommended for the segmenter and modality)"
        if key == "separate":
            p.add_argument("--separate", choices=list(SEPARATION_MODES), default=None, help=hlp)
            p.add_argument("--separation", dest="separate", choices=list(SEPARATION_MODES), help=argparse.SUPPRESS)
        else:
            p.add_argument("--" + key.replace("_", "-"), dest=key, type=POST_TYPES[key], default=None, help=hlp)


def postprocess_args(args: argparse.Namespace) -> dict:
    """The post-processing keys given on the command line (validated), for ``MeasureOptions(**...)``."""
    from ..postprocess import POST_KEYS, PostProcess

    chosen = {k: getattr(args, k) for k in POST_KEYS if getattr(args, k, None) is not None}
    try:
        PostProcess(**chosen).validate()
    except UserInputError as exc:
        raise CliError(str(exc)) from None
    return chosen


def analysis_options(args: argparse.Namespace):
    """The typed :class:`~semforge.pipeline.AnalysisOptions` of a command's arguments (read once, here)."""
    from ..analysis import MeasureOptions
    from ..pipeline import AnalysisOptions

    return AnalysisOptions(MeasureOptions(modality=args.modality, **postprocess_args(args)),
                           pixel_size_nm=args.pixel_size_nm, databar=args.databar,
                           segmenter=getattr(args, "segmenter", None))


def check_inputs(paths: list[str]) -> None:
    for p in paths:
        if not os.path.exists(p):
            raise CliError(f"no such file: {p}")
        if os.path.isdir(p):
            raise CliError(f"{p} is a directory; pass image files (e.g. {p}/*.tif)")


def text_progress(i: int, name: str, stage: str, frac: float) -> None:
    sys.stderr.write(f"  {frac * 100:5.1f}%  {name} {stage}\n" if name else f"  {frac * 100:5.1f}%  {stage}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class RemoteAnalysis:
    """The arguments of an analysis through a gateway."""

    server: str
    images: list
    out: str
    options: object
    sample: str
    wait_s: float
    quiet: bool
    busy_wait_s: float = 300.0  # how long to keep asking a busy gateway (RESOURCE_EXHAUSTED + retry hint)

    @classmethod
    def from_args(cls, args: argparse.Namespace, server: str | None = None) -> "RemoteAnalysis":
        return cls(server or args.server, list(args.images), args.out, analysis_options(args), args.sample,
                   args.wait, args.quiet, getattr(args, "busy_wait", 300.0))


def _warnings_only(ev) -> None:
    """--quiet: no progress, but plausibility warnings are never silent (#13)."""
    if ev.stage == "warning":
        sys.stderr.write(ev.message + "\n")


def analyze_remote(a: RemoteAnalysis) -> int:
    """Upload, analyse and fetch through a gateway (the work is the client library's)."""
    from pathlib import Path

    import grpc

    from ..client import GatewayClient, JobFailed, ProgressBar, StreamLost, _busy_hint

    def uploaded(path, r):
        if a.quiet:
            return
        cal = r.image.calibration
        size = f"{cal.pixel_size_nm:g} nm/px ({cal.source})" if cal.pixel_size_nm else "no pixel size in file"
        sys.stderr.write(f"uploaded {path} -> {r.image.ref.key[:22]}... {'(already stored) ' if r.deduplicated else ''}"
                         f"{r.image.width}x{r.image.height}, {size}\n")

    with GatewayClient(a.server, busy_wait_s=a.busy_wait_s) as c:
        try:
            job = c.analyze_files(a.images, a.out, a.options, sample=a.sample, wait_s=a.wait_s,
                                  progress=_warnings_only if a.quiet else ProgressBar(), on_upload=uploaded)
        except TimeoutError as exc:
            raise CliError(str(exc), 3) from None
        except JobFailed as exc:
            raise CliError(str(exc), 1) from None
        except StreamLost as exc:  # the job goes on in the server: say which one, to follow it (#15)
            raise CliError(str(exc), 3) from None
        except grpc.RpcError as exc:
            if _busy_hint(exc) is None:
                raise
            # still refused for load after the whole wait (#15): nothing was created; a later run will pass
            raise CliError(f"the gateway is still busy after {a.busy_wait_s:g} s of asking again "
                           f"(RESOURCE_EXHAUSTED: {exc.details()}); nothing was submitted: run the same command "
                           "later, or with a longer --busy-wait", 3) from None
    print(f"report: {Path(a.out) / 'report.html'} (job {job.job_id})")
    return 0
