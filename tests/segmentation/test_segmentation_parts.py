"""Known answers for weight maps, targets, tiling and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest

from semforge.analysis import average_precision, pixel_metrics, rand_error
from semforge.inference.tiling import combine, predict_tiled
from semforge.training.segmentation.data import PatchSampler, Pair, narrow_gaps, touching_gaps, weight_map


def two_squares(gap: int) -> np.ndarray:
    ids = np.zeros((60, 80), np.int32)
    ids[20:40, 10:30] = 1
    ids[20:40, 30 + gap:50 + gap] = 2
    return ids


def test_weight_map_equation_1():
    ids = two_squares(6)
    w = weight_map(ids, w0=10, sigma=7)
    # background pixel in the middle of the 6-px gap: d1 = d2 = 3 (distance to the nearest pixel of each)
    # columns 30..35 are background; pixel column 32 has d1 = 3 (to col 29), d2 = 4 (to col 36)
    assert w[30, 32] == pytest.approx(1 + 10 * np.exp(-(3 + 4) ** 2 / (2 * 49)), rel=1e-5)
    assert w[30, 20] == 1.0  # particles weigh 1
    assert w[2, 2] == pytest.approx(1.0, abs=1e-3)  # far from both
    one = np.where(ids == 1, 1, 0)
    assert np.allclose(weight_map(one), 1.0)  # a single particle has no second neighbour
    wi = weight_map(ids, gamma=2.0, intensity=np.full(ids.shape, 0.5, np.float32) + (ids > 0) * 0.5)
    assert wi[2, 2] == pytest.approx(1.0, abs=1e-3)  # normalized intensity 0 on this background


def test_gaps_between_touching_particles():
    ids = two_squares(0)
    g = touching_gaps(ids)
    assert g[20:40, 29:31].all() and g.sum() == 40  # two columns along the contact line
    n = narrow_gaps(two_squares(2))
    assert n[20:40, 30:32].all() and not n[5, 5]


def test_patch_sampler_targets_and_augmentation_shapes():
    rng = np.random.default_rng(0)
    ids = np.zeros((300, 300), np.int32)
    ids[100:140, 100:140] = 1
    ids[100:140, 140:180] = 2
    img = np.clip((ids > 0) * 0.6 + 0.2 + rng.normal(0, 0.02, ids.shape), 0, 1).astype(np.float32)
    s = PatchSampler([Pair("x", img, ids)], patch=128, border_channel=True, seed=1)
    x, y, w = s.sample(6)
    assert x.shape == (6, 1, 128, 128) and y.shape == (6, 2, 128, 128) and w.shape == (6, 128, 128)
    assert set(np.unique(y)) <= {0.0, 1.0} and w.min() >= 1.0 and w.max() <= 11.0 + 1e-5
    assert not (y[:, 0].astype(bool) & y[:, 1].astype(bool)).any()  # gaps are never particle
    s2 = PatchSampler([Pair("x", img, ids)], patch=128, border_channel=True, seed=1)
    assert np.array_equal(s2.sample(6)[0], x)  # seeded


@pytest.mark.parametrize("shape", [(100, 130), (700, 1000), (2100, 1700)])
def test_tiling_is_seamless(shape):
    rng = np.random.default_rng(0)
    g = rng.random(shape).astype(np.float32)
    calls = []

    def run(batch):  # a position-independent "network": channel 0 = input, channel 1 = 1 - input
        calls.append(batch.shape)
        assert batch.shape[2] % 32 == 0 and batch.shape[3] % 32 == 0
        return np.concatenate([batch, 1 - batch], axis=1)

    out = predict_tiled(run, g, tile=512, overlap=64, max_side=1024)
    assert out.shape == (2,) + shape
    np.testing.assert_allclose(out[0], g, atol=1e-6)
    np.testing.assert_allclose(combine(out), g * g, atol=1e-6)
    if max(shape) > 1024:
        assert all(c[2:] == (512, 512) for c in calls) and len(calls) > 1  # bounded tiles


def test_pixel_metrics_rand_error_and_ap():
    t = np.zeros((10, 10), int)
    t[2:6, 2:6] = 1  # 16 px
    p = np.zeros((10, 10), int)
    p[2:6, 2:8] = 1  # 24 px, 16 overlap
    m = pixel_metrics(p, t)
    assert m["iou"] == pytest.approx(16 / 24) and m["precision"] == pytest.approx(16 / 24) and m["recall"] == 1
    assert m["pixel_error"] == pytest.approx(8 / 100)
    assert rand_error(t, t) == 0.0
    # splitting 16 px into 8 + 8: pairs that were together are now apart: 8*8 = 64 of C(100, 2)
    split = t.copy()
    split[2:6, 4:6] = 2
    assert rand_error(split, t) == pytest.approx(64 / (100 * 99 / 2))
    truth = np.zeros((20, 20), int)
    truth[1:5, 1:5], truth[10:14, 10:14] = 1, 2
    pred = np.zeros_like(truth)
    pred[1:5, 1:5] = 1  # exact
    pred[10:14, 10:13] = 2  # IoU 0.75
    pred[17:19, 17:19] = 3  # false positive
    ap = average_precision(pred, truth)
    assert ap["ap50"] == pytest.approx(2 / 3)
    # thresholds 0.5..0.7 (5): 2 TP, 1 FP -> 2/3; 0.75 is IoU 0.75 >= 0.75 -> still a match; 0.8..0.95 (4): 1 TP, 1 FN, 2 FP -> 1/4
    per = {round(th, 2): (tp, fp, fn) for th, tp, fp, fn in ap["per_threshold"]}
    assert per[0.8] == (1, 2, 1)
    assert ap["ap50_95"] == pytest.approx((6 * 2 / 3 + 4 * 1 / 4) / 10)


def test_se_grains_recipe_draws_small_clustered_grains():
    """Recipe `se-grains` (#16): small primary grains (median ECD about 115 nm, the merged range of the real SEM
    images) in dense agglomerates, three densities, valid specs."""
    from semforge.training.scenes.spec import sample_particles
    from semforge.training.segmentation.recipes import recipe_datasets

    sets = recipe_datasets("se-grains")
    assert [n for n, _, _ in sets] == ["se-grains-n150", "se-grains-n300", "se-grains-n500"]
    name, spec, scenes = sets[0]
    assert scenes == 12 and spec.cluster == 0.9 and spec.pixel_size_nm == 7.344
    sizes = np.array([p.size_nm for p in sample_particles(spec)])
    assert len(sizes) == 150 and 95 < np.median(sizes) < 135 and (sizes < 100).mean() > 0.25
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_datasets("se-grain")


def test_se_piles_recipe_mixes_large_and_small_grains():
    """Recipe `se-piles` (#16, round 4): large (~190 nm) and small (~115 nm) grains together in dense piles."""
    from semforge.training.scenes.spec import sample_particles
    from semforge.training.segmentation.recipes import recipe_datasets

    sets = recipe_datasets("se-piles")
    assert [n for n, _, _ in sets] == ["se-piles-n300", "se-piles-n600", "se-piles-n900"]
    _, spec, scenes = sets[2]
    assert scenes == 12 and spec.cluster == 0.95 and spec.particles == 900
    sizes = np.array([p.size_nm for p in sample_particles(spec)])
    assert len(sizes) == 900 and (sizes < 130).mean() > 0.3 and (sizes > 180).mean() > 0.25
