"""One analysis, whatever runs the stages: ``analyze_image`` per image, ``analyze`` for a sample."""

from __future__ import annotations

from typing import Any, Callable, Sequence

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
                  around: Around = _direct) -> ImageOutcome:
    """prepare -> segment -> measure -> classify for one image."""
    prep = around("load", lambda: stages.prepare(source, name, options))
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
            around: Callable[[int, str], Around] | None = None) -> dict[str, Any]:
    """Analyse the images of one sample and write its report; returns the report stage's outputs.

    ``sources``: (source, name) pairs. ``around(index, name)`` gives the per-image stage wrapper.
    """
    unique_names([n for _, n in sources])
    outcomes = []
    for i, (src, name) in enumerate(sources):
        outcomes.append(analyze_image(stages, src, name, options, around=around(i, name) if around else _direct))
    wrap = around(len(sources) - 1, "") if around else _direct
    return wrap("report", lambda: stages.report(outcomes, options, title=title))
