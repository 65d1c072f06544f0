"""Training-data recipes: which rendered scenes the shipped segmenters learn from.

Each recipe is a list of (dataset name, SceneSpec, scenes) rendered with
:func:`semforge.training.scenes.render_batch`; varying the particle count across
datasets gives sparse fields, monolayers and piles.  Appearance (SE-like or
transmission-like) is chosen by the ``image`` file the training reads.
"""

from __future__ import annotations

from ..scenes.spec import SceneSpec, ShapeComponent

__all__ = ["RECIPES", "recipe_datasets"]


def _tio2_like() -> list[ShapeComponent]:
    """Faceted, roughly equiaxed oxide particles around 190 nm ECD (the facility's TiO2 reference material)."""
    return [ShapeComponent("icosahedron", 2, 200, 55, "lognormal"),
            ShapeComponent("pentagonal_bipyramid", 2, 210, 55, "lognormal"),
            ShapeComponent("octahedron", 2, 200, 55, "lognormal"),
            ShapeComponent("sphere", 1, 180, 50, "lognormal"),
            ShapeComponent("indented_sphere", 1, 190, 50, "lognormal"),
            ShapeComponent("short_rod", 1, 140, 35, "lognormal", 1.6),
            ShapeComponent("cube", 1, 160, 40, "lognormal"),
            ShapeComponent("tetrahedron", 1, 220, 50, "lognormal")]


def _tio2_with_rods() -> list[ShapeComponent]:
    """The TiO2-like mix plus long and short rods: the shapes the seed saw translated into chains of spheres."""
    return _tio2_like() + [ShapeComponent("long_rod", 3, 70, 12, "normal", 5.0),
                           ShapeComponent("short_rod", 1, 90, 15, "normal", 2.5)]


def _tio2_grains() -> list[ShapeComponent]:
    """Small primary grains (most about 115 nm, 60-200 nm; one tenth about 220 nm) of the TiO2-like shapes, for
    dense agglomerates: the clumps the SEM annotators split into primary particles and the network merges (#16)."""
    return [ShapeComponent("icosahedron", 2, 115, 40, "lognormal"),
            ShapeComponent("pentagonal_bipyramid", 2, 120, 40, "lognormal"),
            ShapeComponent("octahedron", 2, 115, 40, "lognormal"),
            ShapeComponent("indented_sphere", 1, 110, 35, "lognormal"),
            ShapeComponent("tetrahedron", 1, 130, 40, "lognormal"),
            ShapeComponent("cube", 1, 100, 30, "lognormal"),
            ShapeComponent("icosahedron", 1, 220, 50, "lognormal")]


def _tio2_piles() -> list[ShapeComponent]:
    """The TiO2-like grains (about 190 nm) and the small primary grains (about 115 nm) together, for piles of mixed
    sizes where small grains lie partly under large ones: the visible slivers the SEM annotators drew as particles
    and the network merges (#16, round 4)."""
    return _tio2_like() + _tio2_grains()


def _transmission_mix() -> list[ShapeComponent]:
    """Metal/oxide nanoparticles as seen in STEM/TEM: spheres, rods, plates, polyhedra around 40 nm."""
    return [ShapeComponent("sphere", 3, 40, 8, "lognormal"),
            ShapeComponent("short_rod", 1, 20, 4, "normal", 2.5),
            ShapeComponent("long_rod", 1, 16, 3, "normal", 5.0),
            ShapeComponent("cube", 1, 35, 5),
            ShapeComponent("trigonal_plate", 1, 45, 8),
            ShapeComponent("hexagonal_plate", 1, 45, 8),
            ShapeComponent("icosahedron", 1, 40, 6),
            ShapeComponent("octahedron", 1, 40, 6)]


def _family(prefix: str, comps, pixel_nm: float, counts: list[int], scenes: int, seed: int, size_px: int = 512,
            cluster: float = 0.6):
    return [(f"{prefix}-n{n}", SceneSpec(particles=n, size_px=size_px, pixel_size_nm=pixel_nm, seed=seed + k,
                                         components=comps(), frames=90, cluster=cluster), scenes)
            for k, n in enumerate(counts)]


RECIPES = {
    # SE, 7.344 nm/px as on the facility's Zeiss at 50 000x: 26 px particles, 25 to 450 per field
    "se": _family("se-tio2", _tio2_like, 7.344, [25, 80, 160, 280, 450], 24, 1000),
    # SE, small primary grains in dense agglomerates (cluster 0.9): separations of touching small grains (#16)
    "se-grains": _family("se-grains", _tio2_grains, 7.344, [150, 300, 500], 12, 5000, cluster=0.9),
    # SE, piles of mixed sizes (large and small grains, cluster 0.95, up to 900 per field: several layers) (#16)
    "se-piles": _family("se-piles", _tio2_piles, 7.344, [300, 600, 900], 12, 6000, cluster=0.95),
    # transmission, 2 nm/px: 20 px particles
    "transmission": _family("tem-mix", _transmission_mix, 2.0, [30, 120, 250, 400], 18, 2000),
    # held out, for the translation content check by shape (rods; not used to train the shipped models)
    "se-rods": _family("se-rods", _tio2_with_rods, 7.344, [60, 160], 8, 4000),
    # seconds-scale data for tests
    "tiny": _family("tiny", _tio2_like, 7.344, [20, 60], 2, 3000, size_px=128),
}


def recipe_datasets(name: str):
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
