"""Boundary refinement of separated particles on the gray image.

A segmentation network draws outlines that are smooth and slightly rounder than the particles; on
images with sharp particle edges (transmission bright field: dark particles on a bright film) a
gray-level threshold follows the edge better. :func:`refine_boundaries` keeps the network's
instances (identity, count, the separation lines between them) and re-decides only the pixels in a
band of ``band_px`` pixels either side of each outline with a local gray threshold:

* per particle, ``inner`` is the median gray of its pixels deeper than the band (its core; the
  deepest pixels when the particle is thinner than the band) and ``ring`` the median gray of the
  free background between ``band_px`` and ``band_px + ring_px`` outside it;
* the threshold is ``ring + level * (inner - ring)`` (``level`` 0.5: midway, the edge of a
  symmetrically blurred step) or, with ``method="otsu"``, Otsu's threshold of the gray values of
  the particle's inner band, outer band and ring;
* a band pixel is particle when the (optionally Gaussian-smoothed) gray is on the particle's side
  of the threshold of the instance nearest to it; particle band pixels that belonged to an
  instance keep it; the others join the instance they touch first (a flood from the kept pixels,
  i.e. the geodesically nearest instance) -- band pixels not connected to any instance stay
  background, so no object is created and no two instances merge;
* pixels outside the band never change; every instance keeps at least its core, so none vanishes;
  a piece of an instance cut off from its core is dropped.

Polarity: ``dark=True`` for particles darker than their surroundings (TEM/STEM bright field),
``False`` for bright particles (SE).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["REFINE_METHODS", "refine_boundaries", "particle_thresholds"]

REFINE_METHODS = ("mid", "otsu")

_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = ndi.generate_binary_structure(2, 2)


def _check(labels: np.ndarray, gray: np.ndarray, band_px: int, method: str, level: float) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray(labels)
    g = np.asarray(gray)
    if lab.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {lab.shape}")
    if lab.shape != g.shape:
        raise ValueError(f"labels {lab.shape} and image {g.shape} differ in size")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be >= 0 (0 = background)")
    if not np.issubdtype(g.dtype, np.number) or g.dtype == bool:
        raise ValueError(f"gray must be numeric, got dtype {g.dtype}")
    if int(band_px) != band_px or band_px < 0:
        raise ValueError(f"band_px must be a non-negative integer, got {band_px!r}")
    if method not in REFINE_METHODS:
        raise ValueError(f"unknown refinement method {method!r}; valid: {', '.join(REFINE_METHODS)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return lab.astype(np.int64), g.astype(np.float64)


def _cores(lab: np.ndarray, band_px: int) -> np.ndarray:
    """Per-instance core: pixels farther than ``band_px`` from the instance's edge (any other label or
    background); an instance thinner than that keeps its deepest pixels."""
    edge = np.zeros(lab.shape, bool)
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    inside = (lab > 0) & ~edge
    # distance (px) of each particle pixel to the nearest edge pixel of its own outline (+1: edge pixels are 1)
    depth = np.where(lab > 0, ndi.distance_transform_edt(inside) + 1.0, 0.0)
    core = depth > band_px
    n = int(lab.max(initial=0))
    if n:
        has_core = np.zeros(n + 1, bool)
        has_core[np.unique(lab[core])] = True
        thin = np.flatnonzero(~has_core[1:]) + 1
        thin = thin[np.bincount(lab.ravel(), minlength=n + 1)[thin] > 0]
        if len(thin):
            deepest = np.zeros(n + 1)
            deepest[thin] = ndi.maximum(depth, lab, thin)
            sel = np.isin(lab, thin)
            core |= sel & (depth >= deepest[lab] - 1e-9)
    return core


def particle_thresholds(labels: np.ndarray, gray: np.ndarray, *, band_px: int = 2, ring_px: int = 3,
                        method: str = "mid", level: float = 0.5) -> np.ndarray:
    """Per instance (index k for label k; index 0 unused, NaN): the gray threshold of its outline.

    See the module doc. NaN where it cannot be computed (no free ring, or the particle's core and ring
    have the same gray); such particles are left as they are by :func:`refine_boundaries`.
    """
    lab, g = _check(labels, gray, band_px, method, level)
    return _thresholds(lab, g, int(band_px), int(ring_px), method, level)


def _thresholds(lab: np.ndarray, g: np.ndarray, band_px: int, ring_px: int, method: str, level: float) -> np.ndarray:
    n = int(lab.max(initial=0))
    thr = np.full(n + 1, np.nan)
    if n == 0:
        return thr
    idx = np.arange(1, n + 1)
    core = _cores(lab, band_px)
    # nearest instance of every pixel (background pixels: by Euclidean distance) and the distance to it
    dist, (ri, ci) = ndi.distance_transform_edt(lab == 0, return_indices=True)
    near = lab[ri, ci]
    ring = np.where((lab == 0) & (dist > band_px) & (dist <= band_px + ring_px), near, 0)
    with np.errstate(invalid="ignore"):
        inner = np.asarray(ndi.median(g, np.where(core, lab, 0), idx), float)
        outer = np.asarray(ndi.median(g, ring, idx), float) if ring.any() else np.full(n, np.nan)
    if method == "mid":
        t = outer + level * (inner - outer)
    else:
        from skimage.filters import threshold_otsu

        # the particle's inner band and its background out to the ring's far edge (no core: an outline
        # too far inside would otherwise leave few background pixels to Otsu)
        region = np.where(((lab > 0) & ~core) | ((lab == 0) & (dist <= band_px + ring_px)), near, 0)
        t = np.full(n, np.nan)
        for k, sl in enumerate(ndi.find_objects(region), start=1):
            if sl is None:
                continue
            v = g[sl][region[sl] == k]
            if v.size >= 4 and v.max() > v.min():
                t[k - 1] = threshold_otsu(v)
    flat = ~np.isfinite(inner) | ~np.isfinite(outer) | (np.abs(inner - outer) < 1e-6)
    t[flat] = np.nan
    # Otsu's threshold must still lie between the particle's core and ring levels
    if method == "otsu":
        lo, hi = np.minimum(inner, outer), np.maximum(inner, outer)
        t[(t < lo) | (t > hi)] = np.nan
    thr[1:] = t
    return thr


def refine_boundaries(labels: np.ndarray, gray: np.ndarray, *, dark: bool, band_px: int = 2,
                      method: str = "mid", level: float = 0.5, ring_px: int = 3,
                      sigma: float = 0.0) -> np.ndarray:
    """Instance labels with each outline re-decided on the gray image within ``band_px`` of it.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Separated instances (0 = background), e.g. ``separate(...).labels``.
    gray : ndarray, shape (H, W)
        The image as shown (any numeric range).
    dark : bool
        Particles darker than their surroundings (TEM/STEM bright field) or brighter (SE).
    band_px : int
        Half width of the band around each outline that may change (0: no change).
    method : {"mid", "otsu"}
        Threshold per particle: ``ring + level * (inner - ring)``, or Otsu's in the particle's band.
    level : float in (0, 1)
        For ``mid``: where between the ring (0) and core (1) gray levels the edge lies.
    ring_px : int
        Width of the background ring (beyond the band) that gives the background level.
    sigma : float
        Gaussian smoothing (px) of the gray image before the pixel test (0: none).

    Returns
    -------
    ndarray of int32
        Same ids as ``labels`` (no new, merged or vanished instance); pixels farther than
        ``band_px`` from every outline unchanged.

    Raises
    ------
    ValueError
        Labels not 2-D integers >= 0, labels and image of different shapes, ``band_px`` not a
        non-negative integer, an unknown ``method`` or ``level`` outside (0, 1).

    Examples
    --------
    A dark disk of radius 15 px whose outline was drawn 2 px too small comes back to its edge:

    >>> import numpy as np
    >>> from scipy import ndimage as ndi
    >>> yy, xx = np.mgrid[:64, :64]
    >>> r = np.hypot(yy - 32, xx - 32)
    >>> gray = 0.8 - 0.6 * ndi.gaussian_filter((r <= 15).astype(float), 1.5)
    >>> out = refine_boundaries((r <= 13).astype(np.int32), gray, dark=True, band_px=3)
    >>> round(float(np.sqrt((out == 1).sum() / np.pi)), 1)
    15.0

    See docs/segmentation.md ("Boundary refinement (#16)") for the figures on the real images.
    """
    lab, g = _check(labels, gray, band_px, method, level)
    band_px = int(band_px)
    n = int(lab.max(initial=0))
    if n == 0 or band_px == 0:
        return lab.astype(np.int32)
    thr = _thresholds(lab, g, band_px, int(ring_px), method, level)
    gs = ndi.gaussian_filter(g, sigma) if sigma > 0 else g
    core = _cores(lab, band_px)
    # the band: pixels within band_px of an outline (particle pixels not in the core, background pixels
    # within band_px of a particle)
    dist, (ri, ci) = ndi.distance_transform_edt(lab == 0, return_indices=True)
    near = lab[ri, ci]
    band = ((lab > 0) & ~core) | ((lab == 0) & (dist <= band_px))
    t = thr[near]
    ok = np.isfinite(t)
    passes = np.zeros(lab.shape, bool)
    passes[ok] = (gs[ok] <= t[ok]) if dark else (gs[ok] >= t[ok])
    # particles without a usable threshold keep their outline: their own pixels pass, nothing is added
    passes[~ok] = lab[~ok] > 0
    keep = np.where(~band, lab, np.where(passes & (lab > 0), lab, 0))
    grow = band & passes & (lab == 0)
    if grow.any():
        from skimage.segmentation import watershed

        flood = watershed(np.zeros(lab.shape, np.uint8), markers=keep, mask=(keep > 0) | grow, connectivity=1)
        # a particle grows only into the band of a particle with a threshold: use the nearest's
        out = np.where(grow & (flood > 0), flood, keep)
    else:
        out = keep
    return _drop_detached(out, core, lab)


def _drop_detached(out: np.ndarray, core: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Keep, per instance, only its pieces (4-connected, same id) that contain a core pixel."""
    from skimage.measure import label as cc

    pieces = cc(out, background=0, connectivity=1)
    anchored = np.zeros(int(pieces.max(initial=0)) + 1, bool)
    anchored[np.unique(pieces[core & (out == lab)])] = True
    anchored[0] = False
    return np.where(anchored[pieces], out, 0).astype(np.int32)
