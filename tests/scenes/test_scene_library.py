"""Known answers for the numpy side of the render pipeline (no Blender needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from semforge.training.scenes import SHAPES, SceneSpec, ShapeComponent, make_shape, sample_particles, spec_from_dict
from semforge.training.scenes.appearance import diamond_square, noisy_height, se_image, transmission_image
from semforge.training.scenes.geometry import physics_report, placed_particles, ray_interval, thickness_map


def _signed_volume(mesh) -> float:
    t = mesh.vertices[mesh.faces]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_meshes_are_closed_outward_and_convex_where_claimed(shape):
    m = make_shape(shape, 50.0)
    vol = _signed_volume(m)
    assert vol > 0, "faces must point outwards"
    edges = np.sort(np.concatenate([m.faces[:, [0, 1]], m.faces[:, [1, 2]], m.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all(), "closed manifold: every edge shared by two faces"
    hull = ConvexHull(m.vertices).volume
    if m.convex:
        assert vol == pytest.approx(hull, rel=1e-6)
    else:
        assert vol < hull * 0.99  # the indented sphere really is indented


@pytest.mark.parametrize("shape,size,key,expected", [
    ("cube", 30.0, "edge_nm", 30.0),
    ("tetrahedron", 60.0, "edge_nm", 60.0 / 2 * np.sqrt(8 / 3)),
    ("octahedron", 40.0, "edge_nm", 20.0 * np.sqrt(2)),
    ("long_rod", 20.0, "length_nm", 100.0),
    ("hexagonal_plate", 50.0, "edge_nm", 25.0),
    ("disc", 40.0, "thickness_nm", 10.0),
])
def test_named_dimensions(shape, size, key, expected):
    m = make_shape(shape, size)
    assert m.dims[key] == pytest.approx(expected, rel=1e-9)
    if shape == "long_rod":
        ext = m.vertices.max(axis=0) - m.vertices.min(axis=0)
        assert ext.max() == pytest.approx(100.0, rel=1e-6)


def test_cube_volume_and_sphere_volume():
    assert ConvexHull(make_shape("cube", 10.0).vertices).volume == pytest.approx(1000.0, rel=1e-9)
    sphere = ConvexHull(make_shape("sphere", 10.0).vertices).volume
    assert sphere == pytest.approx(4 / 3 * np.pi * 125, rel=0.05)  # 320-face icosphere is slightly smaller


def test_ray_interval_through_a_cube_and_a_sphere():
    pose = [{"id": 1, "shape": "cube", "size_nm": 20.0, "aspect": 1.0, "location_nm": [0, 0, 10],
             "rotation_wxyz": [1, 0, 0, 0]},
            {"id": 2, "shape": "sphere", "size_nm": 30.0, "aspect": 1.0, "location_nm": [100, 0, 15],
             "rotation_wxyz": [0.7071068, 0.7071068, 0, 0]}]
    cube, sphere = placed_particles(pose)
    lo, up = ray_interval(cube.planes, np.array([0.0, 5.0, 11.0]), np.array([0.0, -9.0, 0.0]))
    assert up[:2] - lo[:2] == pytest.approx([20.0, 20.0], abs=1e-9)
    assert lo[2] > up[2]  # the ray at x=11 misses
    lo, up = ray_interval(sphere.planes, np.array([100.0]), np.array([0.0]))
    assert up[0] - lo[0] == pytest.approx(30.0, rel=0.01)
    assert up[0] == pytest.approx(30.0, rel=0.01)  # top of the sphere resting on the holder


def test_thickness_map_footprint_and_cut_by_border():
    # a 40 nm cube at the centre of a 64 px x 2 nm field, and one straddling the left edge
    pose = [{"id": 1, "shape": "cube", "size_nm": 40.0, "aspect": 1.0, "location_nm": [0.5, 0.5, 20],
             "rotation_wxyz": [1, 0, 0, 0]},
            {"id": 2, "shape": "cube", "size_nm": 20.0, "aspect": 1.0, "location_nm": [-64.0, 30.0, 10],
             "rotation_wxyz": [1, 0, 0, 0]}]
    thick, facts = thickness_map(placed_particles(pose), 64, 2.0)
    assert facts[1]["footprint_px"] == 400 and not facts[1]["cut_by_border"]
    assert thick.max() == pytest.approx(40.0, abs=1e-4)
    assert facts[2]["cut_by_border"] and facts[2]["in_frame_px"] == 50
    assert (thick > 0).sum() == 450


def test_physics_report_flags_overlap_and_sinking():
    ok = [{"id": 1, "shape": "sphere", "size_nm": 20.0, "aspect": 1.0, "location_nm": [0, 0, 10], "rotation_wxyz": [1, 0, 0, 0]},
          {"id": 2, "shape": "sphere", "size_nm": 20.0, "aspect": 1.0, "location_nm": [20.2, 0, 10], "rotation_wxyz": [1, 0, 0, 0]}]
    r = physics_report(placed_particles(ok))
    assert r["below_holder_nm"] < 1e-6 and r["max_penetration"] < 0.01 and r["floating"] == 0
    bad = [dict(ok[0]), dict(ok[1], location_nm=[10.0, 0, 4.0])]
    r = physics_report(placed_particles(bad))
    assert r["below_holder_nm"] == pytest.approx(6.0, rel=0.02)
    assert r["max_penetration"] > 0.3 and r["worst_pair"] == (1, 2)


def test_spec_validation_messages():
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        SceneSpec(components=[ShapeComponent("blob")]).validate()
    with pytest.raises(ValueError, match="particles must be"):
        SceneSpec(particles=0).validate()
    with pytest.raises(ValueError, match="lognormal"):
        ShapeComponent("sphere", distribution="gamma").validate()
    with pytest.raises(ValueError, match="unknown scene spec field"):
        spec_from_dict({"particle": 3})
    s = spec_from_dict(SceneSpec.simple(["cube", "disc"], particles=7).to_dict())
    assert [c.shape for c in s.components] == ["cube", "disc"] and s.particles == 7


def test_sampling_is_seeded_layered_and_non_overlapping():
    spec = SceneSpec(particles=400, size_px=256, pixel_size_nm=2.0, seed=4,
                     components=[ShapeComponent("sphere", 2, 40, 4), ShapeComponent("long_rod", 1, 15, 2, "lognormal")])
    a, b = sample_particles(spec), sample_particles(spec)
    assert a == b
    assert sample_particles(SceneSpec(**{**spec.__dict__, "seed": 5})) != a
    centres = np.array([p.start_location_nm for p in a])
    radii = np.array([np.linalg.norm(make_shape(p.shape, p.size_nm, p.aspect).vertices, axis=1).max() for p in a])
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(a)) * 1e9
    assert (d >= (radii[:, None] + radii[None]) * 0.999).all()
    assert (centres[:, 2] - radii > 0).all()
    assert centres[:, 2].max() > 2.5 * radii.max()  # 400 particles on this holder need more than one layer
    assert abs(np.mean([p.shape == "sphere" for p in a]) - 2 / 3) < 0.08


def test_lognormal_sizes_have_the_requested_mean_and_sd():
    spec = SceneSpec(particles=3000, size_px=2048, seed=1, components=[ShapeComponent("sphere", 1, 50, 10, "lognormal")])
    sizes = np.array([p.size_nm for p in sample_particles(spec)])
    assert sizes.mean() == pytest.approx(50, rel=0.03) and sizes.std() == pytest.approx(10, rel=0.08)
    assert sizes.min() > 0


def test_diamond_square_and_appearance():
    rng = np.random.default_rng(0)
    d = diamond_square(100, rng)
    assert d.shape == (100, 100) and d.min() == 0 and d.max() == 1
    assert abs(np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]) > 0.8  # spatially correlated dirt
    h = np.zeros((96, 96), np.float32)
    ids = np.zeros((96, 96), np.uint16)
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 < 20 ** 2
    ids[disc] = 1
    h[disc] = 2 * np.sqrt(np.clip(20 ** 2 - (yy - 48) ** 2 - (xx - 48) ** 2, 0, None))[disc]
    se1 = se_image(h, ids, 2.0, np.random.default_rng(3))
    se2 = se_image(h, ids, 2.0, np.random.default_rng(3))
    assert np.array_equal(se1, se2)
    assert se1[disc].mean() > se1[~disc].mean() + 0.1  # bright particle on a darker substrate
    rim = disc & ((yy - 48) ** 2 + (xx - 48) ** 2 > 16 ** 2)
    assert se1[rim].mean() > se1[disc & ~rim].mean()  # edge brightening
    t = transmission_image(h, np.random.default_rng(1))
    assert t[disc].mean() < t[~disc].mean() - 0.2  # dark particle in bright field
    centre = (yy - 48) ** 2 + (xx - 48) ** 2 < 5 ** 2
    assert t[centre].mean() < t[rim].mean()  # thicker = darker (Beer-Lambert)
    n = noisy_height(np.zeros((200, 200), np.float32), np.random.default_rng(0))
    assert n.std() == pytest.approx(0.01, rel=0.05)


def test_se_image_contact_rim_dims_only_the_outlines_between_particles():
    """``contact_rim`` (#16): the edge brightening along an outline where two particles meet is weighted down; the
    outline against the substrate and every random draw stay as they were (c = 1 is the old image exactly)."""
    ids = np.zeros((96, 96), np.int32)
    ids[24:72, 16:48], ids[24:72, 48:80] = 1, 2  # two grains touching along column 48
    h = np.where(ids > 0, 50.0, 0.0)
    old = se_image(h, ids, 2.0, np.random.default_rng(5))
    same = se_image(h, ids, 2.0, np.random.default_rng(5), contact_rim=1.0)
    dim = se_image(h, ids, 2.0, np.random.default_rng(5), contact_rim=0.0)
    assert np.array_equal(old, same)
    contact = (slice(36, 60), slice(46, 50))  # along the contact, far from the substrate
    outer = (slice(36, 60), slice(17, 20))  # along the left grain's outline against the substrate
    assert dim[contact].mean() < old[contact].mean() - 0.03
    assert abs(dim[outer].mean() - old[outer].mean()) < 0.01
    with pytest.raises(ValueError, match="contact_rim"):
        se_image(h, ids, 2.0, np.random.default_rng(5), contact_rim=1.5)
