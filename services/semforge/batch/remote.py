"""Batches through a gateway (``semforge client batch ...``): upload a folder, ``SubmitBatch``, follow
``WatchBatch`` (re-attaching through any replica), download the sample report.

Functions over a :class:`semforge.client.GatewayClient`; calls safe to repeat go through its ``retrying`` (counted
in ``client.retries``), ``SubmitBatch`` is never repeated.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import grpc

__all__ = ["submit", "get", "cancel", "watch", "download_report", "run_folder", "BatchFailed", "register_client"]


class BatchFailed(Exception):
    """A batch that ended FAILED or CANCELLED (``batch`` holds the record)."""

    def __init__(self, batch):
        from ..common.v1 import common_pb2

        super().__init__(f"batch {batch.batch_id} {common_pb2.JobState.Name(batch.state)}: {batch.message}")
        self.batch = batch


def submit(client, refs, names=(), options=None, *, sample: str = "sample", shards: int = 0):
    from ..common.v1 import common_pb2
    from ..gateway.v1 import gateway_pb2

    req = gateway_pb2.SubmitBatchRequest(images=refs, names=list(names), sample=sample, shards=shards,
                                         options=options or common_pb2.AnalysisOptions())
    return client.stub.SubmitBatch(req, timeout=client.timeout_s).batch


def get(client, batch_id: str):
    from ..gateway.v1 import gateway_pb2

    return client.retrying(lambda: client.stub.GetBatch(gateway_pb2.GetBatchRequest(batch_id=batch_id),
                                                        timeout=client.timeout_s).batch)


def cancel(client, batch_id: str):
    from ..gateway.v1 import gateway_pb2

    return client.retrying(lambda: client.stub.CancelBatch(gateway_pb2.CancelBatchRequest(batch_id=batch_id),
                                                           timeout=client.timeout_s).batch)


def watch(client, batch_id: str, *, progress: Callable | None = None):
    """Follow a batch to its end; a stream broken by UNAVAILABLE (a replica replaced) is re-attached through
    whichever replica answers, for up to ``client.busy_wait_s``."""
    from ..gateway.v1 import gateway_pb2

    deadline = time.monotonic() + client.busy_wait_s
    delay = 0.2
    while True:
        try:
            for msg in client.stub.WatchBatch(gateway_pb2.WatchBatchRequest(batch_id=batch_id)):
                if msg.HasField("event") and progress:
                    progress(msg.event)
                if msg.HasField("batch"):
                    return msg.batch
            raise grpc.RpcError("stream ended without the batch")  # pragma: no cover - the server always sends it
        except grpc.RpcError as exc:
            if not hasattr(exc, "code") or exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            client.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def download_report(client, batch, outdir) -> list[Path]:
    """Every report file of a finished batch into ``outdir`` (report.html, report.json, summary.csv, ...)."""
    from ..gateway.v1 import gateway_pb2

    out = Path(outdir)
    written = []
    for name in sorted(batch.outputs):
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")

        def fetch(name=name, tmp=tmp) -> None:
            with open(tmp, "wb") as fh:
                for msg in client.stub.Download(gateway_pb2.DownloadRequest(batch_id=batch.batch_id, name=name),
                                                timeout=max(client.timeout_s, 600)):
                    fh.write(msg.data)

        client.retrying(fetch)
        os.replace(tmp, dest)
        written.append(dest)
    return written


def run_folder(client, sources: list[str], outdir, options=None, *, sample: str = "sample", shards: int = 0,
               progress: Callable | None = None, on_upload: Callable | None = None):
    """Upload the images of ``sources`` (folders and/or files), submit them as one batch, follow it, download
    the report into ``outdir``. Returns the finished batch; raises :class:`BatchFailed`."""
    from ..common.v1 import common_pb2
    from ..pipeline import image_stem
    from ..rpc.convert import analysis_options_pb
    from ._manifest import _images

    paths = _images(sources)
    refs, names = [], []
    for p in paths:
        r = client.upload(p)
        refs.append(r.image.ref)
        names.append(image_stem(p))
        if on_upload:
            on_upload(str(p), r)
    pb = analysis_options_pb(options) if options is not None else common_pb2.AnalysisOptions()
    batch = submit(client, refs, names, pb, sample=sample, shards=shards)
    if progress:
        progress(common_pb2.ProgressEvent(job_id=batch.batch_id, stage="batch", message=(
            f"batch {batch.batch_id}: {batch.images_total} images in {batch.shards} shards ({batch.backend})")))
    batch = watch(client, batch.batch_id, progress=progress)
    if batch.state != common_pb2.JOB_STATE_SUCCEEDED:
        raise BatchFailed(batch)
    download_report(client, batch, outdir)
    return batch


# -- `semforge client batch ...` ------------------------------------------------------------------------------
def register_client(csub) -> None:
    """Add ``batch submit|status|cancel|fetch`` to the ``semforge client`` actions."""
    from ..cli._common import add_analysis_options

    b = csub.add_parser("batch", help="batch analysis in shards on the gateway's batch back end")
    bsub = b.add_subparsers(dest="batch_action", required=True)
    s = bsub.add_parser("submit", help="upload a folder's images, run them as one batch, fetch the report")
    s.add_argument("sources", nargs="+", metavar="FOLDER_OR_IMAGE")
    s.add_argument("--out", required=True, help="where the sample report goes")
    s.add_argument("--sample", default="sample")
    s.add_argument("--shards", type=int, default=0, help="shards (default: the gateway's BATCH_WORKERS)")
    s.add_argument("--no-wait", action="store_true", help="submit and print the batch id")
    s.add_argument("--quiet", action="store_true")
    add_analysis_options(s)
    for name, hlp in (("status", "a batch's progress"), ("cancel", "stop a batch"),
                      ("fetch", "download a finished batch's report")):
        p = bsub.add_parser(name, help=hlp)
        p.add_argument("batch_id")
        if name == "fetch":
            p.add_argument("--out", required=True)


def _line(b) -> str:
    from ..common.v1 import common_pb2

    return (f"{b.batch_id}\t{common_pb2.JobState.Name(b.state)}\t{b.images_done}/{b.images_total}\t"
            f"{b.shards} shards\t{b.backend}\t{b.message}")


def run_client(args, client) -> int:
    """``semforge client batch ...`` on an open client; errors are exceptions the CLI maps to exit codes."""
    from ..cli._common import CliError, analysis_options
    from ..client import ProgressBar

    if args.batch_action == "submit":
        if args.shards < 0:
            raise CliError(f"--shards must be >= 0, got {args.shards}")
        try:
            client.wait_ready(30)
        except TimeoutError as exc:
            raise CliError(str(exc), 3) from None
        if args.no_wait:
            from ..pipeline import image_stem
            from ..rpc.convert import analysis_options_pb
            from ._manifest import _images

            paths = _images(args.sources)
            refs = [client.upload(p).image.ref for p in paths]
            b = submit(client, refs, [image_stem(p) for p in paths], analysis_options_pb(analysis_options(args)),
                       sample=args.sample, shards=args.shards)
            print(_line(b))
            return 0
        try:
            b = run_folder(client, args.sources, args.out, analysis_options(args), sample=args.sample,
                           shards=args.shards, progress=None if args.quiet else ProgressBar())
        except BatchFailed as exc:
            raise CliError(str(exc), 1) from None
        print(f"report: {Path(args.out) / 'report.html'} (batch {b.batch_id})")
    elif args.batch_action == "status":
        print(_line(get(client, args.batch_id)))
    elif args.batch_action == "cancel":
        print(_line(cancel(client, args.batch_id)))
    elif args.batch_action == "fetch":
        b = get(client, args.batch_id)
        files = download_report(client, b, args.out) if b.outputs else []
        if not files:
            raise CliError(f"batch {b.batch_id} has no report yet ({_line(b)})", 1)
        print(f"{len(files)} file(s) -> {args.out}", file=sys.stdout)
    return 0
