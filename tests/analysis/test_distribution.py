"""Size statistics (ISO 9276 conventions): known answers."""

import math

import numpy as np
import pytest

from semforge.analysis._distribution import (bootstrap_ci, cumulative_curve, density_histogram, distribution_summary,
                                             effective_count, fit_distributions, min_count_for_quantile,
                                             plot_distribution, quantile_label, weighted_quantile)


def test_number_quantiles_are_hazen_percentiles():
    x = np.random.default_rng(0).lognormal(4, 0.5, 101)
    for p in (0.1, 0.5, 0.9):
        assert weighted_quantile(x, p) == pytest.approx(np.percentile(x, 100 * p, method="hazen"))
    assert weighted_quantile([1, 2, 3, 4], 0.5) == 2.5
    assert weighted_quantile([3.0], 0.9) == 3.0


def test_volume_median_of_lognormal_follows_hatch_choate():
    """Number log-normal(mu, s) -> volume distribution log-normal(mu + 3 s^2, s)."""
    mu, s = math.log(200.0), 0.3
    x = np.random.default_rng(1).lognormal(mu, s, 200_000)
    assert weighted_quantile(x, 0.5) == pytest.approx(200.0, rel=0.01)
    assert weighted_quantile(x, 0.5, weighting="volume") == pytest.approx(math.exp(mu + 3 * s * s), rel=0.01)
    assert quantile_label(0.5, "volume") == "x50,3" and quantile_label(0.1, "number") == "x10,0"


def test_volume_weights_by_hand():
    # sizes 1 and 2: volumes 1 and 8 -> midpoints 1/18 and 10/18
    assert weighted_quantile([1.0, 2.0], 0.5, weighting="volume") == pytest.approx(1 + (0.5 - 1 / 18) / (9 / 18))
    assert effective_count([1.0, 2.0], "volume") == pytest.approx(81 / 65)
    assert effective_count([1.0, 2.0, 3.0]) == 3


def test_minimum_counts_rule():
    assert [min_count_for_quantile(p) for p in (0.05, 0.1, 0.5, 0.9, 0.95)] == [59, 29, 6, 29, 59]
    for n, p in ((29, 0.1), (6, 0.5)):
        assert 1 - p**n - (1 - p) ** n >= 0.95 > 1 - p ** (n - 1) - (1 - p) ** (n - 1)


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(2)
    widths = []
    for n in (50, 800):
        x = rng.lognormal(math.log(100), 0.4, n)
        lo, hi = bootstrap_ci(x, np.median, n_boot=1000)
        assert lo < 100 < hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(n): 4x narrower for 16x the particles
    assert bootstrap_ci(x, np.median, n_boot=500, seed=5) == bootstrap_ci(x, np.median, n_boot=500, seed=5)


def test_fits_recover_parameters_and_prefer_the_right_family():
    x = np.random.default_rng(3).lognormal(math.log(150), 0.5, 3000)
    f = fit_distributions(x)
    assert f["lognormal"]["median"] == pytest.approx(150, rel=0.03)
    assert f["lognormal"]["geometric_sd"] == pytest.approx(math.exp(0.5), rel=0.03)
    assert f["lognormal"]["ks_p"] > 0.01 and f["normal"]["ks_p"] < 1e-6
    assert f["lognormal"]["aic"] < f["normal"]["aic"]
    y = np.random.default_rng(4).normal(300, 20, 3000)
    g = fit_distributions(y)
    assert g["normal"]["mean"] == pytest.approx(300, rel=0.01) and g["normal"]["sd"] == pytest.approx(20, rel=0.05)


def test_curves():
    x, q = cumulative_curve([3, 1, 2])
    assert x.tolist() == [1, 2, 3] and q.tolist() == pytest.approx([1 / 3, 2 / 3, 1])
    x, q = cumulative_curve([1, 2], weighting="volume")
    assert q.tolist() == pytest.approx([1 / 9, 1])
    edges, dens = density_histogram(np.random.default_rng(5).lognormal(3, 0.4, 500))
    assert len(edges) == len(dens) + 1 == 11
    assert float((dens * np.diff(np.log(edges))).sum()) == pytest.approx(1.0)


def test_summary_labels_and_warns_below_the_count(tmp_path):
    x = np.random.default_rng(6).lognormal(math.log(200), 0.3, 20)
    s = distribution_summary(x, n_boot=300)
    labels = [q["label"] for q in s["quantiles"]]
    assert labels == ["x10,0", "x50,0", "x90,0", "x10,3", "x50,3", "x90,3"]
    assert all(q["ci_low"] <= q["value"] <= q["ci_high"] for q in s["quantiles"])
    assert s["mean_ci"][0] < s["mean"] < s["mean_ci"][1]
    # 20 particles: x10/x90 by number need 29, and by volume the effective number is smaller still
    assert any(w.startswith("x10,0 of ecd (number-weighted) needs at least 29 particles") for w in s["warnings"])
    assert not any(w.startswith("x50,0") for w in s["warnings"])
    assert any(w.startswith("x90,3") for w in s["warnings"])
    big = distribution_summary(np.random.default_rng(7).lognormal(5, 0.2, 400), weightings=("number",), n_boot=200)
    assert big["warnings"] == []
    plot_distribution(s, x, str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_shape_class_counts_per_image_and_pooled():
    from semforge.analysis._distribution import shape_class_counts

    parts = ([{"image": "a", "shape": "sphere", "excluded": False}] * 3
             + [{"image": "a", "shape": "unknown", "excluded": False}]
             + [{"image": "b", "shape": "rod", "excluded": False}] * 2
             + [{"image": "b", "shape": "sphere", "excluded": True}])
    c = shape_class_counts(parts)
    assert c["all"] == {"sphere": 3, "rod": 2, "unknown": 1} and list(c["all"]) == ["sphere", "rod", "unknown"]
    assert c["a"] == {"sphere": 3, "unknown": 1} and c["b"] == {"rod": 2}


def test_bootstrap_in_blocks_gives_the_same_interval_with_bounded_memory(monkeypatch):
    """The resamples are drawn a block of rows at a time: the same interval as one (n_boot, N) draw, and the
    indices held at once stay under the block size (50,000 particles: ~64 MB peak instead of ~1.6 GB)."""
    import tracemalloc

    import semforge.analysis._distribution as d

    x = np.random.default_rng(1).lognormal(5, 0.3, 3000)
    blocked = d.bootstrap_ci(x, np.median, n_boot=300)
    monkeypatch.setattr(d, "_BOOT_BLOCK", 10**12)  # one draw of every resample
    assert d.bootstrap_ci(x, np.median, n_boot=300) == blocked
    monkeypatch.setattr(d, "_BOOT_BLOCK", 7 * x.size + 1)  # blocks of 7 rows, the last one short
    assert d.bootstrap_ci(x, np.median, n_boot=300) == blocked
    monkeypatch.undo()
    y = np.random.default_rng(2).lognormal(5, 0.3, 50_000)
    tracemalloc.start()
    d.bootstrap_ci(y, np.median, n_boot=400)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100e6  # one draw: 400 x 50,000 int64 = 160 MB of indices alone; here 32 MB blocks
