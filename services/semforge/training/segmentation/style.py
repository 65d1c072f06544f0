"""Appearance matching of rendered crops to an instrument's unlabeled images (#16, adaptation route).

Two restylings of a rendered training crop toward a crop of a real image of the same size, both
label-preserving (the geometry of the render, and so its exact instance labels, is kept):

* :func:`match_histogram` — the render's gray values take the real values at the same ranks
  (quantile mapping): the real image's gray-level distribution, the render's structure.
  :func:`match_histogram_by_class` does it for particles and background apart (the render's exact
  labels; the real image's particles by the base model), so that a render denser or sparser than the
  real field keeps its particles particle-bright and its background background-dark.
* :func:`fourier_style` — Fourier domain adaptation (Yang and Soatto, CVPR 2020): the low-frequency
  amplitude spectrum (a centred square of half-width ``beta`` x the crop size) is taken from the real
  crop, the phase and the high frequencies from the render: the real image's illumination, charging
  gradients and large-scale texture, the render's edges. ``keep_mean`` keeps the render's zero
  frequency (its mean gray value carries its particle density, not the instrument's look).

Used by ``semforge adapt --render-style``; numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STYLES", "match_histogram", "match_histogram_by_class", "class_quantiles", "fourier_style", "restyle"]

STYLES = ("none", "histogram", "fourier")


def match_histogram(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``src`` with the gray-value distribution of ``ref`` (any sizes): each pixel takes the ``ref`` value of its rank."""
    src = np.asarray(src, np.float32)
    ref_sorted = np.sort(np.asarray(ref, np.float32).ravel())
    order = np.argsort(src.ravel(), kind="stable")
    out = np.empty(src.size, np.float32)
    out[order] = ref_sorted[np.linspace(0, ref_sorted.size - 1, src.size).round().astype(np.int64)]
    return out.reshape(src.shape)


def class_quantiles(image: np.ndarray, fg: np.ndarray, n: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``n`` quantiles of the background and of the particle gray values of ``image`` (``fg``: particle pixels); a
    class without pixels gets the other's."""
    image = np.asarray(image, np.float32)
    fg = np.asarray(fg, bool)
    qs = np.linspace(0, 1, n)
    bg_v, fg_v = image[~fg], image[fg]
    if not bg_v.size and not fg_v.size:
        raise ValueError("class_quantiles needs a non-empty image")
    bg_v = bg_v if bg_v.size else fg_v
    fg_v = fg_v if fg_v.size else bg_v
    return np.quantile(bg_v, qs).astype(np.float32), np.quantile(fg_v, qs).astype(np.float32)


def match_histogram_by_class(src: np.ndarray, src_fg: np.ndarray, ref_bg: np.ndarray,
                             ref_fg: np.ndarray) -> np.ndarray:
    """:func:`match_histogram` for the background (``~src_fg``) toward ``ref_bg`` and for the particles toward
    ``ref_fg`` (gray values or their quantiles, :func:`class_quantiles`)."""
    src = np.asarray(src, np.float32)
    m = np.asarray(src_fg, bool)
    if m.shape != src.shape:
        raise ValueError(f"particle mask {m.shape} does not match the image {src.shape}")
    out = np.empty_like(src)
    for sel, ref in ((~m, ref_bg), (m, ref_fg)):
        if sel.any():
            out[sel] = match_histogram(src[sel], ref)
    return out


def fourier_style(src: np.ndarray, ref: np.ndarray, beta: float = 0.05, keep_mean: bool = False) -> np.ndarray:
    """``src`` with the low-frequency amplitude of ``ref`` (same shape), clipped to [0, 1].

    The replaced band is the centred (2b + 1) x (2b + 1) square of the shifted spectrum, b = max(1, floor(beta x
    min(h, w))); the zero frequency is in it, so the mean gray value becomes that of ``ref`` -- unless ``keep_mean``.
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
    dc = amp[cy, cx]
    amp[sl] = np.abs(fr)[sl]
    if keep_mean:
        amp[cy, cx] = dc
    out = np.real(np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase))))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def restyle(style: str, src: np.ndarray, ref: np.ndarray, beta: float = 0.05) -> np.ndarray:
    """Dispatch on ``style`` (one of :data:`STYLES`; whole-crop histogram matching, Fourier with the reference's mean)."""
    if style == "none":
        return np.asarray(src, np.float32)
    if style == "histogram":
        return match_histogram(src, ref)
    if style == "fourier":
        return fourier_style(src, ref, beta)
    raise ValueError(f"unknown render style {style!r}; use {', '.join(STYLES)}")
