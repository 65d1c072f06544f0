"""Inference back ends behind one interface.

``Segmenter.predict(gray, modality)`` returns a foreground probability map.
``classical`` (Gaussian + Otsu), ``unetpp`` (the shipped UNet++ for the image's
modality, ONNX Runtime in process) and ``unetpp-triton`` (the same model served
by Triton, ``TRITON_URL``).
Implementations are created by name through :func:`create_segmenter`, which
lists the valid names when a lookup fails. The embedded default runs in
process; the Triton back end (cluster) plugs in under the same interface.
"""

from ._base import DEFAULT_SEGMENTER, THRESHOLD, Segmenter, combined, foreground, create_segmenter, register_segmenter, segmenter_names
from ._classical import ThresholdSegmenter
from ._unet import MODELS_REPO, SHIPPED, OnnxSegmenter, ShippedSegmenter, TritonSegmenter, model_dir

register_segmenter("unetpp", lambda **kw: ShippedSegmenter("onnx", **kw))
register_segmenter("unetpp-triton", lambda **kw: ShippedSegmenter("triton", **kw))

__all__ = ["DEFAULT_SEGMENTER", "THRESHOLD", "combined", "foreground", "MODELS_REPO", "SHIPPED", "OnnxSegmenter", "Segmenter", "ShippedSegmenter", "ThresholdSegmenter",
           "TritonSegmenter", "create_segmenter", "model_dir", "register_segmenter", "segmenter_names"]
