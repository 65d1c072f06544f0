"""Classifier training data from rendered scenes, without any manual annotation.

For every rendered scene (``scene.json`` + ``instances.tif`` + the SE-like or
transmission-like image) two kinds of crops are cut:

* **ideal**: every particle of ``instances.tif`` (its visible pixels), labelled
  by its shape, or ``covered`` when less than :data:`COVERED_BELOW` of it is visible;
* **segmented**: the particles that the shipped segmenter + separation find
  in the rendered image (what the classifier will really see), matched to the
  true particles by pixel overlap: a region whose main particle holds less
  than 70 % of it and a second particle more than 20 % is an ``agglomerate``;
  a region that holds less than :data:`FRAGMENT_BELOW` of its particle's
  visible pixels, or whose particle is covered, is ``covered``; otherwise the
  particle's shape class.  Regions on the background are skipped.

Particles cut by the image border are skipped (the analysis excludes them anyway).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from .classes import CLASSES, COVERED_BELOW, FRAGMENT_BELOW, SHAPE_TO_CLASS, modality_set
from .crops import CROP_SIZE, extract_crops

__all__ = ["scene_dirs", "label_regions", "scene_crops", "build_dataset", "load_dataset"]

IMAGE_FOR = {"se": "se.png", "transmission": "transmission.png"}
MIN_PX = 20


def scene_dirs(roots) -> list[Path]:
    """Scene folders (holding ``scene.json``) under the given dataset roots or scene folders."""
    out = []
    for r in roots:
        r = Path(r)
        if (r / "scene.json").exists():
            out.append(r)
        else:
            found = sorted(p.parent for p in r.glob("scene_*/scene.json"))
            if not found:
                raise FileNotFoundError(f"no rendered scenes (scene_*/scene.json) under {r}")
            out += found
    return out


def _truth_class(p: dict, cls_set: str) -> str:
    if p["visible_fraction"] < COVERED_BELOW:
        return "covered"
    return SHAPE_TO_CLASS[cls_set][p["shape"]]


def label_regions(pred: np.ndarray, truth: np.ndarray, particles: dict[int, dict], cls_set: str,
                  ids=None) -> dict[int, str]:
    """Class of each predicted region of ``pred`` from the true instances ``truth`` and their ``scene.json`` rows.

    Returns ``{region id: class}``; regions on the background or on particles cut by the border are left out.
    """
    p = pred.astype(np.int64).ravel()
    t = truth.astype(np.int64).ravel()
    sel = (p > 0)
    pairs = np.stack([p[sel], t[sel]], 1)
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    visible = np.bincount(t, minlength=int(t.max()) + 1)
    area = np.bincount(p, minlength=int(p.max()) + 1)
    by_region: dict[int, list[tuple[int, int]]] = {}
    for (r, tid), c in zip(keys, counts):
        by_region.setdefault(int(r), []).append((int(c), int(tid)))
    out = {}
    for r, lst in by_region.items():
        if ids is not None and r not in ids:
            continue
        lst = sorted((x for x in lst if x[1] > 0), reverse=True)
        if not lst or lst[0][0] < 0.3 * area[r]:
            continue  # mostly background: a false detection
        c0, t0 = lst[0]
        info = particles.get(t0)
        if info is None or info["cut_by_border"]:
            continue
        if len(lst) > 1 and c0 < 0.7 * area[r] and lst[1][0] > 0.2 * area[r]:
            out[r] = "agglomerate"
        elif info["visible_fraction"] < COVERED_BELOW or c0 < FRAGMENT_BELOW * visible[t0]:
            out[r] = "covered"
        else:
            out[r] = SHAPE_TO_CLASS[cls_set][info["shape"]]
    return out


def _read_scene(d: Path, image: str):
    import tifffile
    from PIL import Image

    info = json.loads((d / "scene.json").read_text())
    gray = np.asarray(Image.open(d / image).convert("L"), np.float32) / 255.0
    truth = tifffile.imread(d / "instances.tif").astype(np.int64)
    return info, gray, truth


def scene_crops(d: Path, modality: str, *, segmenter=None, size: int = CROP_SIZE, image: str | None = None):
    """Crops, class names and sources (``ideal`` / ``segmented``) of one rendered scene."""
    from ..analysis import MeasureOptions, measure_mask

    cls_set = modality_set(modality)
    info, gray, truth = _read_scene(Path(d), image or IMAGE_FOR[cls_set])
    particles = {int(p["id"]): p for p in info["particles"]}
    X, y, src = [], [], []
    vis = np.bincount(truth.ravel(), minlength=max(particles, default=0) + 1)
    ideal = [i for i, p in particles.items() if not p["cut_by_border"] and i < len(vis) and vis[i] >= MIN_PX]
    if ideal:
        X.append(extract_crops(gray, truth, ideal, size=size))
        y += [_truth_class(particles[i], cls_set) for i in ideal]
        src += ["ideal"] * len(ideal)
    if segmenter is not None:
        prob = segmenter.predict(gray, modality=modality)
        res = measure_mask(prob >= 0.5, options=MeasureOptions(modality=modality, classify=False))
        keep = {r["id"] for r in res.particles if r["exclude_reason"] not in ("border", "too_small")}
        lab = label_regions(res.labels, truth, particles, cls_set, ids=keep)
        rid = sorted(lab)
        if rid:
            X.append(extract_crops(gray, res.labels, rid, size=size))
            y += [lab[r] for r in rid]
            src += ["segmented"] * len(rid)
    X = np.concatenate(X) if X else np.zeros((0, 2, size, size), np.float32)
    return X, y, src


def build_dataset(roots, out: str | Path, modality: str, *, segmenter=None, size: int = CROP_SIZE,
                  progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Crops of every scene under ``roots`` into ``out`` (``crops.npz``: X float16, y, scene, source)."""
    cls_set = modality_set(modality)
    classes = CLASSES[cls_set]
    dirs = scene_dirs(roots)
    Xs, ys, scenes, srcs = [], [], [], []
    for k, d in enumerate(dirs):
        X, y, src = scene_crops(d, modality, segmenter=segmenter, size=size)
        Xs.append(X.astype(np.float16))
        ys += [classes.index(c) for c in y]
        scenes += [str(d)] * len(y)
        srcs += src
        if progress:
            progress(k + 1, len(dirs), str(d))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, X=np.concatenate(Xs), y=np.array(ys, np.int64), scene=np.array(scenes),
                        source=np.array(srcs), classes=np.array(classes), modality=cls_set)
    counts = {c: int((np.array(ys) == i).sum()) for i, c in enumerate(classes)}
    return {"crops": len(ys), "scenes": len(dirs), "counts": counts, "path": str(out)}


def load_dataset(path: str | Path) -> dict:
    z = np.load(path, allow_pickle=False)
    return {k: z[k] for k in z.files}
