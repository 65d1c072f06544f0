"""Inference back ends behind one interface.

``Segmenter.predict(gray, modality)`` returns a foreground probability map.
Implementations are created by name through :func:`create_segmenter`, which
lists the valid names when a lookup fails. The embedded default runs in
process; the Triton back end (cluster) plugs in under the same interface.
"""

from ._base import Segmenter, create_segmenter, register_segmenter, segmenter_names
from ._classical import ThresholdSegmenter

__all__ = ["Segmenter", "ThresholdSegmenter", "create_segmenter", "register_segmenter", "segmenter_names"]
