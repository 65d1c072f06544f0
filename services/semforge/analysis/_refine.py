"""Boundary refinement of separated particles on the gray image.

A segmentation network draws outlines that are smooth and slightly rounder than the particles; on
images with sharp particle edges (transmission bright field: dark particles on a bright film) a
gray-level threshold follows the edge better. :func:`refine_boundaries` keeps the network's
instances (identity, count, the separation lines between them) and re-decides only the pixels in a
band of ``band_px`` pixels either side of each outline with a local gray threshold:

* per particle (``scope="particle"``; or per group of touching particles, ``"agglomerate"``),
  ``inner`` is the median gray of its pixels deeper than the band (its core; the deepest pixels
  when the particle is thinner than the band) and ``ring`` the median gray of the free background
  between ``band_px`` and ``band_px + ring_px`` outside it;
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

from ._separate import Instance, Separation

__all__ = ["REFINE_METHODS", "REFINE_SCOPES", "refine_boundaries", "refine_separation", "particle_thresholds"]

REFINE_METHODS = ("mid", "otsu")
REFINE_SCOPES = ("particle", "agglomerate")

_CROSS = ndi.generate_binary_structure(2, 1)
_SQUARE = ndi.generate_binary_structure(2, 2)


def _check(labels: np.ndarray, gray: np.ndarray, band_px: int, method: str, level: float,
           scope: str = "particle") -> tuple[np.ndarray, np.ndarray]:
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
    if scope not in REFINE_SCOPES:
        raise ValueError(f"unknown refinement scope {scope!r}; valid: {', '.join(REFINE_SCOPES)}")
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
    # depth = 1 + Euclidean distance to the nearest pixel outside ``inside``; depth > band_px <=> every
    # pixel within band_px - 1 is inside, i.e. the erosion by that disk (no whole-image distance transform)
    if band_px <= 1:
        core = inside.copy() if band_px == 1 else lab > 0
    else:
        r = band_px - 1
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        core = ndi.binary_erosion(inside, structure=np.hypot(yy, xx) <= r, border_value=1)
    n = int(lab.max(initial=0))
    if n:
        has_core = np.zeros(n + 1, bool)
        has_core[lab[core]] = True
        present = np.bincount(lab.ravel(), minlength=n + 1) > 0
        thin = np.flatnonzero(~has_core & present)
        thin = thin[thin > 0]
        objs = ndi.find_objects(lab, max_label=n)
        for k in thin:  # the deepest pixels of each instance thinner than the band
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in objs[k - 1])
            own = lab[sl] == k
            depth = np.where(own, ndi.distance_transform_edt(inside[sl] & own), 0.0)
            core[sl] |= own & (depth >= depth[own].max() - 1e-9)
    return core


def particle_thresholds(labels: np.ndarray, gray: np.ndarray, *, band_px: int = 2, ring_px: int = 3,
                        method: str = "mid", level: float = 0.5, scope: str = "particle") -> np.ndarray:
    """Per instance (index k for label k; index 0 unused, NaN): the gray threshold of its outline.

    See the module doc. NaN where it cannot be computed (no free ring, or the particle's core and ring
    have the same gray); such particles are left as they are by :func:`refine_boundaries`.
    """
    lab, g = _check(labels, gray, band_px, method, level, scope)
    return _thresholds(lab, g, *_layout(lab, int(band_px)), int(band_px), int(ring_px), method, level, scope)


def _layout(lab: np.ndarray, band_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cores, and for every pixel the distance (px) to the nearest instance pixel and that instance's id."""
    core = _cores(lab, band_px)
    dist, (ri, ci) = ndi.distance_transform_edt(lab == 0, return_indices=True)
    return core, dist, lab[ri, ci]


