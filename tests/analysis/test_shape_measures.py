"""Convexity that does not saturate, ellipse axes/angle, Feret angles, gray values: known answers."""

import numpy as np
import pytest

from semforge.analysis import Calibration, MeasureOptions, measure_instance, measure_mask
from semforge.analysis._geometry import ellipse_fit, gray_stats, perimeter_convexity

yy, xx = np.mgrid[:200, :200]


def disc(cy, cx, r):
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_convexity_of_convex_shapes_is_near_one_but_concave_shapes_fall():
    d = measure_instance(disc(100, 100, 30))
    assert 0.99 <= d["convexity"] <= 1.0
    two = disc(100, 80, 25) | disc(100, 125, 25)  # a neck: two touching particles
    c2 = measure_instance(two)["convexity"]
    assert c2 < 0.97
    dented = disc(100, 100, 30) & ~disc(100, 135, 12)
    assert measure_instance(dented)["convexity"] < d["convexity"]


def test_convexity_does_not_saturate_on_many_shapes():
    """Before #13, hull perimeter (raw outline) / smoothed perimeter was capped at 1.0 for most particles."""
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(40):
        a, b = rng.uniform(8, 30, 2)
        t = rng.uniform(0, np.pi)
        x, y = xx - 100, yy - 100
        u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1
        m &= ~disc(100 + rng.uniform(-20, 20), 100 + rng.uniform(-20, 20), rng.uniform(0, 6))
        vals.append(measure_instance(m)["convexity"])
    vals = np.array(vals)
    assert (vals == 1.0).mean() < 0.1
    assert np.all(vals <= 1.0) and np.all(vals > 0.8)


def test_perimeter_convexity_of_a_polygon():
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0], [0, 0]], float)
    assert perimeter_convexity(square) == pytest.approx(1.0)
    notched = np.array([[0, 0], [0, 10], [5, 5], [10, 10], [10, 0], [0, 0]], float)
    # hull perimeter 40, polygon perimeter 30 + 2 * sqrt(50)
    assert perimeter_convexity(notched) == pytest.approx(40 / (30 + 2 * np.sqrt(50)))


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_ellipse_axes_and_angle(angle):
    a, b = 40.0, 20.0
    t = np.radians(angle)
    x, y = xx - 100.0, -(yy - 100.0)  # y up
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    m = (u / a) ** 2 + (v / b) ** 2 <= 1
    major, minor, ang = ellipse_fit(m)
    assert major == pytest.approx(2 * a, rel=0.02) and minor == pytest.approx(2 * b, rel=0.02)
    assert min(abs(ang - angle), 180 - abs(ang - angle)) < 1.0
    row = measure_instance(m, pixel_size_nm=2.0)
    assert row["ellipse_major"] == pytest.approx(2 * major) and row["ellipse_angle_deg"] == pytest.approx(ang)


def test_feret_angles_of_a_rectangle():
    m = np.zeros((60, 80), bool)
    m[20:30, 10:50] = True  # 40 wide, 10 high
    row = measure_instance(m)
    assert row["feret_min_angle_deg"] == pytest.approx(90.0, abs=0.5)  # narrowest across: vertical caliper
    diag = np.degrees(np.arctan2(row["feret_min"], row["feret_max"]))
    assert min(row["feret_max_angle_deg"], 180 - row["feret_max_angle_deg"]) == pytest.approx(
        np.degrees(np.arctan2(10, 40)), abs=1.5), diag


def test_gray_values_per_particle():
    g = np.zeros((200, 200))
    m = disc(100, 100, 20)
    g[m] = np.where(np.arange(m.sum()) % 2, 0.8, 0.4)
    mean, sd = gray_stats(g, m)
    n = m.sum()
    assert mean == pytest.approx(0.6, abs=0.01) and sd == pytest.approx(0.2 * np.sqrt(n / (n - 1)), rel=0.02)
    res = measure_mask(m, calibration=Calibration(1.0, "user"), gray=g, options=MeasureOptions())
    p = res.included()[0]
    assert p["gray_mean"] == pytest.approx(mean) and p["gray_sd"] == pytest.approx(sd)
    assert "gray_mean" not in measure_mask(m).particles[0]
