"""Tiled inference with blended seams, shared by every network back end.

A *runner* maps a float32 batch ``(N, 1, h, w)`` (h, w multiples of 32) to
probabilities ``(N, C, h, w)``: ONNX Runtime in process, Triton over gRPC, or
PyTorch during training. Images up to ``max_side`` on both sides run in one
pass (padded by reflection to a multiple of 32); larger ones in overlapping
``tile`` x ``tile`` windows whose outputs are blended with weights that fall
linearly to the tile edges, so there are no seams and memory stays bounded by
the tile size plus two float32 planes of the image.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["predict_tiled", "combine", "Runner"]

Runner = Callable[[np.ndarray], np.ndarray]


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - a.shape[0], w - a.shape[1]
    if ph == 0 and pw == 0:
        return a
    mode = "reflect" if ph < a.shape[0] and pw < a.shape[1] else "symmetric"
    return np.pad(a, ((0, ph), (0, pw)), mode=mode)


def _ramp(n: int, overlap: int) -> np.ndarray:
    r = np.ones(n, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        r[:overlap] = edge
        r[n - overlap:] = edge[::-1]
    return r


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    s = list(range(0, size - tile, step))
    return s + [size - tile]


def predict_tiled(run: Runner, gray: np.ndarray, *, tile: int = 1024, overlap: int = 128, max_side: int = 1536,
                  batch: int = 2, channels: int | None = None) -> np.ndarray:
    """Probabilities ``(C, H, W)`` of ``gray`` (H, W) in [0, 1]."""
    g = np.asarray(gray, np.float32)
    if g.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {g.shape}")
    h, w = g.shape
    if h <= max_side and w <= max_side:
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        out = run(_pad_to(g, ph, pw)[None, None])
        return np.ascontiguousarray(out[0, :, :h, :w])
    if tile % 32 or overlap >= tile // 2:
        raise ValueError("tile must be a multiple of 32 and overlap < tile / 2")
    H, W = max(h, tile), max(w, tile)
    g = _pad_to(g, H, W)
    ys, xs = _starts(H, tile, tile - overlap), _starts(W, tile, tile - overlap)
    win = np.outer(_ramp(tile, overlap), _ramp(tile, overlap))
    acc = None
    wsum = np.zeros((H, W), np.float32)
    coords = [(y, x) for y in ys for x in xs]
    for i in range(0, len(coords), batch):
        chunk = coords[i:i + batch]
        tiles = np.stack([g[y:y + tile, x:x + tile] for y, x in chunk])[:, None]
        probs = run(tiles)
        if acc is None:
            acc = np.zeros((probs.shape[1], H, W), np.float32)
        for (y, x), p in zip(chunk, probs):
            acc[:, y:y + tile, x:x + tile] += p * win
            wsum[y:y + tile, x:x + tile] += win
    acc /= wsum
    return acc[:, :h, :w]


def combine(probs: np.ndarray) -> np.ndarray:
    """Particle probability with the predicted borders cut out: p_particle * (1 - p_border)."""
    if probs.shape[0] == 1:
        return probs[0]
    return probs[0] * (1 - probs[1])
