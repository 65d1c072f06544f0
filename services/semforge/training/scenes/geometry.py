"""Exact geometry of settled scenes: footprints, projected thickness, sanity checks.

Works on the final poses that Blender reports (``poses.json``): every particle
is its shape mesh, rotated and moved.  Each particle is treated as the convex
hull of its mesh (exact for every shape but the indented sphere, whose dimple
is filled), so a vertical ray meets it in one interval whose length is the
particle's thickness on that pixel.

Pixel convention (same as the render): the camera looks down -z at the centre
of the field; row 0 is the top edge (+y), column 0 the left edge (-x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from .shapes import make_shape

__all__ = ["PlacedParticle", "placed_particles", "ray_interval", "project", "thickness_map", "physics_report"]


@dataclass
class PlacedParticle:
    id: int
    shape: str
    size_nm: float
    aspect: float
    location_nm: np.ndarray
    rotation_wxyz: np.ndarray
    vertices: np.ndarray  # world coordinates, nm
    planes: np.ndarray  # (k, 4): a x + b y + c z + d <= 0 inside
    dims: dict
    radius: float


def _rotation_matrix(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def placed_particles(poses: list[dict]) -> list[PlacedParticle]:
    out = []
    for p in poses:
        mesh = make_shape(p["shape"], p["size_nm"], p["aspect"])
        rot = _rotation_matrix(p["rotation_wxyz"])
        loc = np.asarray(p["location_nm"], float)
        v = mesh.vertices @ rot.T + loc
        hull = ConvexHull(v)
        out.append(PlacedParticle(int(p["id"]), p["shape"], float(p["size_nm"]), float(p["aspect"]), loc,
                                  np.asarray(p["rotation_wxyz"], float), v, hull.equations, mesh.dims,
                                  float(np.linalg.norm(v - loc, axis=1).max())))
    return out


def ray_interval(planes: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit z of vertical rays at (x, y) through a convex polytope (lo > hi: miss)."""
    a, b, c, d = planes.T
    rhs = -(np.multiply.outer(x, a) + np.multiply.outer(y, b) + d)  # c z <= rhs
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = rhs / c
    up = np.where(c > 1e-12, bound, np.inf).min(axis=-1)
    lo = np.where(c < -1e-12, bound, -np.inf).max(axis=-1)
    flat_out = (np.abs(c) <= 1e-12) & (rhs < 0)
    lo = np.where(flat_out.any(axis=-1), np.inf, lo)
    return lo, up


def _grid(size_px: int, pixel_nm: float):
    half = size_px * pixel_nm / 2
    return half, (lambda j: (j + 0.5) * pixel_nm - half), (lambda i: half - (i + 0.5) * pixel_nm)


def project(p: PlacedParticle, size_px: int, pixel_nm: float):
    """The particle's own footprint, unclipped: (rows, cols, thickness_nm) of every pixel it covers."""
    half, xc, yc = _grid(size_px, pixel_nm)
    xs, ys = p.vertices[:, 0], p.vertices[:, 1]
    j0 = int(np.floor((xs.min() + half) / pixel_nm)) - 1
    j1 = int(np.ceil((xs.max() + half) / pixel_nm)) + 1
    i0 = int(np.floor((half - ys.max()) / pixel_nm)) - 1
    i1 = int(np.ceil((half - ys.min()) / pixel_nm)) + 1
    ii, jj = np.mgrid[i0:i1, j0:j1]
    lo, up = ray_interval(p.planes, xc(jj.astype(float)), yc(ii.astype(float)))
    hit = up > lo
    return ii[hit], jj[hit], (up - lo)[hit]


def thickness_map(placed: list[PlacedParticle], size_px: int, pixel_nm: float) -> tuple[np.ndarray, dict]:
    """Summed projected thickness (nm) of all particles, and per-particle footprint facts."""
    thick = np.zeros((size_px, size_px), np.float64)
    facts = {}
    for p in placed:
        ii, jj, t = project(p, size_px, pixel_nm)
        inside = (ii >= 0) & (ii < size_px) & (jj >= 0) & (jj < size_px)
        np.add.at(thick, (ii[inside], jj[inside]), t[inside])
        facts[p.id] = {"footprint_px": int(len(ii)), "in_frame_px": int(inside.sum()),
                       "cut_by_border": bool(len(ii) and not inside.all()), "rows": ii[inside], "cols": jj[inside]}
    return thick.astype(np.float32), facts


def physics_report(placed: list[PlacedParticle], *, holder_z: float = 0.0) -> dict:
    """How physical the settled scene is.

    ``below_holder_nm``: deepest vertex under the holder surface.
    ``max_penetration``: deepest vertex of one particle inside another, as a
    fraction of the smaller particle's size (touching = 0).
    """
    below = max(0.0, holder_z - min(float(p.vertices[:, 2].min()) for p in placed))
    worst, pair = 0.0, None
    centres = np.array([p.location_nm for p in placed])
    radii = np.array([p.radius for p in placed])
    for i, a in enumerate(placed):
        d = np.linalg.norm(centres - centres[i], axis=1)
        for j in np.nonzero((d < radii + radii[i]) & (np.arange(len(placed)) > i))[0]:
            b = placed[j]
            depth = max(_depth_inside(a.vertices, b.planes), _depth_inside(b.vertices, a.planes))
            ratio = depth / min(a.size_nm, b.size_nm)
            if ratio > worst:
                worst, pair = ratio, (a.id, b.id)
    floating = sum(1 for p in placed if p.vertices[:, 2].min() > holder_z + 2 * p.radius
                   and not _supported(p, placed))
    return {"below_holder_nm": below, "max_penetration": worst, "worst_pair": pair, "floating": floating}


def _depth_inside(vertices: np.ndarray, planes: np.ndarray) -> float:
    signed = vertices @ planes[:, :3].T + planes[:, 3]  # <= 0 inside
    inside = signed.max(axis=1)
    return float(max(0.0, -inside.min()))


def _supported(p: PlacedParticle, placed: list[PlacedParticle]) -> bool:
    low = p.vertices[:, 2].min()
    for q in placed:
        if q is p:
            continue
        if np.linalg.norm(q.location_nm - p.location_nm) < (q.radius + p.radius) * 1.05 and q.vertices[:, 2].max() >= low - 0.1 * p.size_nm:
            return True
    return False
