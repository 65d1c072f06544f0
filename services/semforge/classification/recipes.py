"""Rendered training data for the shape classifier: every shape of the library, sparse to crowded fields.

Each recipe is a list of (dataset name, SceneSpec, scenes) rendered with
:func:`semforge.training.scenes.render_batch`.  Compared with the segmenter's recipes
these use the whole shape library (every class of the seed that the library
can make) and a high agglomerate share, so that covered particles and
agglomerates are common.  The ``-test`` datasets use other seeds and are held
out: they give the figures in ``docs/classification.md``.
"""

from __future__ import annotations

from ..training.scenes.spec import SceneSpec, ShapeComponent

__all__ = ["RECIPES", "recipe_datasets"]


def _se_mix() -> list[ShapeComponent]:
    """SE: TiO2-like sizes (about 26 px at 7.344 nm/px), every shape of the library."""
    return [ShapeComponent("sphere", 2, 190, 45, "lognormal"),
            ShapeComponent("indented_sphere", 1, 190, 45, "lognormal"),
            ShapeComponent("icosahedron", 1, 200, 45, "lognormal"),
            ShapeComponent("cube", 2, 170, 40, "lognormal"),
            ShapeComponent("short_rod", 1, 120, 25, "lognormal", 2.2),
            ShapeComponent("long_rod", 1, 90, 18, "normal", 4.5),
            ShapeComponent("hexagonal_plate", 1, 230, 45),
            ShapeComponent("trigonal_plate", 1, 240, 45),
            ShapeComponent("octahedron", 1, 210, 45, "lognormal"),
            ShapeComponent("tetrahedron", 1, 230, 45, "lognormal"),
            ShapeComponent("pentagonal_bipyramid", 1, 210, 45, "lognormal")]


def _tem_mix() -> list[ShapeComponent]:
    """Transmission: metal/oxide nanoparticles around 40 nm at 2 nm/px (about 20 px)."""
    return [ShapeComponent("sphere", 2, 40, 8, "lognormal"),
            ShapeComponent("disc", 1, 42, 8),
            ShapeComponent("short_rod", 1, 20, 4, "normal", 2.5),
            ShapeComponent("long_rod", 1, 16, 3, "normal", 5.0),
            ShapeComponent("cube", 2, 36, 6),
            ShapeComponent("trigonal_plate", 2, 46, 8),
            ShapeComponent("hexagonal_plate", 2, 46, 8),
            ShapeComponent("pentagonal_bipyramid", 1, 42, 7),
            ShapeComponent("octahedron", 1, 40, 6)]


def _family(prefix: str, comps, pixel_nm: float, counts: list[int], scenes: int, seed: int):
    # crowded fields pile up: there the agglomerate share is raised so that many particles end up covered
    return [(f"{prefix}-n{n}", SceneSpec(particles=n, size_px=512, pixel_size_nm=pixel_nm, seed=seed + k,
                                         components=comps(), frames=90, cluster=0.5 if n < 400 else 0.8), scenes)
            for k, n in enumerate(counts)]


RECIPES = {
    "classifier-se": _family("cls-se", _se_mix, 7.344, [60, 150, 260, 450, 700], 10, 5000),
    "classifier-se-test": _family("cls-se-test", _se_mix, 7.344, [150, 550], 3, 5500),
    "classifier-transmission": _family("cls-tem", _tem_mix, 2.0, [60, 150, 260, 450, 700], 10, 6000),
    "classifier-transmission-test": _family("cls-tem-test", _tem_mix, 2.0, [150, 550], 3, 6500),
}


def recipe_datasets(name: str):
    if name not in RECIPES:
        raise ValueError(f"unknown classifier recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
