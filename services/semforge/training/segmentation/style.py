"""Appearance matching of rendered crops to an instrument's unlabeled images (#16, adaptation route).

Two restylings of a rendered training crop toward a crop of a real image of the same size, both
label-preserving (the geometry of the render, and so its exact instance labels, is kept):

* :func:`match_histogram` — the render's gray values take the real crop's values at the same ranks
  (quantile mapping): the real image's gray-level distribution, the render's structure.
* :func:`fourier_style` — Fourier domain adaptation (Yang and Soatto, CVPR 2020): the low-frequency
  amplitude spectrum (a centred square of half-width ``beta`` x the crop size) is taken from the real
  crop, the phase and the high frequencies from the render: the real image's illumination, charging
  gradients and large-scale texture, the render's edges.

Used by ``semforge adapt --render-style``; numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STYLES", "match_histogram", "fourier_style", "restyle"]

STYLES = ("none", "histogram", "fourier")


def match_histogram(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``src`` with the gray-value distribution of ``ref`` (any sizes): each pixel takes the ``ref`` value of its rank."""
    src = np.asarray(src, np.float32)
    ref_sorted = np.sort(np.asarray(ref, np.float32).ravel())
    order = np.argsort(src.ravel(), kind="stable")
    out = np.empty(src.size, np.float32)
    out[order] = ref_sorted[np.linspace(0, ref_sorted.size - 1, src.size).round().astype(np.int64)]
    return out.reshape(src.shape)


def fourier_style(src: np.ndarray, ref: np.ndarray, beta: float = 0.05) -> np.ndarray:
    """``src`` with the low-frequency amplitude of ``ref`` (same shape), clipped to [0, 1].

    The replaced band is the centred (2b + 1) x (2b + 1) square of the shifted spectrum, b = max(1, floor(beta x
    min(h, w))); the zero frequency is in it, so the mean gray value becomes that of ``ref``.
    """
    src = np.asarray(src, np.float64)
    ref = np.asarray(ref, np.float64)
    if src.shape != ref.shape or src.ndim != 2:
        raise ValueError(f"fourier_style needs two 2-D crops of one shape, got {src.shape} and {ref.shape}")
    if not 0 < beta < 0.5:
        raise ValueError(f"beta must be in (0, 0.5), got {beta}")
    fs = np.fft.fftshift(np.fft.fft2(src))
    fr = np.fft.fftshift(np.fft.fft2(ref))
    amp, phase = np.abs(fs), np.angle(fs)
    h, w = src.shape
    b = max(1, int(np.floor(min(h, w) * beta)))
    cy, cx = h // 2, w // 2
    sl = (slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1))
    amp[sl] = np.abs(fr)[sl]
    out = np.real(np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase))))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def restyle(style: str, src: np.ndarray, ref: np.ndarray, beta: float = 0.05) -> np.ndarray:
    """Dispatch on ``style`` (one of :data:`STYLES`)."""
    if style == "none":
        return np.asarray(src, np.float32)
    if style == "histogram":
        return match_histogram(src, ref)
    if style == "fourier":
        return fourier_style(src, ref, beta)
    raise ValueError(f"unknown render style {style!r}; use {', '.join(STYLES)}")
