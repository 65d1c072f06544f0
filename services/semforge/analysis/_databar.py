"""Detection of the instrument's data bar at the bottom of a micrograph."""

from __future__ import annotations

import numpy as np

__all__ = ["detect_databar"]


def _row_mode_fraction(rows: np.ndarray) -> np.ndarray:
    """Fraction of each row's pixels equal to that row's most common value."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for i, row in enumerate(rows):
        _, counts = np.unique(row, return_counts=True)
        out[i] = counts.max() / row.size
    return out


def _row_extreme_fraction(gray: np.ndarray, tolerance: int) -> np.ndarray:
    """Fraction of each row's pixels within ``tolerance`` 8-bit levels of black, or of white (the larger)."""
    q = np.rint(gray * 255.0)
    return np.maximum((q <= tolerance).mean(axis=1), (q >= 255 - tolerance).mean(axis=1))


def detect_databar(pixels: np.ndarray, *, max_fraction: float = 0.3, flat_fraction: float = 0.6,
                   min_rows: int = 8, tolerance: int = 6) -> int:
    """Return the first row of the instrument data bar, or the image height if none.

    SEM data bars are bands at the bottom of the image made of one flat value
    (black or white) with text and a scale bar on it. A row is "flat" when at
    least ``flat_fraction`` of its pixels share one value; the bar is the
    longest run of flat rows, at least ``min_rows`` tall, in the bottom
    ``max_fraction`` of the image. Everything from its first row down is
    excluded from analysis (the few rows below it, if any, too).

    A row is also flat when ``flat_fraction`` of its pixels lie within
    ``tolerance`` 8-bit levels of black (or of white) on the image's own
    gray scale (:func:`to_gray_float`, any bit depth): a JPEG copy's black
    band carries compression noise of a few levels around its text, and
    exact equality alone missed the text rows (the bar was found 20 rows too
    low, leaving the text as false particles). Only near-black/white rows
    get this tolerance: JPEG also flattens a smooth specimen background.

    Parameters
    ----------
    pixels : ndarray, shape (H, W)
        Raw gray image (any dtype and bit depth).
    max_fraction : float
        The bar is searched in the bottom ``max_fraction`` of the rows only.
    flat_fraction : float
        Minimum share of the row's most common value for a flat row.
    min_rows : int
        Minimum height of a band to count as a data bar.
    tolerance : int
        Levels (of 255) from black or white that still count as the bar.

    Returns
    -------
    int
        Number of specimen rows (``pixels[:n]`` is the specimen).

    Examples
    --------
    >>> img = np.random.default_rng(0).integers(0, 255, (100, 64), dtype=np.uint8)
    >>> img[80:] = 0
    >>> detect_databar(img)
    80
    """
    px = np.asarray(pixels)
    if px.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {px.shape}")
    from ._io import to_gray_float

    h = px.shape[0]
    start = int(h * (1.0 - max_fraction))
    flat = ((_row_mode_fraction(px[start:]) >= flat_fraction)
            | (_row_extreme_fraction(to_gray_float(px)[start:], tolerance) >= flat_fraction))
    best_len, best_start, run_start = 0, None, None
    for i, f in enumerate(np.append(flat, False)):
        if f and run_start is None:
            run_start = i
        elif not f and run_start is not None:
            if i - run_start > best_len:
                best_len, best_start = i - run_start, run_start
            run_start = None
    if best_start is None or best_len < min_rows:
        return h
    return start + best_start
