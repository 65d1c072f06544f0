"""The stages of one analysis and their in-process implementation.

``prepare`` (decode once, calibration, data bar) -> ``segment`` (foreground mask)
-> ``measure`` (cleaning, separation, morphometry) -> ``classify`` (shape per
particle) -> ``report`` (per-image files and the sample report). Stages are
pure: retry, cancel and progress wrap them from outside (see :func:`analyze_image`).
``semforge.rpc.RemoteStages`` implements the same interface over the services.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..analysis import (CONFIDENCE_LIMIT, add_gray_stats, ImageResult, ScaleBar, check_scale_bar, classify_particles, load_image,
                        measure_mask, resolve_calibration, to_gray_float, write_image_outputs, write_sample_report)
from ..analysis._checks import Warning_
from ..analysis._report import report_warnings, sample_distribution
from ..inference import DEFAULT_SEGMENTER, Segmenter, create_segmenter
from .types import AnalysisOptions, ImageFacts, ImageOutcome, Measured, Prepared, describe_image

__all__ = ["Stages", "LocalStages", "prepare_facts"]


class Stages(Protocol):
    """One analysis step by step; handles (``Prepared.image``, masks, tables, labels) are stage-specific."""

    def prepare(self, source: Any, name: str, options: AnalysisOptions) -> Prepared: ...

    def segment(self, prep: Prepared, options: AnalysisOptions) -> Any: ...

    def measure(self, prep: Prepared, mask: Any, options: AnalysisOptions) -> Measured: ...

    def classify(self, prep: Prepared, measured: Measured, options: AnalysisOptions) -> Measured: ...

    def report(self, outcomes: list[ImageOutcome], options: AnalysisOptions, *, title: str,
               warn: Callable[[Any], None] | None = None) -> dict[str, Any]: ...


def prepare_facts(facts: ImageFacts, name: str, options: AnalysisOptions, image: Any = None) -> Prepared:
    """The calibration and data bar decision for an image: the user's pixel size overrides the file's; the
    data bar rule of ``options.databar`` (``auto`` uses the rows detected when the image was decoded)."""
    cal = resolve_calibration(facts.calibration, user_pixel_size_nm=options.pixel_size_nm)
    if options.pixel_size_nm is None and facts.scalebar:  # scale bar vs metadata; calibrates a file without (#13)
        b = facts.scalebar
        cal = check_scale_bar(cal, ScaleBar(b["length_px"], 0, 0, 0, False, b["label"], b["length_nm"]), image=name)
    rows = options.databar.specimen_rows(facts.height, lambda: facts.detected_rows)
    return Prepared(name=name, calibration=cal, specimen_rows=rows, height=facts.height, width=facts.width,
                    image=image)


class LocalStages:
    """Every stage in this process: library calls on arrays; ``report`` writes under ``outdir``."""

    def __init__(self, segmenter: Segmenter | str | None = None, outdir: str | os.PathLike | None = None,
                 classifier: Any = None):
        self._segmenter = segmenter
        self._classifier = classifier  # a semforge.classification Classifier, a name, or None (the default)
        self.outdir = Path(outdir) if outdir is not None else None

    def segmenter(self, options: AnalysisOptions | None = None) -> Segmenter:
        if self._segmenter is None or isinstance(self._segmenter, str):
            name = self._segmenter or (options.segmenter if options else None) or DEFAULT_SEGMENTER
            self._segmenter = create_segmenter(name)
        return self._segmenter

    def prepare(self, source, name: str, options: AnalysisOptions) -> Prepared:
        loaded = load_image(source, name=name)
        prep = prepare_facts(describe_image(loaded), name, options)
        prep.gray = to_gray_float(loaded.pixels)
        if isinstance(source, (str, os.PathLike)):
            prep.source, prep.sha256 = os.path.basename(os.fspath(source)), _sha256_file(source)
        elif isinstance(source, (bytes, bytearray)):
            prep.source, prep.sha256 = name, hashlib.sha256(source).hexdigest()
        return prep

    def segment(self, prep: Prepared, options: AnalysisOptions) -> np.ndarray:
        seg = self.segmenter(options)
        mask = np.zeros(prep.gray.shape, dtype=bool)
        # any object with predict() works (ablations in the benchmarks); the cut is Segmenter.mask's
        cut = seg.mask if hasattr(seg, "mask") else (lambda g, **kw: Segmenter.mask(seg, g, **kw))
        mask[: prep.specimen_rows] = cut(prep.gray[: prep.specimen_rows], modality=options.measure.modality)
        return mask

    def measure(self, prep: Prepared, mask: np.ndarray, options: AnalysisOptions) -> Measured:
        res = measure_mask(mask, calibration=prep.calibration, image_name=prep.name,
                           specimen_rows=prep.specimen_rows, options=options.with_measure(classify=False).measure)
        return Measured(table=res.table, labels=res.labels, count=len(res.particles), included=len(res.included()))

    def classify(self, prep: Prepared, measured: Measured, options: AnalysisOptions,
                 confidence_limit: float = CONFIDENCE_LIMIT) -> Measured:
        from ..classification import DEFAULT_CLASSIFIER, apply_classes, create_classifier

        t = measured.table
        if self._classifier is None or isinstance(self._classifier, str):
            self._classifier = create_classifier(self._classifier or DEFAULT_CLASSIFIER)
        cls = self._classifier
        if cls.name == "rules-v1":
            classify_particles(t.particles, modality=options.measure.modality, unit=t.unit,
                               confidence_limit=confidence_limit)
        else:  # shape from each particle's crop (semforge.classification; needs the gray image and the labels)
            if prep.gray is None or not isinstance(measured.labels, np.ndarray):
                raise ValueError(f"classifier {cls.name} needs the gray image and the label image")
            apply_classes(t.particles, cls.classify(prep.gray, measured.labels, t.particles,
                                                    modality=str(options.measure.modality), unit=t.unit,
                                                    confidence_limit=confidence_limit), t.unit)
        t.classifier = cls.name
        measured.included = len(t.included())
        return measured

    def report(self, outcomes: list[ImageOutcome], options: AnalysisOptions, *, title: str,
               write_labels: bool = True, warn: Callable[[Warning_], None] | None = None) -> dict[str, str]:
        """Per-image files and the sample report; ``warn`` receives every plausibility warning of the sample
        (they are written into the report too: HTML banner, JSON ``warnings``, XLSX sheet)."""
        if self.outdir is None:
            raise RuntimeError("LocalStages.report needs an output directory")
        results = []
        for o in outcomes:
            add_gray_stats(o.measured.table.particles, o.prepared.gray, o.measured.labels)  # gray_mean/sd (#13)
            res = ImageResult.from_table(o.measured.table, o.measured.labels, options.measure)
            write_image_outputs(res, o.prepared.gray, self.outdir / res.name, write_labels=write_labels)
            results.append(res)
        dist = sample_distribution(results)
        warnings = report_warnings(results, dist)
        self.warnings = warnings
        if warn is not None:
            for w in warnings:
                warn(w)
        prov = provenance(outcomes, options)
        if self._segmenter is not None:  # the one actually used here
            prov["models"]["segmenter"] = (self._segmenter if isinstance(self._segmenter, str)
                                           else getattr(self._segmenter, "name", type(self._segmenter).__name__))
        return write_sample_report(results, self.outdir, title=title, warnings=warnings, distribution=dist,
                                   provenance=prov)


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_versions(segmenter: str, classifier: str, modality: str) -> dict[str, str]:
    """``name/version`` of the shipped networks a report used (the highest version in the model repository is
    the one served), so that a report says which weights made it (#13)."""
    from ..classification.classes import modality_set
    from ..classification.runtime import SHIPPED_CLASSIFIERS
    from ..inference import SHIPPED, model_dir

    out = {}
    try:
        if segmenter.startswith("unetpp"):
            d = model_dir(SHIPPED[modality])
            out["segmenter_model"] = f"{d.parent.name}/{d.name}"
        if classifier.startswith("cnn"):
            d = model_dir(SHIPPED_CLASSIFIERS[modality_set(modality)])
            out["classifier_model"] = f"{d.parent.name}/{d.name}"
    except (FileNotFoundError, KeyError, ValueError):
        pass  # a model outside the shipped repository: its name above is all we know
    return out


def provenance(outcomes: list[ImageOutcome], options: AnalysisOptions) -> dict[str, Any]:
    """What produced a report (#13): models, every option, the inputs with their sha256.

    The software version and timestamp are added by the report writer.
    """
    from ..classification import DEFAULT_CLASSIFIER

    classifiers = sorted({getattr(o.measured.table, "classifier", "") or "" for o in outcomes} - {""})
    opts = dataclasses.asdict(options)
    opts["databar"] = str(options.databar)
    opts["measure"].pop("classify", None)  # internal switch: the pipeline always runs its classify stage
    segmenter = options.segmenter or DEFAULT_SEGMENTER
    models = {"segmenter": segmenter, "classifier": ", ".join(classifiers) or DEFAULT_CLASSIFIER}
    models.update(_model_versions(segmenter, models["classifier"], options.measure.modality))
    return {
        "models": models,
        "options": opts,
        "inputs": [{"name": o.prepared.name, "file": o.prepared.source, "sha256": o.prepared.sha256}
                   for o in outcomes],
    }
