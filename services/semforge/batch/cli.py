"""``semforge batch submit|status|cancel|report`` and ``semforge worker`` (registered by ``semforge.cli``).

Each command is ``register(subparsers)`` + a ``run_*`` over the parsed fields; errors are exceptions that the
CLI turns into one line and an exit code (UserInputError -> 2, a cancelled batch -> 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli._common import add_postprocess_options, postprocess_args
from ..errors import UserInputError

__all__ = ["register"]


def _store(url: str | None):
    from ..storage import open_store

    return open_store(url or os.environ.get("SEMFORGE_STORE"))


def _settings(args):
    from ..analysis import MeasureOptions
    from ..pipeline import AnalysisOptions, DataBar
    from ._manifest import BatchSettings

    return BatchSettings(AnalysisOptions(measure=MeasureOptions(modality=args.modality, **postprocess_args(args)),
                                         pixel_size_nm=args.pixel_size_nm, databar=DataBar.parse(args.databar),
                                         segmenter=args.segmenter))


def _print_status(st: dict) -> None:
    print(f"batch {st['id']}: {st['done']}/{st['images']} images"
          f"{' (cancelled)' if st.get('cancelled') else ''}", file=sys.stderr, flush=True)


def run_submit(args) -> int:
    from ._backends import KubernetesJobs, LocalWorkers
    from ._manifest import submit_batch
    from ._worker import write_batch_report

    store_url = args.store or os.environ.get("SEMFORGE_STORE")
    if not store_url:
        raise UserInputError("--store DIR|s3://BUCKET (or SEMFORGE_STORE) is required: workers share the batch through it")
    keys = [k.strip() for k in args.store_secret_keys.split(",")]
    if len(keys) != 2 or not all(keys):  # checked before anything is stored
        raise UserInputError(f"--store-secret-keys: two key names ACCESS,SECRET, got {args.store_secret_keys!r}",
                             field="store_secret_keys")
    if args.backend == "kubernetes" and not args.image:
        raise UserInputError("--image is required with --backend kubernetes (the semforge-cpu image in your registry)")
    store = _store(store_url)
    shards = args.shards or (args.workers if args.backend == "local" else 1)
    m = submit_batch(store, args.sources, shards=shards, settings=_settings(args), name=args.name)
    print(json.dumps({"batch": m["id"], "images": m["images"], "shards": len(m["shards"])}))
    if args.backend == "local":
        st = LocalWorkers(store_url, workers=args.workers).run(store, m, progress=None if args.quiet else _print_status)
        if st["failed_shards"]:
            print(f"semforge: error: shards failed: {st['failed_shards']} (rerun `semforge worker --batch {m['id']} "
                  f"--shard N`; finished images are kept)", file=sys.stderr)
            return 1
    else:
        env = [{"name": "SEMFORGE_STORE", "value": store_url}]
        env += [{"name": n, "value": os.environ[n]} for n in ("S3_ENDPOINT", "S3_SECURE") if os.environ.get(n)]
        if args.store_secret:
            env += [{"name": n, "valueFrom": {"secretKeyRef": {"name": args.store_secret, "key": k}}}
                    for n, k in zip(("S3_ACCESS_KEY", "S3_SECRET_KEY"), keys)]
        st = KubernetesJobs(image=args.image, env=env, namespace=args.namespace, parallelism=args.workers).run(
            store, m, progress=None if args.quiet else _print_status, wait=not args.no_wait)
        if args.no_wait:
            return 0
    if args.out:
        written = write_batch_report(store, m["id"], args.out)
        print(f"report: {written['html']}")
    return 0


def run_status(args) -> int:
    from ._manifest import batch_status

    print(json.dumps(batch_status(_store(args.store), args.batch)))
    return 0


def run_cancel(args) -> int:
    from ._manifest import cancel_batch

    cancel_batch(_store(args.store), args.batch)
    print(f"batch {args.batch} cancelled (workers stop before their next image)")
    return 0


def run_report(args) -> int:
    from ._worker import write_batch_report

    written = write_batch_report(_store(args.store), args.batch, args.out)
    print(f"report: {written['html']}")
    return 0


def run_worker(args) -> int:
    from ._manifest import BatchCancelled
    from ._worker import run_shard

    shard = args.shard if args.shard is not None else os.environ.get("JOB_COMPLETION_INDEX")
    if shard is None:
        raise UserInputError("--shard N is required (or JOB_COMPLETION_INDEX, set by an Indexed Job)")
    progress = None if args.quiet else (lambda name, i, n: print(f"shard {shard}: {i}/{n} {name}", file=sys.stderr))
    try:
        r = run_shard(_store(args.store), args.batch, int(shard), progress=progress, threads=args.threads)
    except BatchCancelled as exc:
        print(f"semforge: {exc}", file=sys.stderr)
        return 4
    print(json.dumps(r))
    return 0


def register(sub) -> None:
    """Add ``batch`` and ``worker`` to the ``semforge`` sub-commands."""
    b = sub.add_parser("batch", help="batch analysis in shards (local workers or an Indexed Kubernetes Job)")
    bsub = b.add_subparsers(dest="batch_action", required=True)
    s = bsub.add_parser("submit", help="upload images, split into shards, run them, write one report")
    s.add_argument("sources", nargs="+", metavar="FOLDER|IMAGE|s3://BUCKET/PREFIX",
                   help="image files, folders, or every image under an S3 prefix (S3_ENDPOINT/S3_ACCESS_KEY/"
                        "S3_SECRET_KEY as for --store)")
    s.add_argument("--store", help="object store shared with the workers: DIR or s3://BUCKET (default SEMFORGE_STORE)")
    s.add_argument("--name", default="batch", help="sample name for the report")
    s.add_argument("--shards", type=int, default=0, help="number of shards (default: --workers; 1 on Kubernetes)")
    s.add_argument("--workers", type=int, default=1, help="parallel workers (local processes / Job parallelism)")
    s.add_argument("--backend", choices=["local", "kubernetes"], default="local")
    s.add_argument("--image", help="worker image (kubernetes)")
    s.add_argument("--namespace", default="default", help="namespace of the Job (kubernetes)")
    s.add_argument("--store-secret", help="Secret with the store's keys for the workers (kubernetes)")
    s.add_argument("--store-secret-keys", default="accessKey,secretKey", metavar="ACCESS,SECRET",
                   help="the key names in --store-secret (default accessKey,secretKey; e.g. "
                        "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY for an external store's Secret)")
    s.add_argument("--no-wait", action="store_true", help="create the Job and return (kubernetes)")
    s.add_argument("--out", help="write the sample report here when the batch is done")
    s.add_argument("--modality", default="se", choices=["se", "stem", "tem", "him"])
    add_postprocess_options(s)  # --threshold --separate ... (unset: recommended for segmenter and modality)
    s.add_argument("--pixel-size-nm", type=float, default=None)
    s.add_argument("--databar", default="auto", help="auto, none or the number of specimen rows")
    s.add_argument("--segmenter", default=None, help="default: the shipped UNet++ (unetpp)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=run_submit)
    for name, fn, hlp in (("status", run_status, "images done per shard"), ("cancel", run_cancel, "stop a batch"),
                          ("report", run_report, "write the report of a finished batch")):
        p = bsub.add_parser(name, help=hlp)
        p.add_argument("batch", metavar="BATCH_ID")
        p.add_argument("--store")
        if name == "report":
            p.add_argument("--out", required=True)
        p.set_defaults(func=fn)
    w = sub.add_parser("worker", help="analyse one shard of a batch (what a batch pod runs)")
    w.add_argument("--batch", required=True, metavar="BATCH_ID")
    w.add_argument("--shard", type=int, default=None, help="shard index (default JOB_COMPLETION_INDEX)")
    w.add_argument("--store")
    w.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of the models (default $SEMFORGE_WORKER_THREADS, else every core)")
    w.add_argument("--quiet", action="store_true")
    w.set_defaults(func=run_worker)


def main(argv=None) -> int:
    """``python -m semforge.batch ...`` (the same commands without the rest of the CLI)."""
    parser = argparse.ArgumentParser(prog="python -m semforge.batch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"semforge: error: {exc}", file=sys.stderr)
        return 2
