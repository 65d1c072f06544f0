"""Synthetic SE micrographs with known particles, made by the project's own code.

Used as the sample that ``make run`` analyses and as known answers in tests.
These are simple 2-D drawings (ellipses with edge brightening, noise, a data
bar and a Zeiss-style calibration tag), not the Blender render pipeline.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage as ndi

__all__ = ["synthetic_sem", "write_zeiss_tiff"]


def synthetic_sem(*, seed: int = 0, size: tuple[int, int] = (768, 1024), n_particles: int = 60,
                  radius_px: tuple[float, float] = (14.0, 3.0), databar_rows: int = 56, touching: float = 0.3,
                  noise: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Draw an SE-like image of elliptical particles.

    Returns
    -------
    image : ndarray uint8, shape ``size``
        With a black data bar of ``databar_rows`` rows at the bottom.
    labels : ndarray uint16, shape ``size``
        Ground-truth instances (particles never overlap; a share ``touching``
        is placed in contact with a previous particle).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    spec = h - databar_rows
    labels = np.zeros((h, w), dtype=np.uint16)
    yy, xx = np.mgrid[0:spec, 0:w]
    placed: list[tuple[float, float, float]] = []
    k = 0
    tries = 0
    while k < n_particles and tries < n_particles * 50:
        tries += 1
        r = max(5.0, rng.normal(*radius_px))
        a, b = r * rng.uniform(1.0, 1.35), r
        th = rng.uniform(0, np.pi)
        if placed and rng.random() < touching:
            py, px, pr = placed[rng.integers(len(placed))]
            ang = rng.uniform(0, 2 * np.pi)
            d = pr + b + 1.0
            cy, cx = py + d * np.sin(ang), px + d * np.cos(ang)
        else:
            cy, cx = rng.uniform(a + 2, spec - a - 2), rng.uniform(a + 2, w - a - 2)
        if not (a + 2 < cy < spec - a - 2 and a + 2 < cx < w - a - 2):
            continue
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        inside = u * u + v * v <= 1.0
        grown = ndi.binary_dilation(inside)
        if (labels[:spec][grown] > 0).any():
            continue
        k += 1
        labels[:spec][inside] = k
        placed.append((cy, cx, (a + b) / 2))
    fg = labels[:spec] > 0
    dist = ndi.distance_transform_edt(fg)
    edge = np.exp(-dist / 2.5) * fg
    img = 0.25 + 0.03 * ndi.gaussian_filter(rng.standard_normal((spec, w)), 20) * 10
    img = img + fg * (0.35 + 0.15 * np.clip(dist / 12, 0, 1)) + 0.25 * edge
    img = ndi.gaussian_filter(img, 0.8) + rng.normal(0, noise, img.shape)
    out = np.zeros((h, w), dtype=np.uint8)
    out[:spec] = np.clip(img * 255, 0, 255).astype(np.uint8)
    # data bar: black band with white "text" blocks and a scale bar
    bar = out[spec:]
    if databar_rows < 48:
        return out, labels
    for i in range(6):
        x0 = 20 + i * 120
        bar[15:30, x0:x0 + 70] = 255 * (rng.random((15, 70)) > 0.6)
    bar[40:44, w - 220:w - 40] = 255
    return out, labels


def write_zeiss_tiff(path: str | os.PathLike, image: np.ndarray, pixel_size_nm: float) -> None:
    """Write a TIFF with a Zeiss ``CZ_SEM`` tag carrying the pixel size (read back by tifffile)."""
    import tifffile

    text = f"0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = {pixel_size_nm:.4f} nm\r\nDP_DETECTOR_CHANNEL\r\nSignal A = SE2\r\n"
    tifffile.imwrite(path, image, extratags=[(34118, "s", 0, text, True)])
