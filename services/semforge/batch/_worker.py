"""One shard of a batch (``semforge worker``) and the sample report at the end, on the pipeline's stages."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis import ParticleTable
from ..errors import UserInputError
from ..pipeline import ImageOutcome, LocalStages, Measured, analyze_image
from ..storage import ObjectStore
from ._manifest import BatchCancelled, BatchSettings, is_cancelled, load_manifest

__all__ = ["run_shard", "write_batch_report"]


THREADS_ENV = "SEMFORGE_WORKER_THREADS"


def worker_threads(threads: int | None = None) -> int | None:
    """Intra-op threads of a worker's models: ``threads``, else ``$SEMFORGE_WORKER_THREADS`` (set by
    :class:`LocalWorkers` to cores // workers, and on a Job from the CPU limit), else None (every core)."""
    if threads:
        return max(1, int(threads))
    v = os.environ.get(THREADS_ENV, "").strip()
    if not v:
        return None
    if not v.isdigit() or int(v) < 1:
        raise UserInputError(f"{THREADS_ENV}={v!r}: expected a whole number >= 1", field=THREADS_ENV)
    return int(v)


def _stages(options, threads: int | None) -> LocalStages:
    """The pipeline's in-process stages, with the ONNX Runtime sessions (segmenter and shape classifier) and torch
    (when a model uses it) on ``threads`` intra-op threads."""
    if not threads:
        return LocalStages(options.segmenter)
    from ..classification import DEFAULT_CLASSIFIER, create_classifier
    from ..inference import DEFAULT_SEGMENTER, create_segmenter

    name = options.segmenter or DEFAULT_SEGMENTER
    seg = create_segmenter(name, threads=threads) if name in ("unetpp",) else name  # others take no threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return LocalStages(seg, classifier=create_classifier(DEFAULT_CLASSIFIER, threads=threads))


def run_shard(store: ObjectStore, batch_id: str, shard: int, *,
              progress: Callable[[str, int, int], None] | None = None, threads: int | None = None) -> dict:
    """Analyse every image of one shard whose result is not done yet. Returns counts (analysed, skipped).

    ``threads``: intra-op threads of the models (default :func:`worker_threads`). Raises BatchCancelled when the
    batch is cancelled (checked before each image).
    """
    import tifffile

    m = load_manifest(store, batch_id)
    if not 0 <= shard < len(m["shards"]):
        raise UserInputError(f"batch {batch_id} has shards 0..{len(m['shards']) - 1}, not {shard}", field="shard")
    options = BatchSettings.from_json(m["settings"]).options
    entries = m["shards"][shard]
    stages = _stages(options, worker_threads(threads))
    analysed = skipped = 0
    for i, e in enumerate(entries):
        prefix = f"batch-results/{e['result']}"
        if store.exists(f"{prefix}/done"):
            skipped += 1
            continue
        if is_cancelled(store, batch_id):
            raise BatchCancelled(f"batch {batch_id} cancelled; shard {shard} stopped after {i} of {len(entries)}")
        outcome = analyze_image(stages, store.get_bytes(e["key"]), e["name"], options)
        labels = np.asarray(outcome.measured.labels)
        n = int(labels.max()) if labels.size else 0
        buf = io.BytesIO()
        tifffile.imwrite(buf, labels.astype(np.uint16 if n < 65535 else np.uint32), compression="zlib")
        store.put_bytes(f"{prefix}/labels.tif", buf.getvalue())
        doc = {"table": outcome.measured.table.to_doc(), "count": outcome.measured.count,
               "included": outcome.measured.included}
        store.put_bytes(f"{prefix}/result.json", json.dumps(doc).encode())
        store.put_bytes(f"{prefix}/done", b"")  # last: a result without it is redone, never half-read
        analysed += 1
        if progress:
            progress(e["name"], i + 1, len(entries))
    return {"shard": shard, "analysed": analysed, "skipped": skipped}


def write_batch_report(store: ObjectStore, batch_id: str, outdir: str | Path, *, title: str | None = None) -> dict:
    """The sample report of a finished batch: the pipeline's report stage over the stored per-image results."""
    import tifffile

    m = load_manifest(store, batch_id)
    options = BatchSettings.from_json(m["settings"]).options
    entries = sorted((e for shard in m["shards"] for e in shard), key=lambda e: e["index"])
    missing = [e["name"] for e in entries if not store.exists(f"batch-results/{e['result']}/done")]
    if missing:
        raise UserInputError(f"batch {batch_id} is not finished: {len(missing)} of {len(entries)} images left "
                             f"({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''})", field="batch")
    stages = LocalStages(options.segmenter, outdir)
    outcomes = []
    for e in entries:
        prefix = f"batch-results/{e['result']}"
        doc = json.loads(store.get_bytes(f"{prefix}/result.json"))
        labels = tifffile.imread(io.BytesIO(store.get_bytes(f"{prefix}/labels.tif")))
        prep = stages.prepare(store.get_bytes(e["key"]), e["name"], options)  # decode again: gray for the overlay
        measured = Measured(table=ParticleTable.from_doc(doc["table"]), labels=labels, count=doc["count"],
                            included=doc["included"])
        outcomes.append(ImageOutcome(prep, measured))
    return stages.report(outcomes, options, title=title or f"semforge report: {m['name']}")
