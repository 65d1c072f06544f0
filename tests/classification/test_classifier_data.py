"""Crops as the seed cuts them, and classes from rendered scenes (real Blender, shipped segmenter)."""

from __future__ import annotations

import numpy as np
import pytest

from semforge.classification import CLASSES, COVERED_BELOW, SHAPE_TO_CLASS, extract_crops
from semforge.classification.classes import modality_set
from semforge.classification.data import label_regions, scene_crops


def _scene():
    gray = np.zeros((100, 120), np.float32)
    lab = np.zeros((100, 120), np.int32)
    lab[40:50, 20:50] = 1  # 10 x 30 rectangle
    lab[40:50, 50:60] = 2  # touching neighbour
    lab[0:8, 0:8] = 3  # in the corner
    gray[lab > 0] = 0.8
    return gray, lab


def test_crop_keeps_aspect_centres_the_box_and_marks_neighbours():
    gray, lab = _scene()
    x = extract_crops(gray, lab, [1], size=48, margin=0.25)
    assert x.shape == (1, 2, 48, 48) and x.dtype == np.float32
    m = x[0, 1]
    rows, cols = np.nonzero(m == 1.0)
    h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
    # box 10 x 30 px, window 30 + 2 * 7.5 = 45 px -> 48 px: 32 x 10.7 px, aspect 3 kept
    assert abs(w - 32) <= 1 and abs(h - 10.7) <= 1.2
    assert abs((rows.mean() + 0.5) - 24) < 1 and abs((cols.mean() + 0.5) - 24) < 1
    assert (m == 0.5).any()  # the touching neighbour, to the right
    assert cols[m[rows, cols] == 1].max() < np.nonzero(m == 0.5)[1].min()
    # gray channel normalised over the window
    assert abs(float(x[0, 0].mean())) < 1e-4


def test_crop_zero_pads_outside_the_image():
    gray, lab = _scene()
    gray += 0.3  # background not zero: padding must still be exactly zero
    x = extract_crops(gray, lab, [3], size=32)
    # the corner particle's window reaches past the top-left corner: those samples are 0 in both channels
    assert np.all(x[0, :, 0, :] == 0) and np.all(x[0, :, :, 0] == 0)
    assert (x[0, 1] == 1).sum() > 0 and np.any(x[0, 0] != 0)


def test_crop_errors_are_clear():
    gray, lab = _scene()
    with pytest.raises(ValueError, match="no pixels"):
        extract_crops(gray, lab, [7])
    with pytest.raises(ValueError, match="same shape"):
        extract_crops(gray[:50], lab, [1])
    with pytest.raises(ValueError, match="size"):
        extract_crops(gray, lab, [1], size=4)


def test_regions_are_labelled_from_the_truth():
    truth = np.zeros((60, 60), np.int64)
    truth[5:15, 5:15] = 1   # cube, fully visible
    truth[5:15, 20:30] = 2  # sphere
    truth[5:15, 30:40] = 3  # sphere, touching 2
    truth[30:50, 5:25] = 4  # rod
    truth[30:40, 40:50] = 5  # covered sphere
    truth[50:60, 50:60] = 6  # cut by the border
    parts = {1: {"shape": "cube", "visible_fraction": 1.0, "cut_by_border": False},
             2: {"shape": "sphere", "visible_fraction": 1.0, "cut_by_border": False},
             3: {"shape": "sphere", "visible_fraction": 0.95, "cut_by_border": False},
             4: {"shape": "short_rod", "visible_fraction": 1.0, "cut_by_border": False},
             5: {"shape": "sphere", "visible_fraction": COVERED_BELOW - 0.2, "cut_by_border": False},
             6: {"shape": "cube", "visible_fraction": 0.5, "cut_by_border": True}}
    pred = np.zeros_like(truth)
    pred[5:15, 5:15] = 1
    pred[5:15, 20:40] = 2  # 2 and 3 merged
    pred[30:50, 5:12] = 3  # a third of the rod: fragment
    pred[30:40, 40:50] = 4
    pred[50:60, 50:60] = 5
    pred[20:28, 40:48] = 6  # on the background
    out = label_regions(pred, truth, parts, "transmission")
    assert out == {1: "square", 2: "agglomerate", 3: "covered", 4: "covered"}
    assert label_regions(pred, truth, parts, "se")[1] == "cube"


def test_every_library_shape_has_a_class_in_both_sets():
    from semforge.scenes import SHAPES

    for s in ("se", "transmission"):
        assert set(SHAPE_TO_CLASS[s]) == set(SHAPES)
        assert set(SHAPE_TO_CLASS[s].values()) | {"covered", "agglomerate"} == set(CLASSES[s])
    assert modality_set("him") == "se" and modality_set("stem") == "transmission"
    with pytest.raises(ValueError, match="unknown modality"):
        modality_set("xray")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from semforge.scenes import SceneSpec, ShapeComponent, render_batch
    from semforge.storage import LocalStore

    out = tmp_path_factory.mktemp("render")
    comps = [ShapeComponent(s, 1, 36, 4) for s in ("sphere", "cube", "short_rod", "trigonal_plate")]
    spec = SceneSpec(particles=60, size_px=160, pixel_size_nm=2.0, seed=21, components=comps, frames=60, cluster=0.5)
    render_batch(spec, 1, LocalStore(out), "cls", workers=1)
    return out / "datasets" / "cls" / "scene_00000"


def test_crops_from_a_rendered_scene_ideal_and_segmented(rendered):
    import json

    from semforge.inference import create_segmenter

    info = json.loads((rendered / "scene.json").read_text())
    X, y, src = scene_crops(rendered, "tem")
    inner = [p for p in info["particles"] if not p["cut_by_border"] and p["visible_px"] >= 20]
    assert len(y) == len(inner) == X.shape[0] and set(src) == {"ideal"}
    want = ["covered" if p["visible_fraction"] < COVERED_BELOW else SHAPE_TO_CLASS["transmission"][p["shape"]]
            for p in sorted(inner, key=lambda p: p["id"])]
    assert y == want
    X2, y2, src2 = scene_crops(rendered, "tem", segmenter=create_segmenter("unetpp", threads=1))
    seg = [c for c, s in zip(y2, src2) if s == "segmented"]
    assert X2.shape[0] == len(y2) and len(seg) >= 0.6 * len(inner)  # the segmenter finds most particles
    assert set(seg) <= set(CLASSES["transmission"])


def test_report_shape_table_counts_classes_and_medians_measured_dimensions():
    from semforge.analysis._report import shape_table

    rows = [{"shape": "rod", "excluded": False, "rod_length": 10.0, "rod_thickness": 2.0},
            {"shape": "rod", "excluded": False, "rod_length": 20.0, "rod_thickness": 4.0},
            {"shape": "rod", "excluded": True, "rod_length": 90.0, "rod_thickness": 9.0},
            {"shape": "covered", "excluded": True},
            {"shape": "cube", "excluded": False, "edge_length": 5.0}]
    t = {r["shape"]: r for r in shape_table(rows)}
    assert set(t) == {"rod", "covered", "cube"}
    assert (t["rod"]["particles"], t["rod"]["measured"]) == (3, 2)
    assert t["rod"]["median_rod_length"] == 15.0 and t["rod"]["median_rod_thickness"] == 3.0
    assert np.isnan(t["rod"]["median_edge_length"]) and t["cube"]["median_edge_length"] == 5.0
    assert (t["covered"]["particles"], t["covered"]["measured"]) == (1, 0)
