"""Micrograph-like images from exact scene geometry (numpy/scipy, no Blender needed).

* :func:`se_image` — secondary-electron-like direct render: yield from the local
  surface tilt (secant law), edge brightening where electrons escape near edges,
  a side detector that lights slopes facing it and shadows the substrate behind
  particles, a substrate with diamond-square dirt, randomized "light"
  (gains, exponents, detector azimuth), then degradation: down/up-sampling
  (aliasing), Gaussian blur, Gaussian noise.
* :func:`transmission_image` — bright-field STEM/TEM-like: Beer-Lambert
  attenuation of the projected thickness, a support film, blur and noise.
* :func:`noisy_height` — normalized height map plus Gaussian noise (sigma 0.01),
  the CycleGAN input.

Every random choice is drawn from the generator passed in, so a scene's images
are reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["diamond_square", "se_image", "transmission_image", "noisy_height", "to_uint8"]


def diamond_square(n: int, rng: np.random.Generator, roughness: float = 0.55) -> np.ndarray:
    """Fractal dirt texture by the diamond-square algorithm, (2**k+1)^2 >= n, cropped to n x n, in [0, 1]."""
    k = max(1, int(np.ceil(np.log2(max(n - 1, 1)))))
    size = 2 ** k + 1
    a = np.zeros((size, size))
    a[0, 0], a[0, -1], a[-1, 0], a[-1, -1] = rng.random(4)
    step, scale = size - 1, 1.0
    while step > 1:
        h = step // 2
        # diamond step: centres of squares
        c = (a[0:-1:step, 0:-1:step] + a[0:-1:step, step::step] + a[step::step, 0:-1:step] + a[step::step, step::step]) / 4
        a[h::step, h::step] = c + rng.uniform(-scale, scale, c.shape)
        # square step: edge midpoints, averaging the (up to 4) neighbours
        for r0, c0 in ((0, h), (h, 0)):
            rr, cc = np.meshgrid(np.arange(r0, size, step), np.arange(c0, size, step), indexing="ij")
            total = np.zeros(rr.shape)
            count = np.zeros(rr.shape)
            for dr, dc in ((-h, 0), (h, 0), (0, -h), (0, h)):
                r2, c2 = rr + dr, cc + dc
                ok = (r2 >= 0) & (r2 < size) & (c2 >= 0) & (c2 < size)
                total[ok] += a[r2[ok], c2[ok]]
                count[ok] += 1
            a[rr, cc] = total / count + rng.uniform(-scale, scale, rr.shape)
        step, scale = h, scale * roughness
    a = a[:n, :n]
    a -= a.min()
    return a / max(a.max(), 1e-12)


def _degrade(img: np.ndarray, rng: np.random.Generator, *, noise: tuple[float, float]) -> np.ndarray:
    n = img.shape[0]
    f = rng.uniform(1.0, 2.0)
    if f > 1.05:  # down- then up-sampling: aliasing and loss of fine detail
        small = ndi.zoom(img, 1 / f, order=1)
        img = ndi.zoom(small, (n / small.shape[0], img.shape[1] / small.shape[1]), order=1)[:n, : img.shape[1]]
    img = ndi.gaussian_filter(img, rng.uniform(0.4, 1.2))
    return img + rng.normal(0, rng.uniform(*noise), img.shape)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _outlines(labels: np.ndarray) -> np.ndarray:
    """Pixels on either side of a change of ``labels`` between 4-neighbours."""
    out = np.zeros(labels.shape, bool)
    out[:-1] |= labels[:-1] != labels[1:]
    out[1:] |= labels[:-1] != labels[1:]
    out[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    out[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    return out


def se_image(height_nm: np.ndarray, ids: np.ndarray, pixel_nm: float, rng: np.random.Generator, *,
             contact_rim: float = 1.0) -> np.ndarray:
    """SE-like image in [0, 1] (bright particles on a darker substrate).

    ``contact_rim``: weight of the edge brightening along outlines where two particles meet (an occluding or
    touching grain), against 1 where a particle meets the substrate. 1 (the default, as before) rims every
    visible outline; real SEM piles show little rim where a grain lies partly under another (#16).
    """
    if not 0 <= contact_rim <= 1:
        raise ValueError(f"contact_rim must be in [0, 1], got {contact_rim}")
    fg = ids > 0
    gy, gx = np.gradient(ndi.gaussian_filter(height_nm.astype(np.float64), 0.7), pixel_nm)
    slope2 = gx * gx + gy * gy
    sec = np.sqrt(1 + np.minimum(slope2, 60.0))  # 1 / cos(tilt), tilt capped near 82 degrees
    k = rng.uniform(0.6, 1.2)
    yield_tilt = sec ** k
    # edge brightening: escape from near the edges of each particle (distance inside its own outline)
    dist = ndi.distance_transform_edt(~_outlines(ids)) * pixel_nm
    escape_nm = rng.uniform(2.0, 8.0)
    edge = np.exp(-dist / escape_nm) * fg
    if contact_rim != 1.0:  # the rim near a particle-particle outline weighted down (near the substrate: 1)
        d_out = ndi.distance_transform_edt(~_outlines(fg)) * pixel_nm
        edge = contact_rim * edge + (1 - contact_rim) * np.exp(-d_out / escape_nm) * fg
    # side detector: slopes facing it are brighter, the substrate behind particles is shadowed
    az = rng.uniform(0, 2 * np.pi)
    dx, dy = np.cos(az), np.sin(az)
    facing = np.clip((gx * dx - gy * dy) / sec, -1, 1)  # rows grow downwards: flip y
    shift = (-dy * 6, -dx * 6)
    shadow = ndi.gaussian_filter(ndi.shift(fg.astype(float), shift, order=0), 4) * ~fg
    substrate = rng.uniform(0.12, 0.3)
    particle = rng.uniform(0.38, 0.55)
    dirt = diamond_square(max(height_nm.shape), rng)[: height_nm.shape[0], : height_nm.shape[1]]
    img = np.where(fg, particle * yield_tilt, substrate)
    img = img + rng.uniform(0.05, 0.35) * edge + rng.uniform(0.05, 0.15) * facing * fg
    img = img - rng.uniform(0.03, 0.09) * shadow
    img = img + rng.uniform(0.03, 0.1) * (dirt - 0.5)
    # film texture: thin wavy ridges (iso-lines of a smooth random field), bright like real contamination
    field = ndi.gaussian_filter(diamond_square(max(height_nm.shape), rng, 0.6), rng.uniform(1.0, 3.0))
    field = field[: height_nm.shape[0], : height_nm.shape[1]]
    ridges = sum(np.exp(-((field - lvl) / 0.006) ** 2) for lvl in rng.uniform(0.2, 0.8, 3))
    img = img + rng.uniform(0.0, 0.08) * np.clip(ridges, 0, 1) * ~fg
    img = img * rng.uniform(0.85, 1.15)
    img = _degrade(img, rng, noise=(0.01, 0.06))
    return np.clip(img, 0, 1)


def transmission_image(thickness_nm: np.ndarray, rng: np.random.Generator, *, mean_free_path_nm: float | None = None) -> np.ndarray:
    """Bright-field transmission image in [0, 1]: I = I0 exp(-t / lambda) on a support film."""
    t = thickness_nm.astype(np.float64)
    typical = float(np.median(t[t > 0])) if (t > 0).any() else 1.0
    lam = mean_free_path_nm or typical / -np.log(rng.uniform(0.3, 0.6))
    film = 1 + rng.uniform(0.02, 0.06) * (diamond_square(max(t.shape), rng)[: t.shape[0], : t.shape[1]] - 0.5)
    i0 = rng.uniform(0.8, 0.95)
    img = i0 * film * np.exp(-t / lam)
    return np.clip(_degrade(img, rng, noise=(0.015, 0.05)), 0, 1)


def noisy_height(height01: np.ndarray, rng: np.random.Generator, sigma: float = 0.01) -> np.ndarray:
    return (height01 + rng.normal(0, sigma, height01.shape)).astype(np.float32)
