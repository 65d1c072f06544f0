"""Values that flow through the pipeline: options, the data bar rule, and what each stage hands on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis import Calibration, MeasureOptions, detect_databar, scale_bar_calibration
from ..errors import InvalidOption
from ..modality import Modality

__all__ = ["DataBar", "AnalysisOptions", "ImageFacts", "Prepared", "Segmented", "Measured", "ImageOutcome",
           "image_stem", "describe_image"]


@dataclass(frozen=True)
class DataBar:
    """Which rows of an image show the specimen: ``auto`` (detect the instrument data bar), ``none`` (all
    rows) or a fixed number of specimen rows. The one encoding inside the library; the proto form
    (``specimen_rows`` 0 / -1 / N) and the CLI form (``auto|none|N``) are converted at the edges.
    """

    mode: str = "auto"
    rows: int = 0

    def __post_init__(self):
        if self.mode not in ("auto", "none", "rows"):
            raise InvalidOption(f"data bar mode must be auto, none or rows, got {self.mode!r}", field="databar")
        if self.mode == "rows" and self.rows <= 0:
            raise InvalidOption(f"the number of specimen rows must be > 0, got {self.rows}", field="databar")

    @classmethod
    def auto(cls) -> "DataBar":
        return cls("auto")

    @classmethod
    def none(cls) -> "DataBar":
        return cls("none")

    @classmethod
    def fixed(cls, rows: int) -> "DataBar":
        return cls("rows", int(rows))

    @classmethod
    def parse(cls, value: "str | int | DataBar") -> "DataBar":
        """From ``auto``, ``none`` or a row count (the command-line spelling)."""
        if isinstance(value, DataBar):
            return value
        if isinstance(value, str) and value.lower() in ("auto", "none"):
            return cls(value.lower())
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise InvalidOption(f"data bar: use auto, none or a number of specimen rows, got {value!r}",
                                field="databar") from None
        return cls.fixed(n)

    def __str__(self) -> str:
        return str(self.rows) if self.mode == "rows" else self.mode

    def specimen_rows(self, height: int, detect: Callable[[], int]) -> int:
        """The number of specimen rows of an image ``height`` rows high; ``detect`` runs only for ``auto``."""
        if self.mode == "none":
            return int(height)
        if self.mode == "auto":
            return int(detect())
        if not 0 < self.rows <= height:
            raise InvalidOption(f"specimen rows must be in 1..{height} for this image, got {self.rows}",
                                field="databar")
        return self.rows


@dataclass(frozen=True)
class AnalysisOptions:
    """Everything a caller chooses for one analysis (validated on construction)."""

    measure: MeasureOptions = field(default_factory=MeasureOptions)
    pixel_size_nm: float | None = None
    databar: DataBar = field(default_factory=DataBar)
    segmenter: str | None = None

    def __post_init__(self):
        self.measure.validate()
        if self.pixel_size_nm is not None and not (np.isfinite(self.pixel_size_nm) and self.pixel_size_nm > 0):
            raise InvalidOption(f"pixel_size_nm must be > 0, got {self.pixel_size_nm}", field="pixel_size_nm")

    @property
    def modality(self) -> Modality:
        return Modality.parse(self.measure.modality)

    def with_measure(self, **kw) -> "AnalysisOptions":
        return replace(self, measure=replace(self.measure, **kw))


@dataclass(frozen=True)
class ImageFacts:
    """What decoding an image once tells: size, format, the file's calibration, the detected data bar."""

    width: int
    height: int
    format: str
    calibration: Calibration
    detected_rows: int
    #: the scale bar read in the data bar (#13): ``{"length_px", "label", "length_nm"}``, or None
    scalebar: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "format": self.format,
                "pixel_size_nm": self.calibration.pixel_size_nm, "calibration_source": self.calibration.source,
                "specimen_rows": self.detected_rows, "scalebar": self.scalebar}

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> "ImageFacts":
        return cls(int(d["width"]), int(d["height"]), d.get("format", ""),
                   Calibration(d.get("pixel_size_nm"), d.get("calibration_source") or "none"), int(d["specimen_rows"]),
                   d.get("scalebar"))


def describe_image(loaded) -> ImageFacts:
    """Facts of a decoded image (``semforge.analysis.LoadedImage``)."""
    h, w = loaded.pixels.shape[:2]
    rows = int(detect_databar(loaded.pixels))
    bar = None
    if rows < h:  # the scale bar in the data bar, read once here (#13)
        _, sb, _ = scale_bar_calibration(loaded.pixels, rows, Calibration(None, "none"))
        if sb is not None and sb.length_nm:
            bar = {"length_px": sb.length_px, "label": sb.label, "length_nm": sb.length_nm}
    return ImageFacts(int(w), int(h), loaded.format, loaded.calibration, rows, bar)


@dataclass
class Prepared:
    """An image ready to segment: calibration and specimen rows decided (``image``: stage-specific handle)."""

    name: str
    calibration: Calibration
    specimen_rows: int
    height: int
    width: int
    image: Any = None
    gray: np.ndarray | None = None
    #: provenance (#13): the input as given (file name or object key) and the sha256 of its bytes
    source: str = ""
    sha256: str = ""


@dataclass
class Segmented:
    """What the segment stage hands to the measure stage: the foreground mask (an array in process, an object
    reference remotely), the segmenter that made it (it decides the recommended post-processing), the
    threshold it was cut at, the per-image confidence of its probabilities and the quantised probability map
    itself (both None when it gives none)."""

    mask: Any
    segmenter: str = ""
    threshold: float | None = None
    confidence: dict[str, Any] | None = None
    #: ``name/version`` of the weights that made the mask (what the inference back end served), "" if none
    model_version: str = ""
    #: the combined probability quantised (``semforge.analysis.quantize_probability``: uint8, full image size,
    #: data bar rows 0) for the measure stage's per-particle ``seg_confidence`` (#16): an array in process, an
    #: object reference (uint8 PNG) remotely; None when the segmenter gives no confidence (classical)
    probability: Any = None


@dataclass
class Measured:
    """The particle table and instance labels of one image (arrays in process, object references remotely)."""

    table: Any
    labels: Any
    count: int
    included: int


@dataclass
class ImageOutcome:
    prepared: Prepared
    measured: Measured


def image_stem(path: str | os.PathLike) -> str:
    return Path(path).name.rsplit(".", 1)[0] or "image"