def _label_medians(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` per label 1..n (NaN for a label with no pixel); one sort of the labelled pixels."""
    sel = labels > 0
    lab, val = labels[sel], values[sel]
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    counts = np.bincount(lab, minlength=n + 1)[1:]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n, np.nan)
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2
    out[has] = 0.5 * (val[lo] + val[hi])
    return out


def _thresholds(lab: np.ndarray, g: np.ndarray, core: np.ndarray, dist: np.ndarray, near: np.ndarray,
                band_px: int, ring_px: int, method: str, level: float, scope: str = "particle") -> np.ndarray:
    n_inst = int(lab.max(initial=0))
    thr = np.full(n_inst + 1, np.nan)
    if n_inst == 0:
        return thr
    if scope == "agglomerate":  # one threshold per 8-connected group of touching instances
        groups, _ = ndi.label(lab > 0, structure=_SQUARE)
        group_of = np.zeros(n_inst + 1, np.int64)
        group_of[lab.ravel()] = groups.ravel()
        group_of[0] = 0
        lab, near = groups.astype(np.int64), group_of[near]
    n = int(lab.max(initial=0))
    ring = np.where((lab == 0) & (dist > band_px) & (dist <= band_px + ring_px), near, 0)
    inner = _label_medians(g, np.where(core, lab, 0), n)
    outer = _label_medians(g, ring, n)
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
    if scope == "agglomerate":
        thr[1:] = np.concatenate([[np.nan], t])[group_of[1:]]
    else:
        thr[1:] = t
    return thr


def refine_boundaries(labels: np.ndarray, gray: np.ndarray, *, dark: bool, band_px: int = 2,
                      method: str = "mid", level: float = 0.5, ring_px: int = 3,
                      sigma: float = 0.0, scope: str = "particle") -> np.ndarray:
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
    scope : {"particle", "agglomerate"}
        One threshold per instance, or one per group of touching instances (8-connected), from the
        cores and ring of the whole group.

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

    See docs/segmentation.md ("Boundary refinement on the gray image (#16)") for the figures on real images.
    """
    lab, g = _check(labels, gray, band_px, method, level, scope)
    band_px = int(band_px)
    n = int(lab.max(initial=0))
    if n == 0 or band_px == 0:
        return lab.astype(np.int32)
    core, dist, near = _layout(lab, band_px)
    thr = _thresholds(lab, g, core, dist, near, band_px, int(ring_px), method, level, scope)
    gs = ndi.gaussian_filter(g, sigma) if sigma > 0 else g
    # the band: pixels within band_px of an outline (particle pixels not in the core, background pixels
    # within band_px of a particle)
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


def refine_separation(sep: Separation, gray: np.ndarray, *, dark: bool, band_px: int = 1, **kw) -> Separation:
    """:func:`refine_boundaries` of ``sep.labels``, with the instances rebuilt from the refined labels.

    Instance k keeps its ``separated`` flag and ``exclude_reason``; its mask becomes its refined
    label region (as with ``separate(..., grow_px=...)``, instance masks then no longer overlap).
    ``band_px`` 0 returns ``sep`` unchanged. Keyword arguments go to :func:`refine_boundaries`.
    """
    if band_px == 0 or not sep.instances:
        _check(np.asarray(sep.labels).astype(np.int64), gray, band_px, kw.get("method", "mid"),
               kw.get("level", 0.5), kw.get("scope", "particle"))
        return sep
    labels = refine_boundaries(np.asarray(sep.labels).astype(np.int64), gray, dark=dark, band_px=band_px, **kw)
    out = []
    for k, sl in enumerate(ndi.find_objects(labels, max_label=len(sep.instances)), start=1):
        old = sep.instances[k - 1]
        if sl is None:  # an instance without pixels in the label image (lost to overlap) keeps its mask
            out.append(old)
            continue
        out.append(Instance(sl, labels[sl] == k, separated=old.separated, exclude_reason=old.exclude_reason))
    return Separation(labels=labels.astype(np.asarray(sep.labels).dtype), instances=out, mode=sep.mode)
