"""One post-processing spec: how a segmenter's probabilities become measured particles (#16).

:class:`PostProcess` names every choice made after the network: the probability ``threshold``
(segment stage), the ``separate`` mode and its ``watershed_h``, the boundary growth ``grow_px``, the
spurious-object filter ``min_contrast`` and the boundary refinement on the gray image ``refine_px``
(measure stage). A field left ``None`` is not chosen:
:func:`recommended` fills it per segmenter and modality (the values chosen by cross-validation on
the real images, :data:`RECOMMENDED`; docs/segmentation.md). No numpy here: the command line reads it.

Adding a key later: a field here with its line in :data:`POST_HELP` (the CLI flags of ``analyze``,
``measure``, ``evaluate``, ``batch`` and the proto conversion follow :data:`POST_KEYS` /
:data:`POST_TYPES`), its value in ``RECOMMENDED`` where it differs from :data:`MASK_DEFAULT`, an
``optional`` field of the same name in ``AnalysisOptions`` (common.proto) and in ``MeasureOptions``, and
its step in :func:`semforge.analysis.measure_mask`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import InvalidOption
from .modality import Modality

SEPARATION_MODES = ("uecs", "watershed", "none")

#: Post-processing of the shipped UNet++ (the analysis' default since #16), chosen by 5-fold cross-validation
#: on the real annotated images (docs/segmentation.md; held-out figures there): probability threshold, separation,
#: watershed h, boundary growth (px), minimum contrast of a particle to its surrounding (0 = off).
#: SE (self-trained model, see models_repo/semforge_unetpp_se/2/training.json): outlines sat 0.8 px
#: inside the human ones, grow_px 1 chosen in 5/5 folds. Transmission: spurious faint blobs (film,
#: contamination) were 47 % of the shipped model's objects; the contrast filter removes them
#: (human particles: contrast >= 0.42 at the 5th percentile), chosen in 5/5 folds.
#: Boundary refinement on the gray image (``refine_px``: each outline re-decided within +-band px at the level
#: midway between the particle's and its surrounding's gray, :func:`semforge.analysis._refine.refine_separation`):
#: transmission band 1 px chosen in 5/5 folds (held-out IoU 0.948 -> 0.972, AP 0.717 -> 0.767); SE: refinement
#: replaced the +1 px growth in 5/5 folds for both the rendered-only and the served model (band 2-3 px; band 2
#: chosen on all 20), served model at these settings IoU 0.871 -> 0.895, F1 0.768 -> 0.782, AP 0.390 -> 0.407.
#: SE threshold 0.5 since model version 3 (600 self-training steps, models_repo/semforge_unetpp_se/3/training.json):
#: its fold versions chose t=0.5 in 5/5 folds (with the refinement, band 2 on all 20); held out F1 0.789, AP 0.411
#: (version 2's recipe at t=0.6: 0.772 / 0.405).
RECOMMENDED = {
    "se": {"threshold": 0.5, "separate": "watershed", "watershed_h": 0.5, "grow_px": 0, "min_contrast": 0.0,
           "refine_px": 2},
    "him": {"threshold": 0.5, "separate": "watershed", "watershed_h": 0.5, "grow_px": 0, "min_contrast": 0.0,
            "refine_px": 2},
    "tem": {"threshold": 0.4, "separate": "watershed", "watershed_h": 0.5, "grow_px": 0, "min_contrast": 0.3,
            "refine_px": 1},
    "stem": {"threshold": 0.4, "separate": "watershed", "watershed_h": 0.5, "grow_px": 0, "min_contrast": 0.3,
             "refine_px": 1},
}

__all__ = ["SEPARATION_MODES", "RECOMMENDED", "PostProcess", "POST_KEYS", "POST_TYPES", "POST_HELP", "recommended",
           "CLASSICAL", "MASK_DEFAULT", "segmenter_family"]


@dataclass(frozen=True)
class PostProcess:
    """Threshold, separation, watershed h, boundary growth and contrast filter; ``None`` = not chosen."""

    threshold: float | None = None
    separate: str | None = None
    watershed_h: float | None = None
    grow_px: int | None = None
    min_contrast: float | None = None
    refine_px: int | None = None

    def over(self, base: "PostProcess") -> "PostProcess":
        """``base`` with the values chosen here on top (an explicit choice always wins)."""
        return replace(base, **self.chosen())

    def chosen(self) -> dict[str, Any]:
        """The keys given a value (the user's explicit choices)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def complete(self) -> bool:
        return all(getattr(self, k) is not None for k in POST_KEYS)

    @property
    def needs_image(self) -> bool:
        """The measure stage needs the gray image (contrast filter, boundary refinement)."""
        return bool(self.min_contrast) or bool(self.refine_px)

    def validate(self) -> None:
        """Raise :class:`~semforge.errors.InvalidOption` (naming the key) for a value out of range."""
        t, s, h, g, c, r = (self.threshold, self.separate, self.watershed_h, self.grow_px, self.min_contrast,
                            self.refine_px)
        if t is not None and not 0 < t < 1:
            raise InvalidOption(f"threshold must be in (0, 1), got {t}", field="threshold")
        if s is not None and s not in SEPARATION_MODES:
            raise InvalidOption(f"unknown separation mode {s!r}; valid: {', '.join(SEPARATION_MODES)}",
                                field="separation")
        if h is not None and not h > 0:
            raise InvalidOption(f"watershed_h must be > 0 px, got {h}", field="watershed_h")
        if g is not None and (int(g) != g or not 0 <= g <= 20):
            raise InvalidOption(f"grow_px must be a whole number of pixels in 0..20, got {g}", field="grow_px")
        if c is not None and not 0 <= c <= 1:
            raise InvalidOption(f"min_contrast must be in [0, 1] (gray levels), got {c}", field="min_contrast")
        if r is not None and (int(r) != r or not 0 <= r <= 10):
            raise InvalidOption(f"refine_px must be a whole number of pixels in 0..10, got {r}", field="refine_px")

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """``t=0.6 watershed h=0.5 grow=1px contrast>=0.3`` (the spelling of docs/segmentation.md)."""
        s = f"t={self.threshold:g} {self.separate}"
        if self.separate == "watershed":
            s += f" h={self.watershed_h:g}"
        if self.grow_px:
            s += f" grow={self.grow_px}px"
        if self.min_contrast:
            s += f" contrast>={self.min_contrast:g}"
        if self.refine_px:
            s += f" refine={self.refine_px}px"
        return s


#: the keys of a spec, in order (CLI flags ``--threshold`` etc., proto fields of the same names)
POST_KEYS = tuple(f.name for f in fields(PostProcess))

#: the value type of each key (the CLI's argument types): ``str`` for ``separate``, else int or float
POST_TYPES = {f.name: str if "str" in str(f.type) else int if "int" in str(f.type) else float
              for f in fields(PostProcess)}

#: one line of help per key (the CLI's)
POST_HELP = {
    "threshold": "probability threshold of the foreground",
    "separate": "separation of touching particles: uecs, watershed or none",
    "watershed_h": "watershed: minimum height (px) of a distance maximum to start its own particle",
    "grow_px": "grow every separated particle this many px into the background (boundary offset)",
    "min_contrast": "drop particles whose contrast to a 3-px ring around them is below this (gray levels, 0 = off)",
    "refine_px": "re-decide every outline within +-this many px on the gray image (midway level; 0 = off)",
}

#: the classical (Gaussian + Otsu) segmenter: its sigmoid is centred on Otsu's threshold; cross-validation
#: (docs/segmentation.md, "classical Otsu (CV)") chose the distance watershed h 0.5 in every fold of both
#: modalities (it beats UECS: SE F1 0.484 vs 0.403), threshold 0.5 on SE and 0.6 on TSEM, no growth, no filter
CLASSICAL = {
    "se": PostProcess(0.5, "watershed", 0.5, 0, 0.0, 0),
    "him": PostProcess(0.5, "watershed", 0.5, 0, 0.0, 0),
    "tem": PostProcess(0.6, "watershed", 0.5, 0, 0.0, 0),
    "stem": PostProcess(0.6, "watershed", 0.5, 0, 0.0, 0),
}

#: a binary mask given as it is (``semforge measure --mask``, :func:`measure_mask` on its own): nothing is
#: grown or filtered; separation as before #16 (UECS)
MASK_DEFAULT = PostProcess(0.5, "uecs", 0.5, 0, 0.0, 0)


def segmenter_family(segmenter: str | None) -> str:
    """``classical`` for the Otsu segmenter, else ``network`` (the shipped UNet++, in process or on Triton)."""
    return "classical" if (segmenter or "").split("/")[0].split(":")[-1] == "classical" else "network"


def recommended(modality: str | Modality, segmenter: str | None = None) -> PostProcess:
    """The post-processing chosen by cross-validation for a segmenter (by name; ``None``: the shipped
    network) on images of ``modality`` (complete: every key has a value)."""
    m = Modality.parse(modality).value
    if segmenter_family(segmenter) == "classical":
        return CLASSICAL[m]
    base = PostProcess(**{k: RECOMMENDED[m][k] for k in POST_KEYS if k in RECOMMENDED[m]})
    return base.over(MASK_DEFAULT)
