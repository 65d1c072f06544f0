from __future__ import annotations

import abc
from typing import Callable

import numpy as np

_REGISTRY: dict[str, Callable[..., "Segmenter"]] = {}

# The segmenter the analysis uses unless told otherwise (chosen by the figures in docs/segmentation.md).
DEFAULT_SEGMENTER = "unetpp"

#: the cut of :meth:`Segmenter.mask` called on its own; the analysis cuts at the post-processing's
#: ``threshold`` (per segmenter and modality: :func:`semforge.analysis.recommended`, #16)
THRESHOLD = 0.5


def foreground(prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Boolean foreground of a probability map (a boolean mask passes through unchanged)."""
    return np.asarray(prob) >= threshold


class Segmenter(abc.ABC):
    """Foreground probability from a gray image."""

    name: str = "segmenter"
    #: its probabilities are what :func:`semforge.analysis.image_confidence` was calibrated on (the shipped
    #: networks); the analysis reports the per-image confidence only for such segmenters
    reports_confidence: bool = False

    @abc.abstractmethod
    def predict(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        """Return float32 probabilities in [0, 1], same shape as ``gray`` (float32, [0, 1])."""

    def mask(self, gray: np.ndarray, *, modality: str = "se", threshold: float = THRESHOLD) -> np.ndarray:
        """Boolean foreground (what the analysis measures): ``predict(...) >= threshold``."""
        return foreground(self.predict(gray, modality=modality), threshold)

    def channels(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        """The raw outputs: ``(C, H, W)`` (particle [+ border]) for the networks, else ``predict``'s ``(H, W)``;
        :func:`combined` turns them into what :meth:`predict` returns."""
        return self.predict(gray, modality=modality)


def combined(channels: np.ndarray) -> np.ndarray:
    """The foreground probability of :meth:`Segmenter.channels` (``p_particle * (1 - p_border)``), float32."""
    from .tiling import combine

    c = np.asarray(channels)
    return (combine(c) if c.ndim == 3 else c).astype(np.float32)


def register_segmenter(name: str, factory: Callable[..., Segmenter]) -> None:
    _REGISTRY[name] = factory


def segmenter_names() -> list[str]:
    return sorted(_REGISTRY)


def create_segmenter(name: str = "classical", **kwargs) -> Segmenter:
    """Build a segmenter by name.

    Raises
    ------
    ValueError
        Unknown name; the message lists the valid ones.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        from ..errors import InvalidOption

        raise InvalidOption(f"unknown segmenter {name!r}; valid: {', '.join(segmenter_names())}",
                            field="segmenter") from None
    return factory(**kwargs)
