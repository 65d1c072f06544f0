"""Calibrated per-particle measurements."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._geometry import (convex_hull, ellipse_fit, feret_diameters, gray_stats, outline, perimeter_convexity,
                        polygon_area, polygon_length)

__all__ = ["SIZE_COLUMNS", "particle_columns", "measure_instance", "shape_dimensions"]

#: size measures (their column names get the unit suffix: ``area_nm2``, ``ecd_nm`` ... or ``_px``)
SIZE_COLUMNS = ("area", "perimeter", "ecd", "feret_min", "feret_max")


def particle_columns(unit: str) -> list[str]:
    """Column order of the particle table for a length unit (``nm`` or ``px``)."""
    return [
        "id", "image", f"area_{unit}2", f"perimeter_{unit}", f"ecd_{unit}", f"feret_min_{unit}",
        f"feret_max_{unit}", "circularity", "convexity", "solidity", "aspect_ratio",
        "centroid_x_px", "centroid_y_px", "bbox_x0_px", "bbox_y0_px", "bbox_x1_px", "bbox_y1_px",
        "touches_border", "separated", "shape", "shape_confidence",
        f"sphere_diameter_{unit}", f"rod_length_{unit}", f"rod_thickness_{unit}", f"edge_length_{unit}",
        "excluded", "exclude_reason",
    ]


def measure_instance(mask: np.ndarray, *, offset: tuple[int, int] = (0, 0),
                     pixel_size_nm: float | None = None, gray: np.ndarray | None = None) -> dict[str, Any]:
    """Measure one particle.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)
        The particle's pixels in a crop of the image.
    offset : (row, col)
        Position of the crop's top-left pixel in the image.
    pixel_size_nm : float, optional
        Pixel edge length; without it lengths are in px (column suffix ``_px``).
    gray : ndarray, shape (h, w), optional
        The gray image (0-1) over the same crop: adds ``gray_mean`` and
        ``gray_sd`` (n - 1).

    Returns
    -------
    dict
        ``area``, ``perimeter``, ``ecd``, ``feret_min``, ``feret_max`` with
        the unit suffix, plus ``circularity`` (4 pi A / P^2), ``convexity``
        (hull perimeter / perimeter of the same smoothed outline, ISO 9276-6),
        ``solidity`` (A / hull area), ``aspect_ratio`` (max / min Feret),
        centroid and bbox in px, ``ellipse_major/minor`` (same second
        moments, Fiji "Fit Ellipse") with ``ellipse_angle_deg``,
        ``feret_min/max_angle_deg`` (caliper directions), all angles from the
        image x axis counter-clockwise with y up, in [0, 180).

    Notes
    -----
    Area is the pixel count. The perimeter is the length of the 0.5 iso-line
    of the mask smoothed with a 1-px Gaussian (sub-pixel, no staircase
    bias). The convex hull is taken of the unsmoothed 0.5 iso-line (corners
    kept); Feret diameters come from rotating calipers on it, exact for
    polygons up to the pixel grid (a w x h pixel rectangle gives Feret min w
    and max sqrt(w^2 + h^2) less 0.5 px of corner).

    References
    ----------
    Gumbiowski et al. 2023 (measures); Bals & Epple 2023 (shape dimensions).
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or not m.any():
        raise ValueError("particle mask must be a non-empty 2-D boolean array")
    s = 1.0 if pixel_size_nm is None else float(pixel_size_nm)
    unit = "px" if pixel_size_nm is None else "nm"
    area_px = float(m.sum())
    smooth = outline(m, smooth=1.0)
    perim_px = polygon_length(smooth)
    hull = convex_hull(outline(m, smooth=0.0))
    hull_area = polygon_area(hull) if len(hull) > 3 else 0.0
    fmin, fmax, amin, amax = feret_diameters(hull)
    major, minor, eangle = ellipse_fit(m)
    # a one-pixel-wide line has zero contour width; the pixel itself is 1 px wide
    fmin = max(fmin, 1.0)
    fmax = max(fmax, 1.0)
    rows, cols = np.nonzero(m)
    r0, c0 = offset
    circ = 4.0 * math.pi * area_px / perim_px**2 if perim_px > 0 else 1.0
    out = {
        f"area_{unit}2": area_px * s * s,
        f"perimeter_{unit}": perim_px * s,
        f"ecd_{unit}": math.sqrt(4.0 * area_px / math.pi) * s,
        f"feret_min_{unit}": fmin * s,
        f"feret_max_{unit}": fmax * s,
        "circularity": min(circ, 1.0),
        "convexity": perimeter_convexity(smooth),
        "solidity": min(1.0, area_px / hull_area) if hull_area > 0 else 1.0,
        "aspect_ratio": fmax / fmin,
        "centroid_x_px": float(cols.mean() + c0),
        "centroid_y_px": float(rows.mean() + r0),
        "bbox_x0_px": int(cols.min() + c0),
        "bbox_y0_px": int(rows.min() + r0),
        "bbox_x1_px": int(cols.max() + c0 + 1),
        "bbox_y1_px": int(rows.max() + r0 + 1),
        f"ellipse_major_{unit}": major * s,
        f"ellipse_minor_{unit}": minor * s,
        "ellipse_angle_deg": eangle,
        "feret_min_angle_deg": amin,
        "feret_max_angle_deg": amax,
    }
    if gray is not None:
        out["gray_mean"], out["gray_sd"] = gray_stats(gray, m)
    return out


def shape_dimensions(row: dict[str, Any], shape: str, unit: str) -> dict[str, float | None]:
    """Shape-specific dimensions of the seed paper from the measured size columns.

    sphere / sphere-like / circle: diameter from area (= ECD); rod: length =
    max Feret, thickness = area / length; cube / square: edge sqrt(A);
    triangle: edge sqrt(4 A / sqrt 3); hexagon: edge sqrt(2 A / (3 sqrt 3));
    pentagon: edge sqrt(4 A tan(36 deg) / 5).
    """
    a = row[f"area_{unit}2"]
    out: dict[str, float | None] = {
        f"sphere_diameter_{unit}": None, f"rod_length_{unit}": None,
        f"rod_thickness_{unit}": None, f"edge_length_{unit}": None,
    }
    if shape in ("sphere", "sphere-like", "circle"):
        out[f"sphere_diameter_{unit}"] = row[f"ecd_{unit}"]
    elif shape == "rod":
        length = row[f"feret_max_{unit}"]
        out[f"rod_length_{unit}"] = length
        out[f"rod_thickness_{unit}"] = a / length if length else None
    elif shape in ("cube", "square"):
        out[f"edge_length_{unit}"] = math.sqrt(a)
    elif shape == "triangle":
        out[f"edge_length_{unit}"] = math.sqrt(4.0 * a / math.sqrt(3.0))
    elif shape == "hexagon":
        out[f"edge_length_{unit}"] = math.sqrt(2.0 * a / (3.0 * math.sqrt(3.0)))
    elif shape == "pentagon":
        out[f"edge_length_{unit}"] = math.sqrt(4.0 * a * math.tan(math.radians(36.0)) / 5.0)
    return out
