"""Moved to the runtime library: :mod:`semforge.analysis._confidence` (the report uses it, #16). Kept as an alias."""

from ...analysis._confidence import LIMITS, ConfidenceLimits, image_confidence  # noqa: F401

__all__ = ["ConfidenceLimits", "LIMITS", "image_confidence"]
