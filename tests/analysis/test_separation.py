"""Cleaning and separation (UECS, watershed, none)."""

import numpy as np
import pytest
from skimage.draw import disk

from semforge.analysis import Calibration, MeasureOptions, clean_mask, measure_mask, separate


def two_touching(r=20, gap=-2):
    m = np.zeros((80, 130), bool)
    m[disk((40, 35), r, shape=m.shape)] = True
    m[disk((40, 35 + 2 * r + gap), r, shape=m.shape)] = True
    return m


@pytest.mark.parametrize("mode", ["uecs", "watershed"])
def test_two_overlapping_discs_are_split(mode):
    sep = separate(two_touching(), mode=mode)
    assert len(sep.instances) == 2
    assert all(i.separated for i in sep.instances)
    areas = sorted(int(i.mask.sum()) for i in sep.instances)
    # each regrown disc close to the true disc area (UECS regrows into the overlap too)
    assert areas[0] == pytest.approx(np.pi * 20**2, rel=0.15)
    assert sep.labels.max() == 2


def test_uecs_regrows_overlap_to_full_disc():
    sep = separate(two_touching(gap=-4), mode="uecs")
    assert len(sep.instances) == 2
    # overlapping particles keep their full outline: their masks share pixels
    total = sum(int(i.mask.sum()) for i in sep.instances)
    assert total > int((sep.labels > 0).sum())


def test_strong_overlap_above_convexity_threshold_stays_one_particle():
    # the limitation named by Gumbiowski et al.: a nearly convex union is not split
    sep = separate(two_touching(gap=-10), mode="uecs")
    assert len(sep.instances) == 1 and not sep.instances[0].separated


def test_none_mode_keeps_one_region_and_flags_it():
    res = measure_mask(two_touching(), options=MeasureOptions(separate="none"))
    assert len(res.particles) == 1
    p = res.particles[0]
    assert p["overlap_suspected"] and p["convexity"] < 0.95 and not p["separated"]


def test_convex_particles_are_untouched():
    m = np.zeros((60, 60), bool)
    m[disk((30, 30), 20, shape=m.shape)] = True
    for mode in ("uecs", "watershed", "none"):
        sep = separate(m, mode=mode)
        assert len(sep.instances) == 1 and not sep.instances[0].separated
        assert (sep.labels > 0).sum() == m.sum()


def test_small_markers_are_discarded_and_region_kept_excluded():
    # a thin C-shaped arc: eroding never yields a convex marker >= 30 px
    m = np.zeros((60, 60), bool)
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 30, xx - 30)
    m[(r > 18) & (r < 22) & (xx < 40)] = True
    res = measure_mask(m, options=MeasureOptions(separate="uecs"))
    assert len(res.particles) >= 1
    assert all(p["excluded"] for p in res.particles)
    assert {p["exclude_reason"] for p in res.particles} <= {"not_separable", "nonconvex_after_uecs"}


def test_clean_mask_removes_speckles_and_fills_holes():
    m = np.zeros((50, 50), bool)
    m[10:30, 10:30] = True
    m[18:20, 18:20] = False  # 4-px hole
    m[40, 40] = True  # speckle
    before = m.copy()
    c = clean_mask(m, min_area_px=10, max_hole_area_px=10)
    assert (m == before).all()
    assert c[18:20, 18:20].all() and not c[40, 40]


def test_border_particles_are_excluded_and_data_bar_is_a_border():
    m = np.zeros((100, 100), bool)
    m[0:10, 40:60] = True  # touches the top
    m[40:60, 40:60] = True  # inside
    m[75:80, 10:30] = True  # touches the last specimen row (80)
    res = measure_mask(m, specimen_rows=80, calibration=Calibration(2.0, "user"))
    reasons = sorted(p["exclude_reason"] for p in res.particles)
    assert reasons == ["", "border", "border"]
    assert res.labels.shape == (100, 100) and res.labels[80:].max() == 0


def test_calibration_scales_lengths():
    m = np.zeros((60, 60), bool)
    m[disk((30, 30), 15, shape=m.shape)] = True
    ra = measure_mask(m, calibration=Calibration(None, "none"))
    rb = measure_mask(m, calibration=Calibration(3.0, "user"))
    a, b = ra.particles[0], rb.particles[0]
    # the unit is on the table; the file columns carry it in their names
    assert ra.unit == "px" and rb.unit == "nm"
    assert "ecd_px" in ra.columns and "area_px2" in ra.columns and "ecd_nm" in rb.columns and "area_nm2" in rb.columns
    assert b["ecd"] == pytest.approx(3.0 * a["ecd"])
    assert b["area"] == pytest.approx(9.0 * a["area"])
    assert b["circularity"] == pytest.approx(a["circularity"])


def test_bad_options_raise():
    m = np.zeros((10, 10), bool)
    with pytest.raises(ValueError, match="valid: uecs"):
        separate(m, mode="magic")
    with pytest.raises(ValueError, match="modality"):
        measure_mask(m, options=MeasureOptions(modality="xray"))
    with pytest.raises(ValueError):
        measure_mask(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError):
        measure_mask(m, specimen_rows=0)


def test_synthetic_image_ground_truth_recovered(sample_tiff):
    """A synthetic SE image with known ellipses: count and median ECD recovered through the in-process path."""
    from semforge.inference import create_segmenter
    from semforge.pipeline import AnalysisOptions, LocalStages, analyze_image

    path, truth = sample_tiff
    out = analyze_image(LocalStages(create_segmenter("classical")), path, "s", AnalysisOptions())
    prep, res = out.prepared, out.measured.table
    assert prep.calibration.pixel_size_nm == pytest.approx(2.5)
    assert prep.specimen_rows == truth.shape[0] - 56
    n_true = int(truth.max())
    assert abs(len(res.particles) - n_true) <= 2
    true_ecd = np.median([np.sqrt(4 * (truth == k).sum() / np.pi) * 2.5 for k in range(1, n_true + 1)])
    got = np.median([p["ecd"] for p in res.particles])
    assert got == pytest.approx(true_ecd, rel=0.05)
