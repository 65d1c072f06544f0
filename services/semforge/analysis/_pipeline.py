"""From a binary mask (or an image and a segmenter) to a calibrated particle table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InvalidOption
from ..modality import MODALITIES, Modality
from ._io import Calibration
from ._confidence import particle_confidence, quantize_probability
from ._morphometry import file_column, measure_instance, particle_columns, shape_dimensions
from ..postprocess import MASK_DEFAULT, POST_KEYS, PostProcess
from ._refine import refine_separation
from ._separate import clean_mask, grow_separation, keep_instances, particle_contrast, separate
from ._shape import CONFIDENCE_LIMIT, classify_shape
from ._table import ParticleTable

__all__ = ["MeasureOptions", "ImageResult", "measure_mask", "summarize", "classify_particles", "SUMMARY_MEASURES",
           "MODALITIES"]

SUMMARY_MEASURES = ("area", "perimeter", "ecd", "feret_min", "feret_max", "circularity", "convexity",
                    "solidity", "aspect_ratio")


@dataclass(frozen=True)
class MeasureOptions:
    """Options of cleaning, separation and measurement (all keyword).

    The post-processing keys (``threshold``, ``separate``, ``watershed_h``, ``grow_px``, ``min_contrast``,
    ``refine_px``;
    :class:`~semforge.analysis.PostProcess`) are ``None`` unless the user chose them: the analysis
    pipeline then applies the values recommended for its segmenter and the modality
    (:func:`~semforge.analysis.recommended`); :func:`measure_mask` on a mask of its own uses
    :data:`~semforge.analysis.MASK_DEFAULT`.
    """

    separate: str | None = None
    modality: str = "se"
    min_diameter_nm: float = 0.5
    min_area_px: float = 20
    max_hole_area_px: float = 20
    min_bbox_px: int = 3
    convexity_threshold: float = 0.95
    min_marker_px: float = 30
    connectivity: int = 1
    classify: bool = True
    threshold: float | None = None
    watershed_h: float | None = None
    grow_px: int | None = None
    min_contrast: float | None = None
    refine_px: int | None = None

    @property
    def post(self) -> PostProcess:
        """The post-processing keys as a spec (``None``: not chosen)."""
        return PostProcess(**{k: getattr(self, k) for k in POST_KEYS})

    def with_post(self, post: PostProcess) -> "MeasureOptions":
        """These options with ``post``'s keys (e.g. the effective spec, every key filled)."""
        return replace(self, **post.to_doc())

    def validate(self) -> None:
        """Raise :class:`~semforge.errors.InvalidOption` (naming the option) for a value out of range."""
        self.post.validate()
        Modality.parse(self.modality)
        if self.connectivity not in (1, 2):
            raise InvalidOption(f"connectivity must be 1 or 2, got {self.connectivity}", field="connectivity")
        for name in ("min_diameter_nm", "min_area_px", "max_hole_area_px", "min_marker_px"):
            if getattr(self, name) < 0:
                raise InvalidOption(f"{name} must be >= 0, got {getattr(self, name)}", field=name)
        if not 0 < self.convexity_threshold <= 1:
            raise InvalidOption(f"convexity_threshold must be in (0, 1], got {self.convexity_threshold}",
                                field="convexity_threshold")


@dataclass
class ImageResult:
    """Everything measured on one image."""

    name: str
    labels: np.ndarray
    particles: list[dict[str, Any]]
    calibration: Calibration
    specimen_rows: int
    options: MeasureOptions
    extra: dict[str, Any] = field(default_factory=dict)
    #: per-image confidence of the segmenter's probabilities (``image_confidence``), None without one
    confidence: dict[str, Any] | None = None

    @property
    def unit(self) -> str:
        return self.calibration.unit

    @property
    def columns(self) -> list[str]:
        """Column names in the files (with the unit: ``ecd_nm``); rows use :data:`COLUMNS`."""
        return particle_columns(self.unit)

    def included(self) -> list[dict[str, Any]]:
        return [p for p in self.particles if not p["excluded"]]

    @property
    def postprocess(self) -> dict[str, Any]:
        """The post-processing applied (every key; ``threshold`` is the segment stage's)."""
        return self.options.post.over(MASK_DEFAULT).to_doc()

    @property
    def table(self) -> ParticleTable:
        return ParticleTable(self.name, self.calibration, self.specimen_rows, self.postprocess["separate"],
                             self.particles, postprocess=self.postprocess, confidence=self.confidence)

    @classmethod
    def from_table(cls, table: ParticleTable, labels: np.ndarray, options: MeasureOptions) -> "ImageResult":
        """The result a table records (its post-processing as applied overrides ``options``' keys)."""
        post = PostProcess(**{k: table.postprocess[k] for k in POST_KEYS if table.postprocess.get(k) is not None})
        if table.separation and post.separate is None:
            post = replace(post, separate=table.separation)
        return cls(name=table.image, labels=labels, particles=table.particles, calibration=table.calibration,
                   specimen_rows=table.specimen_rows, options=options.with_post(post.over(options.post)),
                   confidence=table.confidence)


