from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..modality import Modality
from ._base import Segmenter, register_segmenter

__all__ = ["ThresholdSegmenter"]


class ThresholdSegmenter(Segmenter):
    """Classical baseline: Gaussian smoothing + Otsu threshold, soft-edged.

    Bright particles for SE/HIM images, dark particles for STEM/TEM bright
    field. This is the embedded default until a trained UNet++ is shipped
    in ``models_repo/``; it cannot separate touching particles by itself
    (separation does that) and fails on uneven backgrounds.
    """

    name = "classical"

    def __init__(self, *, sigma: float = 1.5, softness: float = 0.03, background_sigma: float = 0.0):
        if sigma < 0 or softness <= 0:
            raise ValueError("sigma must be >= 0 and softness > 0")
        self.sigma = float(sigma)
        self.softness = float(softness)
        self.background_sigma = float(background_sigma)

    def predict(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        from skimage.filters import threshold_otsu

        g = np.asarray(gray, dtype=np.float32)
        if g.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {g.shape}")
        s = ndi.gaussian_filter(g, self.sigma) if self.sigma else g
        if self.background_sigma:
            s = s - ndi.gaussian_filter(s, self.background_sigma)
        if Modality.parse(modality).dark_particles:
            s = -s
        if float(s.max()) <= float(s.min()):
            return np.zeros_like(g)
        t = threshold_otsu(s)
        z = np.clip((s - t) / (self.softness * float(s.max() - s.min())), -30, 30)
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


register_segmenter("classical", ThresholdSegmenter)
