"""Per-particle confidence of the segmentation network (#16): ``seg_confidence`` = mean over the particle's final
pixels of the combined probability ``p_particle * (1 - p_border)`` quantised to uint8 (``round(p * 255)``).
Known answers from probability maps with known values per particle; a classical segmenter and a bare mask give
none (empty cell / null, never 0); the table's JSON document and the object-store form keep it."""

import csv
import json

import numpy as np
import pytest

from semforge.analysis import (COLUMNS, Calibration, MeasureOptions, ParticleTable, measure_mask, particle_confidence,
                               particle_columns, quantize_probability, write_particles_csv)
from semforge.inference import Segmenter
from semforge.pipeline import AnalysisOptions, DataBar, LocalStages


def test_quantisation_is_round_p_times_255():
    p = np.array([[0.0, 1.0, 0.5, 0.8], [0.2, 0.6, -0.1, 1.3]], np.float32)
    q = quantize_probability(p)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, 255, 128, 204], [51, 153, 0, 255]]  # 127.5 -> 128 (float32 0.5 * 255), clipped
    assert quantize_probability(q) is q  # quantised already
    with pytest.raises(ValueError):
        quantize_probability(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="float"):  # an integer map other than uint8 is not a probability
        quantize_probability(np.array([[0, 65535]], np.uint16))


def test_particle_confidence_is_the_exact_mean():
    q = np.array([[204, 51], [153, 0]], np.uint8)
    assert particle_confidence(q, np.array([[1, 1], [1, 0]], bool)) == round((204 + 51 + 153) / 765, 4)
    assert particle_confidence(q, np.array([[1, 0], [0, 0]], bool)) == 0.8
    with pytest.raises(ValueError):
        particle_confidence(q, np.zeros((2, 2), bool))


def _two_squares():
    m = np.zeros((60, 80), bool)
    m[10:30, 10:30] = True  # 400 px
    m[35:55, 40:70] = True  # 600 px
    p = np.full(m.shape, 0.2, np.float32)
    p[10:30, 10:30] = 0.8
    p[35:55, 40:70] = 0.6
    p[35:45, 40:70] = 1.0  # the second particle: half 1.0, half 0.6
    return m, p


def test_known_answer_per_particle():
    m, p = _two_squares()
    res = measure_mask(m, probability=p, options=MeasureOptions(separate="none"))
    by_x = sorted(res.particles, key=lambda r: r["centroid_x_px"])
    assert [r["seg_confidence"] for r in by_x] == [0.8, 0.8]  # (300 * 255 + 300 * 153) / (600 * 255) = 0.8
    m2 = m.copy()
    p[12, 12] = 0.0  # one pixel of the first particle: (399 * 204 + 0) / (400 * 255)
    res = measure_mask(m2, probability=p, options=MeasureOptions(separate="none"))
    first = min(res.particles, key=lambda r: r["centroid_x_px"])
    assert first["seg_confidence"] == round(399 * 204 / (400 * 255), 4)
    # the same map quantised already gives the same numbers (what the measure service reads from the store)
    again = measure_mask(m2, probability=quantize_probability(p), options=MeasureOptions(separate="none"))
    assert [r["seg_confidence"] for r in again.particles] == [r["seg_confidence"] for r in res.particles]


def test_computed_on_the_final_pixels_after_growth():
    """Growth by 1 px adds a 4-neighbour ring of background pixels (0.2 -> 51) to each particle."""
    m, p = _two_squares()
    p[35:55, 40:70] = 0.6
    res = measure_mask(m, probability=p, options=MeasureOptions(separate="none", grow_px=1))
    for r, core, val in zip(sorted(res.particles, key=lambda r: r["centroid_x_px"]), (400, 600), (204, 153)):
        area = int(r["area"])
        assert area > core  # grown
        assert r["seg_confidence"] == round((core * val + (area - core) * 51) / (255 * area), 4)


def test_data_bar_rows_and_size_mismatch():
    m, p = _two_squares()
    res = measure_mask(m, probability=p, specimen_rows=32, options=MeasureOptions(separate="none"))
    assert [r["seg_confidence"] for r in res.particles] == [0.8]  # the second one is under the bar
    from semforge.errors import InvalidOption

    with pytest.raises(InvalidOption, match="probability"):
        measure_mask(m, probability=p[:-1])


