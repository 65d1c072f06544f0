"""Translate rendered scenes into SEM-like images, content-check each, and keep the accepted ones as a dataset.

Output layout (readable by ``semforge train segmenter --image translated.png``)::

    OUT/<dataset>/<scene>/translated.png, instances.tif, scene.json, check.json   accepted scenes
    OUT/rejected/<dataset>/<scene>/translated.png, check.json                     rejected, with reasons
    OUT/content_check.json                                                         summary, rejection by shape

:func:`translate_dataset` does the same from one object-store dataset into another
(``datasets/<in>/scene_NNNNN/`` -> ``datasets/<out>/scene_NNNNN/``, rejected ones under
``datasets/<out>/rejected/``), resumably, for the translate service's streamed batch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import tifffile
from PIL import Image

from .content_check import CheckThresholds, check_translated, rejection_by_shape
from .train import translate

__all__ = ["translate_scenes", "translate_dataset", "find_scenes", "check_scene_images", "summarize_checks"]


def find_scenes(paths: list[str | os.PathLike]) -> list[Path]:
    scenes = []
    for p in map(Path, paths):
        if (p / "scene.json").exists():
            scenes.append(p)
        else:
            scenes += sorted(s.parent for s in p.rglob("scene.json"))
    if not scenes:
        raise FileNotFoundError(f"no rendered scenes (scene_*/scene.json) under {', '.join(map(str, paths))}")
    return scenes


def translate_scenes(generator, scenes: list[Path], out: str | os.PathLike, *, segmenter=None,
                     thresholds: CheckThresholds = CheckThresholds(),
                     progress: Callable[[int, int, dict], None] | None = None) -> dict:
    if segmenter is None:
        from ...inference import create_segmenter

        segmenter = create_segmenter("unetpp")
    out = Path(out)
    checks = []
    for i, sc in enumerate(scenes):
        height = tifffile.imread(sc / "height_noisy.tif")
        ids = tifffile.imread(sc / "instances.tif").astype(np.int32)
        info = json.loads((sc / "scene.json").read_text())
        shapes = {p["id"]: p["shape"] for p in info["particles"]}
        img = translate(generator, height)
        check = check_translated(segmenter, img, ids, thresholds, shapes=shapes)
        check["scene"] = f"{sc.parent.name}/{sc.name}"
        dest = out / sc.parent.name / sc.name if check["accepted"] else out / "rejected" / sc.parent.name / sc.name
        dest.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)).save(dest / "translated.png")
        (dest / "check.json").write_text(json.dumps(check, indent=1, default=int))
        if check["accepted"]:
            shutil.copyfile(sc / "instances.tif", dest / "instances.tif")
            shutil.copyfile(sc / "scene.json", dest / "scene.json")
        checks.append(check)
        if progress:
            progress(i + 1, len(scenes), check)
    summary = summarize_checks(checks, thresholds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "content_check.json").write_text(json.dumps(summary, indent=1, default=int))
    return summary


def summarize_checks(checks: list[dict], thresholds: CheckThresholds = CheckThresholds()) -> dict:
    """Acceptance, rejection reasons (counted per kind), rejection by shape and median figures of many checks."""
    accepted = sum(c["accepted"] for c in checks)
    reasons: dict[str, int] = {}
    for c in checks:
        for r in c["reasons"]:
            key = next((k for k in ("foreground IoU", "vanished", "invented", "split", "merge") if k in r), r)
            reasons[key] = reasons.get(key, 0) + 1
    return {"scenes": len(checks), "accepted": accepted, "rejection_rate": 1 - accepted / max(len(checks), 1),
            "thresholds": thresholds.to_dict(), "reasons": reasons, "by_shape": rejection_by_shape(checks),
            "median_foreground_iou": float(np.median([c["foreground_iou"] for c in checks])) if checks else 0.0,
            "median_particle_recall": float(np.median([c["particle_recall"] for c in checks])) if checks else 0.0}


def check_scene_images(scenes: list[Path], image_file: str = "se.png", *, segmenter=None,
                       thresholds: CheckThresholds = CheckThresholds()) -> dict:
    """The same content check on an image the scenes already have (e.g. the direct SE-like render).

    A control for the translation check: what the checking segmenter finds on images of
    its own training domain, so that a rejection can be told apart from a segmenter weakness.
    """
    from ...analysis import load_image, to_gray_float

    if segmenter is None:
        from ...inference import create_segmenter

        segmenter = create_segmenter("unetpp")
    checks = []
    for sc in scenes:
        img = to_gray_float(np.asarray(load_image(sc / image_file).pixels))
        ids = tifffile.imread(sc / "instances.tif").astype(np.int32)
        info = json.loads((sc / "scene.json").read_text())
        c = check_translated(segmenter, img, ids, thresholds,
                          shapes={p["id"]: p["shape"] for p in info["particles"]})
        c["scene"] = f"{sc.parent.name}/{sc.name}"
        checks.append(c)
    return summarize_checks(checks, thresholds)


def _png_bytes(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def translate_dataset(generator, store, dataset: str, out_dataset: str, *, segmenter=None,
                      thresholds: CheckThresholds = CheckThresholds(),
                      progress: Callable[[int, int, dict], None] | None = None,
                      cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Translate and content-check every scene of a rendered dataset in the object store.

    Scenes whose ``check.json`` is already in ``datasets/<out_dataset>/`` (accepted or
    rejected) are not translated again, so an interrupted batch resumes.  Accepted scenes
    carry ``translated.png``, ``instances.tif``, ``scene.json`` and ``check.json`` (a
    training dataset for ``semforge train segmenter --data-store ... --image translated.png``);
    rejected ones ``translated.png`` and ``check.json`` under ``rejected/``.  ``progress(done,
    total, check)`` follows every scene (``check["skipped"]`` for resumed ones).  Returns the
    summary, also stored as ``datasets/<out_dataset>/content_check.json``.
    """
    import io

    from ...storage import ObjectNotFound, validate_key

    if not dataset or not out_dataset:
        raise ValueError("dataset and out_dataset must both be named")
    if dataset == out_dataset:
        raise ValueError("out_dataset must differ from the rendered dataset")
    validate_key(f"datasets/{dataset}/x")
    validate_key(f"datasets/{out_dataset}/content_check.json")
    pre, opre = f"datasets/{dataset}/", f"datasets/{out_dataset}/"
    scenes = sorted({k[len(pre):].split("/")[0] for k in store.list(pre)
                     if k.endswith("/scene.json") and k[len(pre):].count("/") == 1})
    if not scenes:
        raise ObjectNotFound(f"no rendered scenes under {pre} in the object store (render the dataset first)")
    if segmenter is None:
        from ...inference import create_segmenter

        segmenter = create_segmenter("unetpp")
    checks = []
    for i, name in enumerate(scenes):
        if cancelled():
            break
        done_key = next((k for k in (f"{opre}{name}/check.json", f"{opre}rejected/{name}/check.json")
                         if store.exists(k)), None)
        if done_key:
            check = json.loads(store.get_bytes(done_key))
            check["skipped"] = True
        else:
            src = f"{pre}{name}/"
            try:
                height_bytes = store.get_bytes(src + "height_noisy.tif")
                ids_bytes = store.get_bytes(src + "instances.tif")
                info_bytes = store.get_bytes(src + "scene.json")
            except ObjectNotFound as exc:
                raise ObjectNotFound(f"{src} is not a complete rendered scene (no {exc})") from None
            try:
                height = tifffile.imread(io.BytesIO(height_bytes)).astype(np.float32)
                ids = tifffile.imread(io.BytesIO(ids_bytes)).astype(np.int32)
                info = json.loads(info_bytes)
            except (ValueError, tifffile.TiffFileError) as exc:
                raise ValueError(f"{src} is not a readable rendered scene: {exc}") from None
            img = translate(generator, height)
            check = check_translated(segmenter, img, ids, thresholds,
                                  shapes={p["id"]: p["shape"] for p in info.get("particles", [])})
            check["scene"] = f"{dataset}/{name}"
            dest = f"{opre}{name}/" if check["accepted"] else f"{opre}rejected/{name}/"
            store.put_bytes(dest + "translated.png", _png_bytes(img))
            if check["accepted"]:
                store.put_bytes(dest + "instances.tif", ids_bytes)
                store.put_bytes(dest + "scene.json", info_bytes)
            # written last: its presence marks the scene as done
            store.put_bytes(dest + "check.json", json.dumps(check, indent=1, default=int).encode())
            check["skipped"] = False
        check["prefix"] = f"{opre}{name}/" if check["accepted"] else f"{opre}rejected/{name}/"
        checks.append(check)
        if progress:
            progress(i + 1, len(scenes), check)
    summary = summarize_checks(checks, thresholds)
    summary.update(dataset=dataset, out_dataset=out_dataset, complete=len(checks) == len(scenes),
                   scenes_total=len(scenes))
    store.put_bytes(f"{opre}content_check.json", json.dumps(summary, indent=1, default=int).encode())
    return summary
