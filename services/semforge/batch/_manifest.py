"""Batch manifests in the object store: submit, status, cancel."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..analysis import MeasureOptions
from ..errors import NotFound, UserInputError
from ..pipeline import AnalysisOptions, DataBar, image_stem
from ..storage import ObjectStore

__all__ = ["BatchCancelled", "BatchSettings", "submit_batch", "submit_stored_batch", "load_manifest", "batch_status", "cancel_batch",
           "result_id", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".dm3", ".dm4", ".emi", ".ser", ".mrc")


class BatchCancelled(RuntimeError):
    """The batch was cancelled; the shard stopped before its next image."""


@dataclass(frozen=True)
class BatchSettings:
    """How every image of a batch is analysed: the pipeline's :class:`AnalysisOptions` (what ``analyze`` takes)."""

    options: AnalysisOptions = field(default_factory=AnalysisOptions)

    def to_json(self) -> dict:
        o = self.options
        return {"measure": asdict(o.measure), "pixel_size_nm": o.pixel_size_nm, "databar": str(o.databar),
                "segmenter": o.segmenter}

    @classmethod
    def from_json(cls, doc: dict) -> "BatchSettings":
        return cls(AnalysisOptions(measure=MeasureOptions(**doc["measure"]), pixel_size_nm=doc["pixel_size_nm"],
                                   databar=DataBar.parse(doc["databar"]), segmenter=doc["segmenter"]))


def result_id(sha256: str, settings: BatchSettings) -> str:
    """Content address of one image's result: its bytes and every setting that changes the result."""
    return hashlib.sha256((sha256 + json.dumps(settings.to_json(), sort_keys=True)).encode()).hexdigest()


def _manifest_key(batch_id: str) -> str:
    return f"batches/{batch_id}/manifest.json"


def _images(sources: list[str]) -> list[Path]:
    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise NotFound(f"no such file or folder: {s}")
    return paths


def _s3_images(source: str) -> tuple[ObjectStore, list[str]]:
    """``s3://BUCKET[/PREFIX]``: the store of that bucket (``S3_*`` settings as for ``--store``) and the keys of
    the images under the prefix (by suffix, sorted; "folders" below it included)."""
    from ..storage import open_store

    bucket, _, prefix = source[5:].partition("/")
    if not bucket:
        raise UserInputError(f"{source}: name a bucket, s3://BUCKET[/PREFIX]")
    try:
        src = open_store(f"s3://{bucket}")
    except ValueError as exc:  # the S3_* settings are missing
        raise UserInputError(f"{source}: {exc}") from None
    keys = sorted(k for k in src.list(prefix) if Path(k).suffix.lower() in IMAGE_SUFFIXES)
    if not keys:
        raise NotFound(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
    return src, keys


def submit_batch(store: ObjectStore, sources: list[str], *, shards: int, settings: BatchSettings | None = None,
                 name: str = "batch") -> dict:
    """Upload the images (content-addressed: already stored bytes are not sent again), write the manifest.

    ``sources``: image files, folders and/or ``s3://BUCKET[/PREFIX]`` (every image under the prefix, streamed
    from that bucket into the batch store; bytes already there are not stored again). Images are dealt
    round-robin into ``shards`` shards (at most one per image). Returns the manifest.
    """
    settings = settings or BatchSettings()
    if shards < 1:
        raise UserInputError(f"shards must be >= 1, got {shards}", field="shards")
    local = [s for s in sources if not s.startswith("s3://")]
    remote = [_s3_images(s) for s in sources if s.startswith("s3://")]
    paths = _images(local)
    names = [image_stem(p) for p in paths] + [image_stem(k) for _, keys in remote for k in keys]
    if not names:
        raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(sources)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserInputError(f"images share a name: {', '.join(dup)}; rename them")
    keys = []
    for p in paths:
        with open(p, "rb") as fh:
            info, _ = store.put_content(iter(lambda: fh.read(1 << 20), b""))
        keys.append(info.key)
    for src, src_keys in remote:
        for k in src_keys:
            info, _ = store.put_content(src.iter_chunks(k))
            keys.append(info.key)
    return _write_manifest(store, list(zip(names, keys)), shards=shards, settings=settings, name=name)


def submit_stored_batch(store: ObjectStore, images: list[tuple[str, str]], *, shards: int,
                        settings: BatchSettings | None = None, name: str = "batch", extra: dict | None = None) -> dict:
    """A batch over images already in the store (``(name, content key)`` pairs, e.g. uploads through the
    gateway): the manifest only, no bytes copied. ``extra``: more manifest fields (the gateway's tenant, owner).
    Returns the manifest."""
    if shards < 1:
        raise UserInputError(f"shards must be >= 1, got {shards}", field="shards")
    if not images:
        raise UserInputError("no images given", field="images")
    names = [n for n, _ in images]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserInputError(f"images share a name: {', '.join(dup)}; give unique names", field="names")
    for n, key in images:
        if not key.startswith("blobs/sha256/"):
            raise UserInputError(f"image {n}: {key!r} is not a content-addressed upload", field="images")
    return _write_manifest(store, images, shards=shards, settings=settings or BatchSettings(), name=name,
                           extra=extra)


def _write_manifest(store: ObjectStore, images: list[tuple[str, str]], *, shards: int, settings: BatchSettings,
                    name: str, extra: dict | None = None) -> dict:
    entries = []
    for i, (n, key) in enumerate(images):
        sha = key.rsplit("/", 1)[-1]
        entries.append({"index": i, "name": n, "key": key, "sha256": sha, "result": result_id(sha, settings)})
    k = min(shards, len(entries))
    manifest = {"id": uuid.uuid4().hex, "name": name, "created": time.time(), "settings": settings.to_json(),
                "images": len(entries), "shards": [entries[i::k] for i in range(k)], **(extra or {})}
    store.put_bytes(_manifest_key(manifest["id"]), json.dumps(manifest, indent=1).encode())
    return manifest


def load_manifest(store: ObjectStore, batch_id: str) -> dict:
    from ..storage import ObjectNotFound

    try:
        return json.loads(store.get_bytes(_manifest_key(batch_id)))
    except ObjectNotFound:
        raise NotFound(f"no batch {batch_id!r} in the store") from None


def cancel_batch(store: ObjectStore, batch_id: str) -> None:
    load_manifest(store, batch_id)
    store.put_bytes(f"batches/{batch_id}/cancel", b"cancelled")


def is_cancelled(store: ObjectStore, batch_id: str) -> bool:
    return store.exists(f"batches/{batch_id}/cancel")


def batch_status(store: ObjectStore, batch_id: str) -> dict:
    """Images done / total, per shard, and whether the batch was cancelled."""
    m = load_manifest(store, batch_id)
    per_shard = [sum(store.exists(f"batch-results/{e['result']}/done") for e in shard) for shard in m["shards"]]
    return {"id": batch_id, "images": m["images"], "done": sum(per_shard), "shards": len(m["shards"]),
            "done_per_shard": per_shard, "cancelled": is_cancelled(store, batch_id)}
