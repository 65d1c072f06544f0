"""The particle shape library: closed triangle meshes in nanometres, numpy only.

Each shape is built from one ``size_nm`` (its characteristic diameter) and an
optional ``aspect`` (rods: length / diameter; plates and discs: thickness /
width).  ``make_shape`` returns the mesh centred on its centroid together with
the named dimensions that ``scene.json`` reports.  This module must import
with numpy alone: it runs inside Blender's Python as well as in the services.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["SHAPES", "Mesh", "make_shape", "default_aspect", "collision_shape"]


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # (n, 3) float64, nm, centred at the centroid of the vertices
    faces: np.ndarray  # (m, 3) int, counter-clockwise seen from outside
    dims: dict  # named dimensions in nm, e.g. {"diameter_nm": 50.0}
    convex: bool = True


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    p = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p], [0, -1, -p],
                  [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], int)
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


def _subdivide(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = [tuple(x) for x in v]
    index: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in index:
            m = (np.asarray(verts[a]) + np.asarray(verts[b])) / 2
            verts.append(tuple(m / np.linalg.norm(m)))
            index[key] = len(verts) - 1
        return index[key]

    out = []
    for a, b, c in f:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        out += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(verts), np.array(out, int)


def _sphere(level: int = 2) -> tuple[np.ndarray, np.ndarray]:
    v, f = _icosahedron()
    for _ in range(level):
        v, f = _subdivide(v, f)
    return v, f


def _prism(polygon: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Right prism over a convex polygon given counter-clockwise in the xy plane."""
    n = len(polygon)
    bottom = np.c_[polygon, np.full(n, -height / 2)]
    top = np.c_[polygon, np.full(n, height / 2)]
    v = np.vstack([bottom, top, [[0, 0, -height / 2], [0, 0, height / 2]]])
    cb, ct = 2 * n, 2 * n + 1
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, n + j], [i, n + j, n + i], [cb, j, i], [ct, n + i, n + j]]
    return v, np.array(faces, int)


