"""The one analysis pipeline: image -> calibration / data bar -> segment -> separate + measure -> classify -> report.

:class:`Stages` is the interface; :class:`LocalStages` runs it in this process
(``semforge analyze`` without a server, ``semforge evaluate``, the translation
content check), ``semforge.rpc.RemoteStages`` through the services with images
passed by object reference (the gateway's job runner). :func:`analyze` and
:func:`analyze_image` are the only places the order of the stages is written.
"""

import sys

from .run import STAGES, analyze, analyze_image, unique_names
from .stages import LocalStages, Stages, effective_postprocess, prepare_facts, segmenter_name
from .types import (AnalysisOptions, DataBar, ImageFacts, ImageOutcome, Measured, Prepared, Segmented, describe_image,
                    image_stem)

__all__ = ["STAGES", "AnalysisOptions", "DataBar", "ImageFacts", "ImageOutcome", "LocalStages", "Measured",
           "Prepared", "Segmented", "Stages", "analyze", "analyze_image", "analyze_paths", "describe_image",
           "effective_postprocess", "image_stem", "prepare_facts", "segmenter_name", "unique_names"]


def analyze_paths(paths, outdir, *, options: AnalysisOptions = AnalysisOptions(), progress=None,
                  title: str = "semforge report", segmenter=None) -> dict[str, str]:
    """In-process analysis of image files of one sample into ``outdir`` (the CLI's path without a server).

    ``progress(index, name, stage, fraction)`` is called before each stage.
    """
    stages = LocalStages(segmenter or options.segmenter, outdir)
    n = len(paths)
    frac = {"load": 0.0, "segment": 0.25, "measure": 0.6, "classify": 0.75, "report": 0.8}

    def around(i, name):
        def wrap(stage, call):
            if progress:
                progress(i, name, stage, (i + frac[stage]) / n if stage != "report" else 0.95)
            return call()
        return wrap

    written = analyze(stages, [(p, image_stem(p)) for p in paths], options, title=title, around=around,
                      warn=lambda w: print(w, file=sys.stderr))  # never silent (#13)
    if progress:
        progress(n - 1, "", "done", 1.0)
    return written
