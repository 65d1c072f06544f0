"""Two-scale instance fusion: the cuts of a finer-scale segmentation inside the outlines of the native one.

Inference at a larger input scale (the image up-sampled, e.g. 1.5x) separates small touching grains
that the network merges at the native scale, but it also splits large particles into pieces. The
fusion keeps the native instances and their outlines, and takes over the finer segmentation's cuts
only inside a native instance that the finer one divides into several *small* pieces (each at most
``max_piece_px`` pixels at the native scale): small grains merged at x1 are separated, a large
particle cut into big halves at x1.5 stays whole.

A measurement step only (``tests/bench/scale_fusion.py``; figures in docs/segmentation.md, "Merge levers, round
3"): held out it lost (most x1.5 pieces match no human particle), so neither the analysis nor ``semforge adapt``
uses it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["fuse_instances", "fine_instances"]


def fuse_instances(coarse: np.ndarray, fine: np.ndarray, *, max_piece_px: float, min_inside: float = 0.5,
                   min_piece_px: int = 20) -> np.ndarray:
    """``coarse`` instances with each one split along ``fine`` where ``fine`` divides it into small pieces.

    Parameters
    ----------
    coarse, fine : ndarray of int, shape (H, W)
        Instance labels (0 = background) of the same image at the native scale; ``fine`` was made at
        a larger input scale and brought back to the native grid (nearest neighbour).
    max_piece_px : float
        A coarse instance is split only if every piece is at most this many pixels (inside it).
    min_inside : float
        A fine instance is a piece of a coarse one when at least this share of it lies inside it.
    min_piece_px : int
        Pieces smaller than this (inside the coarse instance) are ignored.

    Returns
    -------
    ndarray of int32
        The coarse foreground exactly (no pixel added or removed); instances split along the fine
        cuts, every coarse pixel given to the nearest piece.
    """
    coarse = np.asarray(coarse).astype(np.int64)
    fine = np.asarray(fine).astype(np.int64)
    if coarse.shape != fine.shape:
        raise ValueError(f"shapes differ: {coarse.shape} vs {fine.shape}")
    n_c, n_f = int(coarse.max(initial=0)), int(fine.max(initial=0))
    out = coarse.astype(np.int32)
    if n_c == 0 or n_f == 0:
        return out
    inter = np.bincount((coarse * (n_f + 1) + fine).ravel(), minlength=(n_c + 1) * (n_f + 1)).reshape(n_c + 1, n_f + 1)
    a_f = inter.sum(0)
    # the coarse instance holding most of each fine one, and how much of it
    host = np.argmax(inter[1:, 1:], axis=0) + 1  # per fine label 1..n_f
    share = inter[host, np.arange(1, n_f + 1)] / np.maximum(a_f[1:], 1)
    inside = inter[host, np.arange(1, n_f + 1)]
    piece = (share >= min_inside) & (inside >= min_piece_px)
    next_id = n_c + 1
    slices = ndi.find_objects(coarse.astype(np.int32))
    for c in range(1, n_c + 1):
        ids = np.nonzero(piece & (host == c))[0] + 1
        if len(ids) < 2 or inside[ids - 1].max() > max_piece_px:
            continue
        sl = slices[c - 1]
        if sl is None:
            continue
        own = coarse[sl] == c
        f = np.where(own & np.isin(fine[sl], ids), fine[sl], 0)
        # every pixel of the coarse instance to its nearest piece
        _, (iy, ix) = ndi.distance_transform_edt(f == 0, return_indices=True)
        near = f[iy, ix]
        new = np.zeros_like(near)
        for k, fid in enumerate(ids):
            new[near == fid] = c if k == 0 else next_id + k - 1
        next_id += len(ids) - 1
        block = out[sl]
        block[own] = new[own]
    return out


def fine_instances(probs_fine: np.ndarray, shape: tuple[int, int], post, *, pixel_size_nm: float | None,
                   scale: float) -> np.ndarray:
    """Instances of probabilities made at ``scale`` x the image size, separated at that size and brought
    back to ``shape`` by nearest neighbour (a piece that vanishes there is dropped)."""
    from skimage.transform import resize

    from .crossval import instances_from_probabilities

    lab = instances_from_probabilities(probs_fine, post,
                                       pixel_size_nm=pixel_size_nm / scale if pixel_size_nm else None)
    return resize(lab, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
