"""One shard of a batch (``semforge worker``) and the sample report at the end."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..analysis import Calibration, ImageResult, load_image, to_gray_float, write_image_outputs, write_sample_report
from ..inference import create_segmenter
from ..storage import ObjectStore
from ..workflow import analyze_image, prepare_image
from ._manifest import BatchCancelled, BatchSettings, is_cancelled, load_manifest

__all__ = ["run_shard", "write_batch_report"]


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def run_shard(store: ObjectStore, batch_id: str, shard: int, *,
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Analyse every image of one shard whose result is not done yet. Returns counts (analysed, skipped).

    Raises BatchCancelled when the batch is cancelled (checked before each image).
    """
    import tifffile

    m = load_manifest(store, batch_id)
    if not 0 <= shard < len(m["shards"]):
        raise ValueError(f"batch {batch_id} has shards 0..{len(m['shards']) - 1}, not {shard}")
    settings = BatchSettings.from_json(m["settings"])
    entries = m["shards"][shard]
    segmenter = None
    analysed = skipped = 0
    for i, e in enumerate(entries):
        prefix = f"batch-results/{e['result']}"
        if store.exists(f"{prefix}/done"):
            skipped += 1
            continue
        if is_cancelled(store, batch_id):
            raise BatchCancelled(f"batch {batch_id} cancelled; shard {shard} stopped after {i} of {len(entries)}")
        segmenter = segmenter or create_segmenter(settings.segmenter)
        prep = prepare_image(store.get_bytes(e["key"]), name=e["name"], pixel_size_nm=settings.pixel_size_nm,
                             databar=settings.databar)
        res = analyze_image(prep, segmenter=segmenter, options=settings.options)
        buf = io.BytesIO()
        n = int(res.labels.max()) if res.labels.size else 0
        tifffile.imwrite(buf, res.labels.astype(np.uint16 if n < 65535 else np.uint32), compression="zlib")
        store.put_bytes(f"{prefix}/labels.tif", buf.getvalue())
        doc = {"name": res.name, "particles": res.particles, "specimen_rows": res.specimen_rows,
               "calibration": {"pixel_size_nm": res.calibration.pixel_size_nm, "source": res.calibration.source},
               "extra": res.extra}
        store.put_bytes(f"{prefix}/result.json", json.dumps(doc, default=_plain).encode())
        store.put_bytes(f"{prefix}/done", b"")  # last: a result without it is redone, never half-read
        analysed += 1
        if progress:
            progress(e["name"], i + 1, len(entries))
    return {"shard": shard, "analysed": analysed, "skipped": skipped}


def write_batch_report(store: ObjectStore, batch_id: str, outdir: str | Path, *, title: str | None = None) -> dict:
    """The sample report of a finished batch (per image: labels, particles, overlay; summary, xlsx, json, html)."""
    import tifffile

    m = load_manifest(store, batch_id)
    settings = BatchSettings.from_json(m["settings"])
    entries = sorted((e for shard in m["shards"] for e in shard), key=lambda e: e["index"])
    missing = [e["name"] for e in entries if not store.exists(f"batch-results/{e['result']}/done")]
    if missing:
        raise RuntimeError(f"batch {batch_id} is not finished: {len(missing)} of {len(entries)} images left "
                           f"({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''})")
    out = Path(outdir)
    results = []
    for e in entries:
        name = e["name"]
        prefix = f"batch-results/{e['result']}"
        doc = json.loads(store.get_bytes(f"{prefix}/result.json"))
        labels = tifffile.imread(io.BytesIO(store.get_bytes(f"{prefix}/labels.tif")))
        cal = doc["calibration"]
        res = ImageResult(name=name, labels=labels, particles=doc["particles"],
                          calibration=Calibration(cal["pixel_size_nm"], cal["source"]),
                          specimen_rows=doc["specimen_rows"], options=settings.options, extra=doc.get("extra", {}))
        gray = to_gray_float(load_image(store.get_bytes(e["key"]), name=name).pixels)
        write_image_outputs(res, gray, out / name)
        results.append(res)
    return write_sample_report(results, out, title=title or f"semforge report: {m['name']}")
