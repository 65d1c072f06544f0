"""One analysis, whatever runs the stages: ``analyze_image`` per image, ``analyze`` for a sample."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..analysis import Warning_, check_calibration_consistency, confidence_warnings, plausibility_warnings
from ..errors import UserInputError
from .stages import Stages
from .types import AnalysisOptions, ImageOutcome

__all__ = ["STAGES", "analyze_image", "analyze", "Around", "unique_names"]

#: per-image stages in order (``report`` runs once per sample)
STAGES = ("load", "segment", "measure", "classify")

#: ``around(stage, call)`` runs ``call()`` for a stage: progress, cancel and retry live here, not in the stages
Around = Callable[[str, Callable[[], Any]], Any]


def _direct(stage: str, call: Callable[[], Any]) -> Any:
    return call()


def analyze_image(stages: Stages, source: Any, name: str, options: AnalysisOptions, *,
                  around: Around = _direct, prepared: Any = None) -> ImageOutcome:
    """prepare -> segment -> measure -> classify for one image (``prepared``: its prepare stage already run)."""
    prep = prepared if prepared is not None else around("load", lambda: stages.prepare(source, name, options))
    mask = around("segment", lambda: stages.segment(prep, options))
    measured = around("measure", lambda: stages.measure(prep, mask, options))
    measured = around("classify", lambda: stages.classify(prep, measured, options))
    return ImageOutcome(prep, measured)


def unique_names(names: Sequence[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise UserInputError(f"two images share the name {n!r}; rename one", field="names")
        seen.add(n)


def analyze(stages: Stages, sources: Sequence[tuple[Any, str]], options: AnalysisOptions, *, title: str,
            around: Callable[[int, str], Around] | None = None,
            warn: Callable[[Warning_], None] | None = None) -> dict[str, Any]:
    """Analyse the images of one sample and write its report; returns the report stage's outputs.

    ``sources``: (source, name) pairs. ``around(index, name)`` gives the per-image stage wrapper.
    Every image is prepared (decoded, calibrated) first, so a batch mixing calibrated and uncalibrated
    images is refused before any segmentation. ``warn`` receives the plausibility warnings of each image
    (uncalibrated, no particles, implausible sizes; ``semforge.analysis.plausibility_warnings``).
    """
    unique_names([n for _, n in sources])
    preps = [(around(i, name) if around else _direct)("load", lambda src=src, name=name: stages.prepare(src, name, options))
             for i, (src, name) in enumerate(sources)]
    check_calibration_consistency((p.name, p.calibration) for p in preps)
    outcomes = []
    seen: set[Warning_] = set()

    def warn_once(w: Warning_) -> None:
        if warn is not None and w not in seen:
            seen.add(w)
            warn(w)

    for i, ((src, name), prep) in enumerate(zip(sources, preps)):
        outcome = analyze_image(stages, src, name, options, around=around(i, name) if around else _direct,
                                prepared=prep)
        outcomes.append(outcome)
        table = outcome.measured.table
        if warn is not None and hasattr(table, "particles"):
            for w in plausibility_warnings(image=name, calibration=prep.calibration, particles=table.particles,
                                           image_shape=(prep.height, prep.width),
                                           min_diameter_nm=options.measure.min_diameter_nm) + \
                    confidence_warnings(name, getattr(table, "confidence", None)):
                warn_once(w)
    wrap = around(len(sources) - 1, "") if around else _direct
    # the report stage hands on every warning of the sample (also those of a remote measure service)
    return wrap("report", lambda: stages.report(outcomes, options, title=title, warn=warn_once))
