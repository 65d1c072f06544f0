"""Calibrated per-particle measurements."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._geometry import (convex_hull, ellipse_fit, feret_diameters, outline, perimeter_convexity,
                        polygon_area, polygon_length)

__all__ = ["SIZE_COLUMNS", "AREA_COLUMNS", "LENGTH_COLUMNS", "COLUMNS", "particle_columns", "file_column",
           "file_row", "measure_instance", "shape_dimensions"]

#: size measures: in the table's unit (nm when calibrated, px otherwise); files add the unit to the name
SIZE_COLUMNS = ("area", "perimeter", "ecd", "feret_min", "feret_max")
#: columns in unit^2 (files: ``area_nm2``) and in the unit (files: ``ecd_nm``)
AREA_COLUMNS = ("area",)
LENGTH_COLUMNS = ("perimeter", "ecd", "feret_min", "feret_max", "sphere_diameter", "rod_length", "rod_thickness",
                  "edge_length", "ellipse_major", "ellipse_minor")

#: the particle table's columns, in order, by their stable internal names (the unit is on the table)
COLUMNS = (
    "id", "image", "area", "perimeter", "ecd", "feret_min", "feret_max", "circularity", "convexity", "solidity",
    "aspect_ratio", "centroid_x_px", "centroid_y_px", "bbox_x0_px", "bbox_y0_px", "bbox_x1_px", "bbox_y1_px",
    "touches_border", "separated", "shape", "shape_confidence",
    "sphere_diameter", "rod_length", "rod_thickness", "edge_length", "seg_confidence", "excluded", "exclude_reason",
)


def file_column(name: str, unit: str) -> str:
    """The name of an internal column in the CSV/XLSX/JSON files: the unit added to sizes (``area_nm2``,
    ``ecd_nm``; ``_px`` when uncalibrated), other names unchanged."""
    if name in AREA_COLUMNS:
        return f"{name}_{unit}2"
    if name in LENGTH_COLUMNS:
        return f"{name}_{unit}"
    return name


def file_row(row: dict[str, Any], unit: str) -> dict[str, Any]:
    """A table row with the file column names (see :func:`file_column`)."""
    return {file_column(k, unit): v for k, v in row.items()}


def particle_columns(unit: str) -> list[str]:
    """Column order of the particle table files for a length unit (``nm`` or ``px``)."""
    return [file_column(c, unit) for c in COLUMNS]


def measure_instance(mask: np.ndarray, *, offset: tuple[int, int] = (0, 0),
                     pixel_size_nm: float | None = None) -> dict[str, Any]:
    """Measure one particle.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)
        The particle's pixels in a crop of the image.
    offset : (row, col)
        Position of the crop's top-left pixel in the image.
    pixel_size_nm : float, optional
        Pixel edge length; without it lengths are in px.

    Returns
    -------
    dict
        ``area``, ``perimeter``, ``ecd``, ``feret_min``, ``feret_max`` in nm
        (nm^2) with ``pixel_size_nm``, else in px, plus ``circularity`` (4 pi A / P^2), ``convexity``
        (hull perimeter / perimeter of the same smoothed outline, ISO 9276-6),
        ``solidity`` (A / hull area), ``aspect_ratio`` (max / min Feret),
        centroid and bbox in px, ``ellipse_major/minor`` (same second
        moments, Fiji "Fit Ellipse", in the size unit) with ``ellipse_angle_deg``,
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
        "area": area_px * s * s,
        "perimeter": perim_px * s,
        "ecd": math.sqrt(4.0 * area_px / math.pi) * s,
        "feret_min": fmin * s,
        "feret_max": fmax * s,
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
        "ellipse_major": major * s,
        "ellipse_minor": minor * s,
        "ellipse_angle_deg": eangle,
        "feret_min_angle_deg": amin,
        "feret_max_angle_deg": amax,
    }
    return out


def shape_dimensions(row: dict[str, Any], shape: str, unit: str = "") -> dict[str, float | None]:
    """Shape-specific dimensions of the seed paper from the measured size columns.

    sphere / sphere-like / circle: diameter from area (= ECD); rod: length =
    max Feret, thickness = area / length; cube / square: edge sqrt(A);
    triangle: edge sqrt(4 A / sqrt 3); hexagon: edge sqrt(2 A / (3 sqrt 3));
    pentagon: edge sqrt(4 A tan(36 deg) / 5). In the row's unit (``unit`` is not needed any more).
    """
    a = row["area"]
    out: dict[str, float | None] = {"sphere_diameter": None, "rod_length": None, "rod_thickness": None,
                                    "edge_length": None}
    if shape in ("sphere", "sphere-like", "circle"):
        out["sphere_diameter"] = row["ecd"]
    elif shape == "rod":
        length = row["feret_max"]
        out["rod_length"] = length
        out["rod_thickness"] = a / length if length else None
    elif shape in ("cube", "square"):
        out["edge_length"] = math.sqrt(a)
    elif shape == "triangle":
        out["edge_length"] = math.sqrt(4.0 * a / math.sqrt(3.0))
    elif shape == "hexagon":
        out["edge_length"] = math.sqrt(2.0 * a / (3.0 * math.sqrt(3.0)))
    elif shape == "pentagon":
        out["edge_length"] = math.sqrt(4.0 * a * math.tan(math.radians(36.0)) / 5.0)
    return out