def test_bare_mask_has_none_and_the_file_cell_is_empty(tmp_path):
    m, _ = _two_squares()
    res = measure_mask(m, calibration=Calibration(2.0, "user"))
    assert all(r["seg_confidence"] is None for r in res.particles)
    write_particles_csv(tmp_path / "p.csv", res.particles, res.unit)
    with open(tmp_path / "p.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["seg_confidence"] == "" for r in rows)


def test_column_position():
    """After the classification columns (shape ... edge_length), before excluded / exclude_reason."""
    assert COLUMNS.index("seg_confidence") == COLUMNS.index("edge_length") + 1 == COLUMNS.index("excluded") - 1
    cols = particle_columns("nm")
    assert cols[cols.index("edge_length_nm") + 1] == "seg_confidence" and cols[-2:] == ["excluded", "exclude_reason"]


def test_table_document_and_object_store_round_trip(tmp_path):
    from semforge.rpc.convert import get_probability, get_table, put_probability, put_table
    from semforge.storage import LocalStore

    m, p = _two_squares()
    with_conf = measure_mask(m, probability=p, calibration=Calibration(2.0, "user")).table
    without = measure_mask(m, calibration=Calibration(2.0, "user")).table
    store = LocalStore(tmp_path / "store")
    for t in (with_conf, without):
        doc = json.loads(json.dumps(t.to_doc()))
        assert ParticleTable.from_doc(doc).particles == t.particles
        back = get_table(store, put_table(store, t).key)
        assert [r["seg_confidence"] for r in back.particles] == [r["seg_confidence"] for r in t.particles]
    assert [r["seg_confidence"] for r in with_conf.particles] == [0.8, 0.8]
    assert [r["seg_confidence"] for r in without.particles] == [None, None]
    # a table written before the column existed reads back with none (the writers leave the cell empty)
    old = with_conf.to_doc()
    old["particles"] = [{k: v for k, v in r.items() if k != "seg_confidence"} for r in old["particles"]]
    assert all("seg_confidence" in r and r["seg_confidence"] is None for r in ParticleTable.from_doc(old).particles)
    # the segment service's PNG of the quantised map is lossless, and checked against the mask's size
    q = quantize_probability(p)
    info = put_probability(store, q)
    assert np.array_equal(get_probability(store, info.key, q.shape), q)
    from semforge.errors import InvalidOption

    with pytest.raises(InvalidOption, match="probability"):
        get_probability(store, info.key, (10, 10))


class TwoChannelNet(Segmenter):
    """A 'network' with particle and border channels fixed by the gray level: bright pixels p_particle 1.0 and
    p_border 0.2 (combined 0.8), mid-gray 0.6 / 0 (0.6), background 0.1 / 0."""

    name = "two-channel"
    reports_confidence = True

    def channels(self, gray, *, modality="se"):
        g = np.asarray(gray, np.float32)
        part = np.where(g > 0.8, 1.0, np.where(g > 0.4, 0.6, 0.1)).astype(np.float32)
        border = np.where(g > 0.8, 0.2, 0.0).astype(np.float32)
        return np.stack([part, border])

    def predict(self, gray, *, modality="se"):
        c = self.channels(gray)
        return c[0] * (1 - c[1])


class PlainMap(TwoChannelNet):
    """The same probabilities without per-particle confidence (as the classical segmenter)."""

    name = "plain-map"
    reports_confidence = False


def _image(tmp_path):
    import tifffile

    g = np.full((80, 100), 20, np.uint8)
    g[10:30, 10:30] = 250  # bright: combined 0.8
    g[45:65, 50:80] = 160  # mid-gray: 0.6
    tifffile.imwrite(tmp_path / "img.tif", g)
    return tmp_path / "img.tif"


@pytest.mark.parametrize("segmenter, expected", [(TwoChannelNet(), [0.8, 0.6]), (PlainMap(), [None, None]),
                                                 ("classical", [None, None])])
def test_in_process_stages_known_answer(tmp_path, segmenter, expected):
    path = _image(tmp_path)
    opts = AnalysisOptions(MeasureOptions(modality="se", threshold=0.5, separate="none", grow_px=0, refine_px=0,
                                          min_contrast=0.0), pixel_size_nm=1.0, databar=DataBar.none())
    stages = LocalStages(segmenter)
    prep = stages.prepare(path, "img", opts)
    seg = stages.segment(prep, opts)
    assert (seg.probability is not None) == (expected[0] is not None)
    if seg.probability is not None:
        assert seg.probability.dtype == np.uint8 and seg.probability.shape == prep.gray.shape
    measured = stages.measure(prep, seg, opts)
    rows = sorted(measured.table.particles, key=lambda r: r["centroid_x_px"])
    assert [r["seg_confidence"] for r in rows] == expected
