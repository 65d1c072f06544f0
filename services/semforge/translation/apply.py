"""Translate rendered scenes into SEM-like images, content-check each, and keep the accepted ones as a dataset.

Output layout (readable by ``semforge train segmenter --image translated.png``)::

    OUT/<dataset>/<scene>/translated.png, instances.tif, scene.json, check.json   accepted scenes
    OUT/rejected/<dataset>/<scene>/translated.png, check.json                     rejected, with reasons
    OUT/content_check.json                                                         summary, rejection by shape
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

from .content_check import CheckThresholds, content_check, rejection_by_shape
from .train import translate

__all__ = ["translate_scenes", "find_scenes"]


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
        from ..inference import create_segmenter

        segmenter = create_segmenter("unetpp")
    out = Path(out)
    checks = []
    for i, sc in enumerate(scenes):
        height = tifffile.imread(sc / "height_noisy.tif")
        ids = tifffile.imread(sc / "instances.tif").astype(np.int32)
        info = json.loads((sc / "scene.json").read_text())
        shapes = {p["id"]: p["shape"] for p in info["particles"]}
        img = translate(generator, height)
        prob = segmenter.predict(img, modality="se")
        check = content_check(prob, ids, thresholds, shapes=shapes)
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
    accepted = sum(c["accepted"] for c in checks)
    reasons: dict[str, int] = {}
    for c in checks:
        for r in c["reasons"]:
            key = next((k for k in ("foreground IoU", "vanished", "invented", "split", "merge") if k in r), r)
            reasons[key] = reasons.get(key, 0) + 1
    summary = {"scenes": len(checks), "accepted": accepted, "rejection_rate": 1 - accepted / max(len(checks), 1),
               "thresholds": thresholds.to_dict(), "reasons": reasons, "by_shape": rejection_by_shape(checks),
               "median_foreground_iou": float(np.median([c["foreground_iou"] for c in checks])),
               "median_particle_recall": float(np.median([c["particle_recall"] for c in checks]))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "content_check.json").write_text(json.dumps(summary, indent=1, default=int))
    return summary