def _regular_polygon(n: int, radius: float, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.c_[np.cos(a), np.sin(a)]


def _capsule(length: float, diameter: float, segments: int = 16, rings: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rod along x: a cylinder with hemispherical caps, total length ``length``."""
    r = diameter / 2
    half = max(length / 2 - r, 0.0)
    profile = []  # (x, radius) from one tip to the other
    for k in range(rings, 0, -1):
        t = np.pi / 2 * k / rings
        profile.append((-half - r * np.sin(t), r * np.cos(t)))
    profile.append((-half, r))
    profile.append((half, r))
    for k in range(1, rings + 1):
        t = np.pi / 2 * k / rings
        profile.append((half + r * np.sin(t), r * np.cos(t)))
    ang = 2 * np.pi * np.arange(segments) / segments
    verts = [[-half - r, 0, 0]]
    for x, rad in profile:
        verts += [[x, rad * np.cos(a), rad * np.sin(a)] for a in ang]
    verts.append([half + r, 0, 0])
    v = np.array(verts)
    faces = []
    nr = len(profile)
    for i in range(segments):
        j = (i + 1) % segments
        faces.append([0, 1 + j, 1 + i])
        for k in range(nr - 1):
            a0, a1 = 1 + k * segments, 1 + (k + 1) * segments
            faces += [[a0 + i, a0 + j, a1 + j], [a0 + i, a1 + j, a1 + i]]
        last = 1 + (nr - 1) * segments
        faces.append([len(v) - 1, last + i, last + j])
    return v, np.array(faces, int)


def _bipyramid(n: int, radius: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    ring = np.c_[_regular_polygon(n, radius), np.zeros(n)]
    v = np.vstack([ring, [[0, 0, height / 2], [0, 0, -height / 2]]])
    faces = []
    for i in range(n):
        j = (i + 1) % n
        faces += [[i, j, n], [j, i, n + 1]]
    return v, np.array(faces, int)


def _fix_orientation(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Orient every face outwards (all shapes are star-shaped about the centroid)."""
    c = v.mean(axis=0)
    tri = v[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("ij,ij->i", normal, tri.mean(axis=1) - c) >= 0
    f = f.copy()
    f[~outward] = f[~outward][:, ::-1]
    return f


def _sphere_mesh(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    v, f = _sphere(2)
    return v * d / 2, f, {"diameter_nm": d}


def _indented_sphere(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    v, f = _sphere(3)
    depth = aspect  # dimple depth as a fraction of the diameter
    theta = np.arccos(np.clip(v[:, 2], -1, 1))  # angle from the dimple's axis (+z)
    cap = np.deg2rad(40.0)
    push = np.where(theta < cap, 2 * depth * 0.5 * (1 + np.cos(np.pi * theta / cap)), 0.0)
    v = v * (1 - push)[:, None]
    return v * d / 2, f, {"diameter_nm": d, "indent_depth_nm": depth * d}


def _rod(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    v, f = _capsule(aspect * d, d)
    return v, f, {"length_nm": aspect * d, "diameter_nm": d}


def _cube(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    v, f = _prism(_regular_polygon(4, d / 2 ** 0.5, np.pi / 4), d)
    return v, f, {"edge_nm": d}


def _plate(n: int):
    def build(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
        radius = d / 2
        v, f = _prism(_regular_polygon(n, radius, np.pi / 2), aspect * d)
        edge = 2 * radius * np.sin(np.pi / n)
        return v, f, {"width_nm": d, "edge_nm": edge, "thickness_nm": aspect * d}
    return build


def _disc(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    v, f = _prism(_regular_polygon(32, d / 2), aspect * d)
    return v, f, {"diameter_nm": d, "thickness_nm": aspect * d}


def _platonic(kind: str):
    def build(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
        if kind == "tetrahedron":
            v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
            f = np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
            edge_per_r = 2 * 2 ** 0.5 / 3 ** 0.5
        elif kind == "octahedron":
            v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
            f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
            edge_per_r = 2 ** 0.5
        else:
            v, f = _icosahedron()
            edge_per_r = 1 / np.sin(2 * np.pi / 5)
        v = v / np.linalg.norm(v, axis=1, keepdims=True) * d / 2
        return v, f, {"diameter_nm": d, "edge_nm": edge_per_r * d / 2}
    return build


def _pentagonal_bipyramid(d: float, aspect: float) -> tuple[np.ndarray, np.ndarray, dict]:
    r = d / 2
    edge = 2 * r * np.sin(np.pi / 5)
    h = 2 * np.sqrt(max(edge ** 2 - r ** 2, 0.0))
    v, f = _bipyramid(5, r, h)
    return v, f, {"diameter_nm": d, "edge_nm": edge, "height_nm": h}


# name -> (builder, default aspect, convex?, Blender rigid-body collision shape)
SHAPES = {
    "sphere": (_sphere_mesh, 1.0, True, "SPHERE"),
    "indented_sphere": (_indented_sphere, 0.2, False, "CONVEX_HULL"),
    "short_rod": (_rod, 2.0, True, "CONVEX_HULL"),
    "long_rod": (_rod, 5.0, True, "CONVEX_HULL"),
    "cube": (_cube, 1.0, True, "BOX"),
    "hexagonal_plate": (_plate(6), 0.25, True, "CONVEX_HULL"),
    "trigonal_plate": (_plate(3), 0.25, True, "CONVEX_HULL"),
    "disc": (_disc, 0.25, True, "CYLINDER"),
    "tetrahedron": (_platonic("tetrahedron"), 1.0, True, "CONVEX_HULL"),
    "octahedron": (_platonic("octahedron"), 1.0, True, "CONVEX_HULL"),
    "icosahedron": (_platonic("icosahedron"), 1.0, True, "CONVEX_HULL"),
    "pentagonal_bipyramid": (_pentagonal_bipyramid, 1.0, True, "CONVEX_HULL"),
}


def default_aspect(shape: str) -> float:
    return SHAPES[shape][1]


def collision_shape(shape: str) -> str:
    return SHAPES[shape][3]


def make_shape(shape: str, size_nm: float, aspect: float | None = None) -> Mesh:
    """Mesh of ``shape`` with characteristic diameter ``size_nm`` (rods: diameter)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if not size_nm > 0:
        raise ValueError(f"size_nm must be > 0, got {size_nm}")
    unit = _unit_mesh(shape, float(SHAPES[shape][1] if aspect is None else aspect))
    s = float(size_nm)
    return Mesh(vertices=unit.vertices * s, faces=unit.faces, dims={k: x * s for k, x in unit.dims.items()},
                convex=unit.convex)


@lru_cache(maxsize=256)
def _unit_mesh(shape: str, aspect: float) -> Mesh:
    """The mesh at size 1 (every builder is linear in the size)."""
    build, _, convex, _ = SHAPES[shape]
    v, f, dims = build(1.0, aspect)
    v = np.asarray(v, float)
    v = v - v.mean(axis=0)
    f = _fix_orientation(v, np.asarray(f, int))
    v.setflags(write=False)
    f.setflags(write=False)
    return Mesh(vertices=v, faces=f, dims={k: float(x) for k, x in dims.items()}, convex=convex)
