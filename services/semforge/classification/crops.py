"""Particle crops as the classifier sees them (Bals & Epple 2023, "classification" section).

A crop is the particle's bounding box widened by a context margin on every
side, made square around the box centre (the aspect ratio is kept), resampled
to ``size`` x ``size`` pixels and zero-padded where the window leaves the
image.  Two channels: the gray image (normalised per crop) and the
particle's own mask (1 inside, 0.5 on other particles, 0 on background), so
the network knows which of several touching particles is meant.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CROP_SIZE", "CROP_MARGIN", "crop_boxes", "extract_crops"]

CROP_SIZE = 48
CROP_MARGIN = 0.25


def crop_boxes(labels: np.ndarray, ids=None) -> dict[int, tuple[int, int, int, int]]:
    """Bounding boxes ``(y0, x0, y1, x1)`` (end exclusive) of the labels ``ids`` (default: all > 0)."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {lab.shape}")
    objs = ndi.find_objects(lab.astype(np.int64, copy=False))
    out = {}
    for i, sl in enumerate(objs, start=1):
        if sl is not None and (ids is None or i in ids):
            out[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    return out


def extract_crops(gray: np.ndarray, labels: np.ndarray, ids, *, size: int = CROP_SIZE,
                  margin: float = CROP_MARGIN) -> np.ndarray:
    """Crops ``(N, 2, size, size)`` float32 for the instances ``ids`` of ``labels``.

    Parameters
    ----------
    gray : ndarray, shape (H, W)
        Gray image in [0, 1] (particles bright for SE, dark for transmission: as acquired).
    labels : ndarray, shape (H, W)
        Instance labels, 0 = background.
    ids : sequence of int
        Instances to crop, in this order; every one must occur in ``labels``.
    size : int
        Side of the crop in pixels.
    margin : float
        Context added on each side, as a fraction of the box's longer side (at least 2 px).

    Returns
    -------
    ndarray, shape (N, 2, size, size)
        Channel 0: gray, (x - mean) / std over the window (0 outside the image);
        channel 1: 1 on the particle, 0.5 on other particles, 0 elsewhere.

    Raises
    ------
    ValueError
        Shapes differ, or an id has no pixels.
    """
    g = np.asarray(gray, np.float32)
    lab = np.asarray(labels)
    if g.ndim != 2 or g.shape != lab.shape:
        raise ValueError(f"gray {g.shape} and labels {lab.shape} must be 2-D of the same shape")
    if size < 8:
        raise ValueError(f"crop size must be >= 8, got {size}")
    ids = [int(i) for i in ids]
    boxes = crop_boxes(lab, set(ids))
    missing = [i for i in ids if i not in boxes]
    if missing:
        raise ValueError(f"labels {missing[:5]} have no pixels")
    out = np.zeros((len(ids), 2, size, size), np.float32)
    h, w = g.shape
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    for n, i in enumerate(ids):
        y0, x0, y1, x1 = boxes[i]
        side = max(y1 - y0, x1 - x0)
        side = side + 2 * max(2.0, margin * side)
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        ys = cy - side / 2 + t * side - 0.5
        xs = cx - side / 2 + t * side - 0.5
        # integer window that holds every sample, cut to the image
        wy0, wy1 = max(int(np.floor(ys[0])), 0), min(int(np.ceil(ys[-1])) + 2, h)
        wx0, wx1 = max(int(np.floor(xs[0])), 0), min(int(np.ceil(xs[-1])) + 2, w)
        yy, xx = np.meshgrid(ys - wy0, xs - wx0, indexing="ij")
        inside = ((yy >= -0.5) & (yy <= wy1 - wy0 - 0.5) & (xx >= -0.5) & (xx <= wx1 - wx0 - 0.5))
        win = g[wy0:wy1, wx0:wx1]
        gc = ndi.map_coordinates(win, [yy, xx], order=1, mode="nearest")
        lw = lab[wy0:wy1, wx0:wx1]
        m = np.where(lw == i, 1.0, np.where(lw > 0, 0.5, 0.0)).astype(np.float32)
        mc = ndi.map_coordinates(m, [yy, xx], order=0, mode="nearest")
        vals = gc[inside]
        mu, sd = (float(vals.mean()), float(vals.std())) if vals.size else (0.0, 1.0)
        out[n, 0] = np.where(inside, (gc - mu) / max(sd, 1e-3), 0.0)
        out[n, 1] = np.where(inside, mc, 0.0)
    return out
