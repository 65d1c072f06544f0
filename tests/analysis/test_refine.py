"""Known-answer tests of the gray-level boundary refinement (analysis/_refine.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from semforge.analysis._refine import particle_thresholds, refine_boundaries, refine_separation

R = 15.0
CY, CX = 40.3, 39.6


def _disk_image(dark: bool, *, shape=(80, 80), blur=1.5, noise=0.02, seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - CY, xx - CX)
    step = ndi.gaussian_filter((r <= R).astype(float), blur)
    g = 0.8 - 0.6 * step if dark else 0.2 + 0.6 * step
    return g + np.random.default_rng(seed).normal(0, noise, g.shape), r


def _radius(mask: np.ndarray) -> float:
    return float(np.sqrt(mask.sum() / np.pi))


def _far_from_outlines(lab: np.ndarray, band: int) -> np.ndarray:
    """Pixels farther than ``band`` (+1 for the pixel grid) from every pixel where the label changes."""
    edge = np.zeros(lab.shape, bool)
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:-1] |= lab[:-1] != lab[1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return ndi.distance_transform_edt(~edge) > band + 1


@pytest.mark.parametrize("dark", [True, False])
@pytest.mark.parametrize("error_px", [-2, 2])
def test_blurred_disk_comes_back_to_its_radius(dark, error_px):
    g, r = _disk_image(dark)
    true_radius = _radius(r <= R)
    lab = (r <= R + error_px).astype(np.int32) * 5
    assert abs(_radius(lab > 0) - true_radius) > 1.5  # the network-like outline is off by ~2 px
    out = refine_boundaries(lab, g, dark=dark, band_px=3)
    assert set(np.unique(out)) == {0, 5}
    assert abs(_radius(out == 5) - true_radius) < 0.5
    # the wrong polarity does not find the edge (the test is not trivially passed)
    wrong = refine_boundaries(lab, g, dark=not dark, band_px=3)
    assert abs(_radius(wrong == 5) - true_radius) > 1.0


def test_otsu_variant_finds_the_edge_of_a_too_small_outline():
    g, r = _disk_image(True)
    out = refine_boundaries((r <= R - 2).astype(np.int32), g, dark=True, band_px=3, method="otsu")
    assert abs(_radius(out == 1) - _radius(r <= R)) < 0.5


def test_thresholds_lie_midway_between_core_and_ring():
    g, r = _disk_image(True, noise=0.0)
    thr = particle_thresholds((r <= R).astype(np.int32), g, band_px=2)
    assert np.isnan(thr[0])
    assert thr[1] == pytest.approx(0.5, abs=0.02)  # core 0.2, ring 0.8


def _two_touching_disks():
    yy, xx = np.mgrid[:70, :110]
    a = np.hypot(yy - 35, xx - 35) <= 14
    b = np.hypot(yy - 35, xx - 62.5) <= 14  # overlaps a: one dark agglomerate
    c = np.hypot(yy - 12, xx - 95) <= 6
    truth = np.zeros(a.shape, np.int32)
    truth[a], truth[b & ~a], truth[c] = 1, 2, 3
    g = 0.85 - 0.6 * ndi.gaussian_filter((truth > 0).astype(float), 1.2)
    g += np.random.default_rng(1).normal(0, 0.02, g.shape)
    # network-like labels: outlines 2 px inside, the separation line where the network put it, odd ids
    shrunk = np.where(ndi.binary_erosion(truth > 0, iterations=2), truth, 0)
    net = np.select([shrunk == 1, shrunk == 2, shrunk == 3], [7, 3, 12], 0).astype(np.int32)
    return g, truth, net


def test_instances_keep_their_ids_no_merge_no_new_object():
    g, truth, net = _two_touching_disks()
    g0, net0 = g.copy(), net.copy()
    out = refine_boundaries(net, g, dark=True, band_px=3)
    assert np.array_equal(g, g0) and np.array_equal(net, net0)  # inputs untouched
    assert out.dtype == np.int32 and out.shape == net.shape
    assert set(np.unique(out)) == set(np.unique(net)) == {0, 3, 7, 12}
    for k in (3, 7, 12):
        _, n = ndi.label(out == k)
        assert n == 1  # one connected piece each
        assert ((out != k) & (out > 0) & (net == k)).sum() == 0  # no pixel changes hands between instances
    # each instance stays on its own particle: identity by majority overlap with the true particles
    for k, t in ((7, 1), (3, 2), (12, 3)):
        assert np.bincount(truth[out == k], minlength=4).argmax() == t
    # and the outlines moved out to the true ones
    assert ((out > 0) == (truth > 0)).mean() > ((net > 0) == (truth > 0)).mean()
    iou = ((out > 0) & (truth > 0)).sum() / ((out > 0) | (truth > 0)).sum()
    assert iou > 0.95


def test_nothing_outside_the_band_changes():
    g, _, net = _two_touching_disks()
    # distractors: a dark blob 6 px from an outline (outside a 3-px band) and a bright spot in a core
    g = g.copy()
    g[30:34, 88:92] = 0.1
    g[33:36, 33:36] = 0.95
    for band in (1, 2, 3):
        out = refine_boundaries(net, g, dark=True, band_px=band)
        far = _far_from_outlines(net, band)
        assert np.array_equal(out[far], net[far])
        assert (out[30:34, 88:92] == 0).all()


def test_a_dark_speck_in_the_band_but_not_touching_any_particle_stays_background():
    g, r = _disk_image(True, noise=0.0)
    lab = (r <= R).astype(np.int32)
    g = g.copy()
    yy, xx = np.mgrid[: g.shape[0], : g.shape[1]]
    ring = (np.hypot(yy - CY, xx - CX) > R + 2.5) & (np.hypot(yy - CY, xx - CX) <= R + 3)
    g[ring] = 0.1  # dark, within the band, separated from the disk by bright pixels
    out = refine_boundaries(lab, g, dark=True, band_px=3)
    assert (out[ring] == 0).all()


def test_a_particle_thinner_than_the_band_does_not_vanish():
    g = np.full((40, 40), 0.8)
    lab = np.zeros((40, 40), np.int32)
    lab[18:21, 5:35] = 4  # 3 px wide, band 3
    g[18:21, 5:35] = 0.85  # brighter than its ring: wrong polarity, every pixel fails the gray test
    g[10, 10] = 0.5
    out = refine_boundaries(lab, g, dark=True, band_px=3)
    assert (out == 4).sum() >= 1
    assert set(np.unique(out)) == {0, 4}


def test_a_particle_without_contrast_is_left_as_it_is():
    rng = np.random.default_rng(3)
    g = 0.5 + 0.0 * rng.normal(size=(50, 50))
    lab = np.zeros((50, 50), np.int32)
    lab[15:35, 15:35] = 2
    assert np.isnan(particle_thresholds(lab, g)[2])
    assert np.array_equal(refine_boundaries(lab, g, dark=False, band_px=2), lab)


def test_band_zero_and_empty_labels_are_identity():
    g, r = _disk_image(False)
    lab = (r <= R - 2).astype(np.int32)
    assert np.array_equal(refine_boundaries(lab, g, dark=False, band_px=0), lab)
    empty = np.zeros_like(lab)
    assert np.array_equal(refine_boundaries(empty, g, dark=False, band_px=2), empty)


@pytest.mark.parametrize("kw, msg", [
    (dict(labels=np.zeros((5, 5), np.int32), gray=np.zeros((5, 6))), "differ in size"),
    (dict(labels=np.zeros((5, 5), np.float32), gray=np.zeros((5, 5))), "integers"),
    (dict(labels=-np.ones((5, 5), np.int32), gray=np.zeros((5, 5))), ">= 0"),
    (dict(labels=np.zeros((5, 5), np.int32), gray=np.zeros((5, 5)), band_px=-1), "band_px"),
    (dict(labels=np.zeros((5, 5), np.int32), gray=np.zeros((5, 5)), band_px=1.5), "band_px"),
    (dict(labels=np.zeros((5, 5), np.int32), gray=np.zeros((5, 5)), method="canny"), "unknown refinement"),
    (dict(labels=np.zeros((5, 5), np.int32), gray=np.zeros((5, 5)), level=1.0), "level"),
    (dict(labels=np.zeros((5, 5, 2), np.int32), gray=np.zeros((5, 5, 2))), "2-D"),
])
def test_bad_input_is_a_clear_error(kw, msg):
    with pytest.raises(ValueError, match=msg):
        refine_boundaries(dark=True, **kw)


def test_a_particle_with_no_free_ring_keeps_its_outline():
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 30, xx - 30)
    lab = np.where(r <= 8, 2, np.where(r <= 20, 1, 0)).astype(np.int32)  # 2 is enclosed by 1: no background ring
    g = np.where(r <= 6, 0.1, np.where(r <= 22, 0.5, 0.9))  # 2 is drawn too large; 1 too small
    thr = particle_thresholds(lab, g, band_px=2)
    assert np.isnan(thr[2]) and np.isfinite(thr[1])
    out = refine_boundaries(lab, g, dark=True, band_px=2)
    assert np.array_equal(out == 2, lab == 2)
    assert (out == 1).sum() > (lab == 1).sum()  # 1 grew out to its edge at r = 22


def test_agglomerate_scope_shares_one_threshold_and_finds_the_edges():
    g, truth, net = _two_touching_disks()
    per = particle_thresholds(net, g, band_px=3)
    agg = particle_thresholds(net, g, band_px=3, scope="agglomerate")
    assert agg[7] == agg[3] != agg[12]  # 7 and 3 touch, 12 stands alone
    assert agg[12] == pytest.approx(per[12])
    out = refine_boundaries(net, g, dark=True, band_px=3, scope="agglomerate")
    assert set(np.unique(out)) == {0, 3, 7, 12}
    iou = ((out > 0) & (truth > 0)).sum() / ((out > 0) | (truth > 0)).sum()
    assert iou > 0.95
    with pytest.raises(ValueError, match="scope"):
        refine_boundaries(net, g, dark=True, scope="image")


def test_refine_separation_rebuilds_the_instances_of_a_separation():
    from semforge.analysis._separate import separate

    g, truth, _ = _two_touching_disks()
    mask = ndi.binary_erosion(truth > 0, iterations=2)  # network-like: 2 px inside
    sep = separate(mask, mode="watershed")
    out = refine_separation(sep, g, dark=True, band_px=3)
    assert out.labels.dtype == sep.labels.dtype and out.mode == "watershed"
    assert len(out.instances) == len(sep.instances) == 3
    for k, (a, b) in enumerate(zip(sep.instances, out.instances), start=1):
        assert b.separated == a.separated
        assert np.array_equal(out.labels[b.box] == k, b.mask)
        assert b.mask.sum() > a.mask.sum()  # every outline moved out to the edge
    assert refine_separation(sep, g, dark=True, band_px=0) is sep
    with pytest.raises(ValueError, match="differ in size"):
        refine_separation(sep, g[:-1], dark=True, band_px=0)
