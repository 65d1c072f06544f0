"""Class sets of the shape classifier and how the render factory's shapes map onto them.

Per Bals & Epple 2023: SE images (sphere, sphere-like, cube, rod, plate/polyhedron,
covered) and transmission images (circle, rod, triangle, square, pentagon,
hexagon, agglomerate, covered).  Both sets also hold ``agglomerate`` (a
segmented region that holds two or more particles) and ``covered`` (a
particle of which less than :data:`COVERED_BELOW` is visible, or a fragment of
one): neither is measured.  The threshold is justified in
``docs/classification.md`` (ECD of the visible part falls as sqrt(visible
fraction): at 0.85 the bias is at most 8 %).
"""

from __future__ import annotations

__all__ = ["CLASSES", "SHAPE_TO_CLASS", "COVERED_BELOW", "FRAGMENT_BELOW", "UNMEASURED", "class_set",
           "modality_set"]

COVERED_BELOW = 0.85  # visible fraction below which a particle counts as covered
FRAGMENT_BELOW = 0.7  # a segmented region holding less than this share of its particle's visible pixels
UNMEASURED = ("covered", "agglomerate")

CLASSES = {
    "se": ["sphere", "sphere-like", "cube", "rod", "polyhedron", "agglomerate", "covered"],
    "transmission": ["circle", "rod", "triangle", "square", "pentagon", "hexagon", "agglomerate", "covered"],
}

SHAPE_TO_CLASS = {
    "se": {"sphere": "sphere", "indented_sphere": "sphere-like", "icosahedron": "sphere-like", "cube": "cube",
           "short_rod": "rod", "long_rod": "rod", "hexagonal_plate": "polyhedron", "trigonal_plate": "polyhedron",
           "disc": "polyhedron", "octahedron": "polyhedron", "tetrahedron": "polyhedron",
           "pentagonal_bipyramid": "polyhedron"},
    "transmission": {"sphere": "circle", "indented_sphere": "circle", "icosahedron": "circle", "disc": "circle",
                     "short_rod": "rod", "long_rod": "rod", "trigonal_plate": "triangle", "tetrahedron": "triangle",
                     "cube": "square", "pentagonal_bipyramid": "pentagon", "hexagonal_plate": "hexagon",
                     "octahedron": "hexagon"},
}


def modality_set(modality: str) -> str:
    """``se`` for SE/HIM images, ``transmission`` for STEM/TEM."""
    if modality in ("se", "him"):
        return "se"
    if modality in ("stem", "tem", "transmission"):
        return "transmission"
    raise ValueError(f"unknown modality {modality!r}; use se, him, stem or tem")


def class_set(modality: str) -> list[str]:
    return CLASSES[modality_set(modality)]
