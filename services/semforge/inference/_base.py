from __future__ import annotations

import abc
from typing import Callable

import numpy as np

_REGISTRY: dict[str, Callable[..., "Segmenter"]] = {}

# The segmenter the analysis uses unless told otherwise (chosen by the figures in docs/segmentation.md).
DEFAULT_SEGMENTER = "unetpp"

#: foreground where the probability is at least this (the one place the cut is chosen)
THRESHOLD = 0.5


def foreground(prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Boolean foreground of a probability map (a boolean mask passes through unchanged)."""
    return np.asarray(prob) >= threshold


class Segmenter(abc.ABC):
    """Foreground probability from a gray image."""

    name: str = "segmenter"

    @abc.abstractmethod
    def predict(self, gray: np.ndarray, *, modality: str = "se") -> np.ndarray:
        """Return float32 probabilities in [0, 1], same shape as ``gray`` (float32, [0, 1])."""

    def mask(self, gray: np.ndarray, *, modality: str = "se", threshold: float = THRESHOLD) -> np.ndarray:
        """Boolean foreground (what the analysis measures): ``predict(...) >= threshold``."""
        return foreground(self.predict(gray, modality=modality), threshold)


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
