"""Checks on the 20 real annotated SEM images (skipped when ../shared is absent)."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from semforge.analysis import MeasureOptions, load_image, match_instances, measure_mask

pytestmark = pytest.mark.realdata


def _pairs(bam, every=5):
    for p in sorted((bam / "images").glob("*.tif"))[::every]:
        hm = tifffile.imread(bam / "masks" / f"{p.stem}_m.tif")[:712] > 0
        yield load_image(p), hm


def test_human_masks_measured_like_an_independent_computation(bam):
    ours, theirs = [], []
    for img, hm in _pairs(bam):
        res = measure_mask(hm, calibration=img.calibration, options=MeasureOptions(separate="none"))
        for p in res.included():
            crop = res.labels[p["bbox_y0_px"]:p["bbox_y1_px"], p["bbox_x0_px"]:p["bbox_x1_px"]] == p["id"]
            rp = regionprops(crop.astype(np.uint8))[0]
            ours.append((p["ecd"], p["feret_max"]))
            theirs.append((rp.equivalent_diameter_area * 7.344, rp.feret_diameter_max * 7.344))
    ours, theirs = np.array(ours), np.array(theirs)
    assert len(ours) > 300
    assert np.median(ours[:, 0]) == pytest.approx(np.median(theirs[:, 0]), rel=1e-6)
    # max Feret: iso-line hull vs pixel-corner hull differ by under 1.5 px per particle
    assert np.all(np.abs(ours[:, 1] - theirs[:, 1]) < 1.5 * 7.344)


def test_separation_recovers_merged_human_instances(bam):
    """Regression guard for the figures in docs/realdata.md (issue: analysis core)."""
    f1 = {}
    for mode in ("none", "watershed", "uecs"):
        tp = fp = fn = 0
        for img, hm in _pairs(bam):
            truth = label(hm, connectivity=1)
            sizes = np.bincount(truth.ravel())
            truth[(sizes < 20)[truth]] = 0
            merged = hm | ndi.binary_closing(hm, structure=np.ones((3, 3)))
            r = measure_mask(merged, calibration=img.calibration, options=MeasureOptions(separate=mode, classify=False))
            m = match_instances(r.labels[:712], label(truth > 0, connectivity=1))
            tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        f1[mode] = 2 * tp / (2 * tp + fp + fn)
    assert f1["watershed"] > 0.55
    assert f1["uecs"] > 0.35
    assert f1["none"] < f1["uecs"] < f1["watershed"]