def classify_particles(particles: list[dict[str, Any]], *, modality: str, unit: str,
                       confidence_limit: float = CONFIDENCE_LIMIT) -> dict[str, int]:
    """Set ``shape``, ``shape_confidence`` and the shape dimensions of every row (in place); counts per shape."""
    counts: dict[str, int] = {}
    for row in particles:
        shape, conf = classify_shape(row, modality=modality, unit=unit, confidence_limit=confidence_limit)
        row["shape"], row["shape_confidence"] = shape, conf
        row.update(shape_dimensions(row, shape, unit))
        counts[shape] = counts.get(shape, 0) + 1
    return counts


def measure_mask(mask: np.ndarray, *, calibration: Calibration = Calibration(None, "none"),
                 image_name: str = "image", specimen_rows: int | None = None,
                 options: MeasureOptions = MeasureOptions(), gray: np.ndarray | None = None,
                 confidence: dict[str, Any] | None = None,
                 probability: np.ndarray | None = None) -> ImageResult:
    """Clean, separate and measure the particles of a binary mask.

    Post-processing (:attr:`MeasureOptions.post`, unset keys from :data:`MASK_DEFAULT`): clean ->
    separate (``separate``, ``watershed_h``) -> contrast filter (``min_contrast``, on ``gray``) ->
    boundary refinement (``refine_px``, on ``gray``) -> boundary growth (``grow_px``) -> measure. ``threshold`` is the segment stage's (recorded only).

    Parameters
    ----------
    mask : ndarray, shape (H, W)
        Foreground where > 0. Rows from ``specimen_rows`` down (the data bar)
        are ignored.
    calibration : Calibration
        Pixel size; uncalibrated results are in px and say so.
    image_name : str
        Written into the ``image`` column.
    specimen_rows : int, optional
        Number of rows that show the specimen (default: all).
    options : MeasureOptions
    gray : ndarray, shape (H, W), float in [0, 1], optional
        The image; needed by the contrast filter (``min_contrast`` > 0) and the refinement (``refine_px`` > 0).
    confidence : dict, optional
        The segmenter's per-image confidence, carried into the result.
    probability : ndarray, shape (H, W), optional
        The segmenter's combined foreground probability, quantised by
        :func:`~semforge.analysis.quantize_probability` (uint8, 255 = 1; a float map is quantised the same way).
        Each particle's ``seg_confidence`` is its mean over the particle's final pixels
        (:func:`~semforge.analysis.particle_confidence`); without it (a classical segmenter, a bare mask)
        ``seg_confidence`` is None.

    Returns
    -------
    ImageResult
        ``labels`` has the full input shape (uint32, 0 = background); every
        instance is a row of ``particles``, excluded ones with their reason
        (``border``, ``too_small``, ``not_separable``, ``nonconvex_after_uecs``).
    """
    options.validate()
    post = options.post.over(MASK_DEFAULT)
    options = options.with_post(post)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InvalidOption(f"mask must be 2-D, got shape {m.shape}", field="mask")
    h, w = m.shape
    rows = h if specimen_rows is None else int(specimen_rows)
    if not 0 < rows <= h:
        raise InvalidOption(f"specimen_rows must be in 1..{h}, got {specimen_rows}", field="specimen_rows")
    prob = None
    if probability is not None:
        prob = quantize_probability(probability)
        if prob.shape != (h, w):
            raise InvalidOption(f"probability map {prob.shape} and mask {(h, w)} differ in size", field="probability")
        prob = prob[:rows]
    px = calibration.pixel_size_nm
    unit = calibration.unit
    spec = m[:rows] > 0
    min_area = options.min_area_px
    if px:
        min_area = max(min_area, math.pi * (options.min_diameter_nm / px / 2.0) ** 2)
    cleaned = clean_mask(spec, min_area_px=min_area, max_hole_area_px=options.max_hole_area_px,
                         connectivity=options.connectivity)
    sep = separate(cleaned, mode=post.separate, pixel_size_nm=px, watershed_h=post.watershed_h,
                   convexity_threshold=options.convexity_threshold, min_marker_px=options.min_marker_px,
                   connectivity=options.connectivity)
    if post.needs_image:  # the contrast filter and the boundary refinement read the gray image
        if gray is None:
            key = "min_contrast" if post.min_contrast else "refine_px"
            raise InvalidOption(f"the {'contrast filter' if post.min_contrast else 'boundary refinement'} ({key}) "
                                "needs the gray image", field=key)
        g = np.asarray(gray)
        if g.shape != (h, w):
            raise InvalidOption(f"image {g.shape} and mask {(h, w)} differ in size", field="gray")
        dark = Modality.parse(options.modality).dark_particles
    if post.min_contrast:  # spurious-object filter (faint film / contamination blobs), before the growth
        sep = keep_instances(sep, particle_contrast(sep.labels, g[:rows], dark=dark) >= post.min_contrast)
    if post.refine_px:  # outlines re-decided on the gray image (#16, docs/segmentation.md)
        sep = refine_separation(sep, g[:rows], dark=dark, band_px=int(post.refine_px))
    sep = grow_separation(sep, int(post.grow_px))
    particles: list[dict[str, Any]] = []
    for k, inst in enumerate(sep.instances, start=1):
        r0, c0 = inst.box[0].start, inst.box[1].start
        row: dict[str, Any] = {"id": k, "image": image_name}
        row.update(measure_instance(inst.mask, offset=(r0, c0), pixel_size_nm=px))
        touches = (inst.box[0].start == 0 or inst.box[1].start == 0 or inst.box[0].stop >= rows
                   or inst.box[1].stop >= w)
        row["touches_border"] = bool(touches)
        row["separated"] = bool(inst.separated)
        if options.separate == "none":
            row["overlap_suspected"] = bool(row["convexity"] < options.convexity_threshold)
        reason = inst.exclude_reason
        if touches:
            reason = "border"
        elif (row["bbox_x1_px"] - row["bbox_x0_px"] < options.min_bbox_px
              or row["bbox_y1_px"] - row["bbox_y0_px"] < options.min_bbox_px):
            reason = reason or "too_small"
        row["shape"] = "unknown"
        row["shape_confidence"] = 0.0
        row.update(shape_dimensions(row, "unknown", unit))
        # the network's mean combined probability over the particle's final pixels (#16); None without one
        row["seg_confidence"] = None if prob is None else particle_confidence(prob[inst.box], inst.mask)
        row["excluded"] = bool(reason)
        row["exclude_reason"] = reason
        particles.append(row)
    if options.classify:
        classify_particles(particles, modality=options.modality, unit=unit)
    labels = np.zeros((h, w), dtype=np.uint32)
    labels[:rows] = sep.labels
    drawn = np.bincount(labels.ravel(), minlength=len(particles) + 1)  # labels.tif = area_px - overlap_px (#13)
    for row in particles:
        row["overlap_px"] = int(round(row["area"] / ((px or 1.0) ** 2))) - int(drawn[row["id"]])
    return ImageResult(name=image_name, labels=labels, particles=particles, calibration=calibration,
                       specimen_rows=rows, options=options, confidence=confidence)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(particles: list[dict[str, Any]], *, unit: str, scope: str = "sample") -> list[dict[str, Any]]:
    """Distribution statistics of the included particles, one row per measure.

    Returns rows with ``scope, measure, unit, count, mean, sd, median, d10,
    d50, d90``; D10/D50/D90 are the 10/50/90 % quantiles of the
    number-weighted distribution; SD is the sample standard deviation (n-1).
    """
    inc = [p for p in particles if not p["excluded"]]
    out = []
    for meas in SUMMARY_MEASURES:
        u = f"{unit}^2" if meas == "area" else unit if meas in ("perimeter", "ecd", "feret_min", "feret_max") else "1"
        v = np.array([p[meas] for p in inc], dtype=np.float64)
        out.append({
            "scope": scope, "measure": meas, "column": file_column(meas, unit), "unit": u, "count": int(len(v)),
            "mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "median": _pct(v, 50), "d10": _pct(v, 10), "d50": _pct(v, 50), "d90": _pct(v, 90),
        })
    return out
