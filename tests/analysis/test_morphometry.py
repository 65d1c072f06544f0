"""Known-answer tests of the per-particle measurements."""

import math

import numpy as np
import pytest
from skimage.draw import disk, ellipse, polygon

from semforge.analysis import convexity, feret_diameters, convex_hull, measure_instance


def rect_mask(w, h, angle_deg, size=200):
    a = math.radians(angle_deg)
    c = np.array([size / 2 + 0.5, size / 2 + 0.5])  # no pixel centre on an edge
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    xy = corners @ rot.T + c
    m = np.zeros((size, size), bool)
    rr, cc = polygon(xy[:, 1], xy[:, 0], m.shape)
    m[rr, cc] = True
    return m


@pytest.mark.parametrize("angle", [0, 17, 30, 45, 60, 90])
def test_rotated_rectangle(angle):
    w, h = 80.0, 30.0
    r = measure_instance(rect_mask(w, h, angle))
    # tolerance: one pixel of digitisation on lengths, 3 % on area
    assert r["area"] == pytest.approx(w * h, rel=0.03)
    assert r["feret_max"] == pytest.approx(math.hypot(w, h), abs=1.5)
    assert r["feret_min"] == pytest.approx(h, abs=1.5)
    assert r["perimeter"] == pytest.approx(2 * (w + h), rel=0.04)
    assert r["convexity"] > 0.95
    assert r["solidity"] > 0.95
    assert r["aspect_ratio"] == pytest.approx(math.hypot(w, h) / h, rel=0.06)


def test_axis_aligned_rectangle_is_exact():
    m = np.zeros((50, 60), bool)
    m[10:30, 5:45] = True  # 40 x 20 pixels
    r = measure_instance(m)
    assert r["area"] == 800
    assert r["feret_min"] == pytest.approx(20.0, abs=0.05)
    assert r["feret_max"] == pytest.approx(math.hypot(40, 20), abs=1.0)
    assert (r["bbox_x0_px"], r["bbox_y0_px"], r["bbox_x1_px"], r["bbox_y1_px"]) == (5, 10, 45, 30)
    assert r["centroid_x_px"] == pytest.approx(24.5)
    assert r["centroid_y_px"] == pytest.approx(19.5)


@pytest.mark.parametrize("radius", [10, 25, 60])
def test_disc(radius):
    m = np.zeros((2 * radius + 20,) * 2, bool)
    m[disk((radius + 10, radius + 10), radius, shape=m.shape)] = True
    r = measure_instance(m, pixel_size_nm=2.0)
    assert r["ecd"] == pytest.approx(2 * radius * 2.0, rel=0.02)
    assert r["area"] == pytest.approx(math.pi * radius**2 * 4.0, rel=0.03)
    assert r["perimeter"] == pytest.approx(2 * math.pi * radius * 2.0, rel=0.04)
    assert r["circularity"] == pytest.approx(1.0, abs=0.06)
    assert r["feret_min"] == pytest.approx(2 * radius * 2.0, abs=1.5 * 2.0)  # digitised disc: within 1.5 px
    assert r["feret_max"] == pytest.approx(2 * radius * 2.0, abs=2 * 2.0)
    assert r["convexity"] > 0.97


@pytest.mark.parametrize("a,b,angle", [(40, 20, 0), (50, 15, 35), (30, 28, 80)])
def test_ellipse(a, b, angle):
    m = np.zeros((160, 160), bool)
    rr, cc = ellipse(80, 80, b, a, shape=m.shape, rotation=math.radians(angle))
    m[rr, cc] = True
    r = measure_instance(m)
    ramanujan = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert r["area"] == pytest.approx(math.pi * a * b, rel=0.03)
    assert r["feret_max"] == pytest.approx(2 * a, abs=1.5)
    assert r["feret_min"] == pytest.approx(2 * b, abs=1.5)
    assert r["perimeter"] == pytest.approx(ramanujan, rel=0.04)


@pytest.mark.parametrize("n", [3, 5, 6])
def test_regular_polygon(n):
    R = 40.0
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.3
    m = np.zeros((120, 120), bool)
    rr, cc = polygon(60.5 + R * np.sin(t), 60.5 + R * np.cos(t), m.shape)
    m[rr, cc] = True
    r = measure_instance(m)
    edge = 2 * R * math.sin(math.pi / n)
    area = 0.5 * n * R * R * math.sin(2 * math.pi / n)
    assert r["area"] == pytest.approx(area, rel=0.04)
    assert r["perimeter"] == pytest.approx(n * edge, rel=0.05)
    # width of a regular polygon: odd n -> R(1 + cos(pi/n)); even -> 2 R cos(pi/n)
    width = R * (1 + math.cos(math.pi / n)) if n % 2 else 2 * R * math.cos(math.pi / n)
    assert r["feret_min"] == pytest.approx(width, abs=1.5)


def test_feret_of_exact_polygon():
    # unit square rotated 30 degrees: exact answers
    a = math.radians(30)
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float) * 10
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    hull = convex_hull(sq @ rot.T)
    fmin, fmax, _, _ = feret_diameters(hull)
    assert fmin == pytest.approx(10.0, abs=1e-9)
    assert fmax == pytest.approx(10 * math.sqrt(2), abs=1e-9)


def test_convexity_flags_two_overlapping_discs():
    m = np.zeros((100, 140), bool)
    m[disk((50, 45), 25, shape=m.shape)] = True
    m[disk((50, 90), 25, shape=m.shape)] = True
    assert convexity(m) < 0.95


def test_input_not_modified_and_bad_input_raises():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    before = m.copy()
    measure_instance(m)
    assert (m == before).all()
    with pytest.raises(ValueError):
        measure_instance(np.zeros((10, 10), bool))
    with pytest.raises(ValueError):
        measure_instance(np.ones((3, 3, 3), bool))


def test_internal_names_and_file_columns():
    """Rows use stable names with the unit on the table; only the writers add _nm / _px."""
    import csv

    from semforge.analysis import COLUMNS, Calibration, ParticleTable, file_column, measure_mask, write_particles_csv

    m = np.zeros((40, 40), bool)
    m[10:20, 10:30] = True
    res = measure_mask(m, calibration=Calibration(2.0, "user"))
    assert set(res.particles[0]) >= set(COLUMNS)
    assert not [k for k in res.particles[0] if k.endswith(("_nm", "_nm2"))]
    assert [file_column(c, "nm") for c in ("area", "ecd", "rod_length", "circularity", "bbox_x0_px")] == [
        "area_nm2", "ecd_nm", "rod_length_nm", "circularity", "bbox_x0_px"]
    doc = res.table.to_doc()
    back = ParticleTable.from_doc(doc)
    assert back.unit == "nm" and back.calibration == res.calibration and back.particles == res.particles
    with pytest.raises(ValueError, match="schema"):
        ParticleTable.from_doc({"particles": []})
    import tempfile, os

    with tempfile.TemporaryDirectory() as d:
        write_particles_csv(os.path.join(d, "p.csv"), res.particles, res.unit)
        row = next(csv.DictReader(open(os.path.join(d, "p.csv"))))
    assert float(row["area_nm2"]) == pytest.approx(200 * 4.0) and "area" not in row
