"""The main job in process: image -> data bar cut -> segmentation -> separation + morphometry -> report.

The gateway runs the same stages through the services; this module is the
in-process path of ``semforge analyze`` (no server) and the reference the
orchestration overhead is measured against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .analysis import (Calibration, ImageResult, LoadedImage, MeasureOptions, detect_databar, load_image,
                       measure_mask, resolve_calibration, to_gray_float, write_image_outputs, write_sample_report)
from .inference import DEFAULT_SEGMENTER, Segmenter, create_segmenter

__all__ = ["PreparedImage", "prepare_image", "analyze_image", "analyze_paths", "image_stem"]

ProgressFn = Callable[[int, str, str, float], None]


@dataclass
class PreparedImage:
    name: str
    gray: np.ndarray
    calibration: Calibration
    specimen_rows: int
    loaded: LoadedImage


def image_stem(path: str | os.PathLike) -> str:
    return Path(path).name.rsplit(".", 1)[0] or "image"


def prepare_image(source, *, name: str, pixel_size_nm: float | None = None, databar: str | int = "auto") -> PreparedImage:
    """Decode, calibrate and find the specimen rows of one image.

    ``databar``: ``"auto"`` (detect), ``"none"`` (keep all rows) or an int
    (the number of specimen rows).
    """
    img = load_image(source, name=name)
    cal = resolve_calibration(img.calibration, user_pixel_size_nm=pixel_size_nm)
    h = img.pixels.shape[0]
    if databar == "auto":
        rows = detect_databar(img.pixels)
    elif databar == "none":
        rows = h
    else:
        rows = int(databar)
        if not 0 < rows <= h:
            raise ValueError(f"databar rows must be in 1..{h}, got {databar}")
    return PreparedImage(name, to_gray_float(img.pixels), cal, rows, img)


def analyze_image(prep: PreparedImage, *, segmenter: Segmenter, options: MeasureOptions,
                  classifier=None) -> ImageResult:
    prob = segmenter.predict(prep.gray[: prep.specimen_rows], modality=options.modality)
    mask = np.zeros(prep.gray.shape, dtype=bool)
    mask[: prep.specimen_rows] = prob >= 0.5
    res = measure_mask(mask, calibration=prep.calibration, image_name=prep.name,
                       specimen_rows=prep.specimen_rows, options=options)
    if options.classify and classifier is not None:  # shape from each particle's crop (semforge.classification)
        from .classification import apply_classes

        apply_classes(res.particles, classifier.classify(prep.gray, res.labels, res.particles,
                                                         modality=options.modality, unit=res.unit), res.unit)
    return res


def analyze_paths(paths: list[str], outdir: str | os.PathLike, *, options: MeasureOptions = MeasureOptions(),
                  pixel_size_nm: float | None = None, databar: str | int = "auto", segmenter: str | None = None,
                  progress: ProgressFn | None = None, title: str = "semforge report") -> dict[str, str]:
    """Analyse images of one sample in process and write all outputs under ``outdir``."""
    options.validate()
    seg = create_segmenter(segmenter or DEFAULT_SEGMENTER)
    from .classification import DEFAULT_CLASSIFIER, create_classifier

    cls = create_classifier(DEFAULT_CLASSIFIER) if options.classify else None
    out = Path(outdir)
    results, names = [], set()
    for i, path in enumerate(paths):
        name = image_stem(path)
        if name in names:
            raise ValueError(f"two images share the name {name!r}; rename one")
        names.add(name)
        if progress:
            progress(i, name, "load", 0.0)
        prep = prepare_image(path, name=name, pixel_size_nm=pixel_size_nm, databar=databar)
        if progress:
            progress(i, name, "segment", 0.25)
        res = analyze_image(prep, segmenter=seg, options=options, classifier=cls)
        if progress:
            progress(i, name, "report", 0.8)
        write_image_outputs(res, prep.gray, out / name)
        results.append(res)
    written = write_sample_report(results, out, title=title)
    if progress:
        progress(len(paths) - 1, "", "done", 1.0)
    return written
