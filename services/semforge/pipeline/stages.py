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
import json
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..analysis import (CONFIDENCE_LIMIT, PostProcess, add_gray_stats, ImageResult, ScaleBar,
                        check_scale_bar, classify_particles, image_confidence, load_image, measure_mask,
                        quantize_probability, recommended, resolve_calibration, to_gray_float, write_image_outputs,
                        write_sample_report)
from ..analysis._checks import Warning_
from ..analysis._report import report_warnings, sample_distribution
from ..inference import DEFAULT_SEGMENTER, Segmenter, combined, create_segmenter
from .types import AnalysisOptions, ImageFacts, ImageOutcome, Measured, Prepared, Segmented, describe_image

__all__ = ["Stages", "LocalStages", "prepare_facts", "effective_postprocess", "segmenter_name"]


def segmenter_name(segmenter: Any) -> str:
    """The name a segmenter (object or registry name) goes by in reports and in :func:`recommended`."""
    if segmenter is None or isinstance(segmenter, str):
        return segmenter or DEFAULT_SEGMENTER
    return getattr(segmenter, "name", type(segmenter).__name__)


def effective_postprocess(options: AnalysisOptions, segmenter: str | None = None,
                          threshold: float | None = None) -> PostProcess:
    """The post-processing an analysis applies: the user's explicit keys over the values recommended for the
    segmenter and the modality (#16); ``threshold``: the one the segment stage actually cut at."""
    post = options.measure.post.over(recommended(options.measure.modality, segmenter or options.segmenter))
    return dataclasses.replace(post, threshold=threshold) if threshold is not None else post


class Stages(Protocol):
    """One analysis step by step; handles (``Prepared.image``, masks, tables, labels) are stage-specific."""

    def prepare(self, source: Any, name: str, options: AnalysisOptions) -> Prepared: ...

    def segment(self, prep: Prepared, options: AnalysisOptions) -> Segmented: ...

    def measure(self, prep: Prepared, segmented: Segmented, options: AnalysisOptions) -> Measured: ...

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

    def segment(self, prep: Prepared, options: AnalysisOptions) -> Segmented:
        """Foreground of the specimen rows, cut at the post-processing's threshold (explicit, else recommended
        for this segmenter and modality); for the networks the per-image confidence of the probabilities and the
        quantised probability map (the measure stage's per-particle ``seg_confidence``)."""
        seg = self.segmenter(options)
        name = segmenter_name(seg)
        threshold = float(effective_postprocess(options, name).threshold)
        modality = options.measure.modality
        g = prep.gray[: prep.specimen_rows]
        # any object with predict() works (ablations in the benchmarks)
        ch = seg.channels(g, modality=modality) if hasattr(seg, "channels") else seg.predict(g, modality=modality)
        mask = np.zeros(prep.gray.shape, dtype=bool)
        p = combined(ch)
        mask[: prep.specimen_rows] = p >= threshold
        conf = prob = None
        if getattr(seg, "reports_confidence", False):  # the networks: per-image and per-particle confidence
            conf = image_confidence(ch)
            prob = np.zeros(prep.gray.shape, dtype=np.uint8)
            prob[: prep.specimen_rows] = quantize_probability(p)
        version = seg.model_version(modality) if hasattr(seg, "model_version") else ""
        return Segmented(mask, name, threshold, conf, version, prob)

    def measure(self, prep: Prepared, segmented: Segmented | np.ndarray, options: AnalysisOptions) -> Measured:
        """Clean, separate (+ contrast filter, boundary refinement and growth) and measure with :func:`effective_postprocess`; a
        bare mask (no :class:`Segmented`) counts as made by ``options.segmenter`` at the recommended threshold."""
        s = segmented if isinstance(segmented, Segmented) else Segmented(segmented, segmenter_name(
            self._segmenter if self._segmenter is not None else options.segmenter))
        post = effective_postprocess(options, s.segmenter, s.threshold)
        if post.needs_image and prep.gray is None:
            raise ValueError("the contrast filter / boundary refinement needs the prepared gray image")
        res = measure_mask(s.mask, calibration=prep.calibration, image_name=prep.name,
                           specimen_rows=prep.specimen_rows, gray=prep.gray if post.needs_image else None,
                           options=dataclasses.replace(options.measure.with_post(post), classify=False),
                           confidence=s.confidence, probability=s.probability)
        res.table.segmenter_model = s.model_version
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
    served = sorted({getattr(o.measured.table, "segmenter_model", "") or "" for o in outcomes} - {""})
    if served:  # what the segment stage ran (its back end's answer), not this process' model repository
        models["segmenter_model"] = ", ".join(served)
    # the post-processing actually applied (#16: explicit choices over the recommended values), as measured
    applied = {o.prepared.name: dict(o.measured.table.postprocess) for o in outcomes
               if getattr(o.measured.table, "postprocess", None)}
    distinct = {json.dumps(v, sort_keys=True) for v in applied.values()}
    return {
        "models": models,
        "options": opts,
        "postprocess": next(iter(applied.values())) if len(distinct) == 1 else applied,
        "inputs": [{"name": o.prepared.name, "file": o.prepared.source, "sha256": o.prepared.sha256}
                   for o in outcomes],
    }
