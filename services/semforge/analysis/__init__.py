"""Analysis library: loading and calibration, cleaning, separation (UECS), morphometry, statistics, reports.

No gRPC in here: services and the command line are thin adapters over this package.
"""

from ._databar import detect_databar
from ._evaluate import average_precision, instance_iou, match_instances, pixel_metrics, rand_error
from ._geometry import (add_gray_stats, convex_hull, convexity, feret_diameters, outline, polygon_area,
                        polygon_length)
from ._io import (Calibration, ImageDecodeError, LoadedImage, intensity_range, load_image, resolve_calibration,
                  to_gray_float, write_labels_tiff)
from ._scalebar import (ScaleBar, ScaleBarMismatch, check_scale_bar, find_scale_bar, read_scale_bar,
                        scale_bar_calibration)
from ._checks import MixedCalibrationError, Warning_, check_calibration_consistency, plausibility_warnings
from ._morphometry import (COLUMNS, SIZE_COLUMNS, file_column, file_row, measure_instance, particle_columns,
                           shape_dimensions)
from ._report import overlay_rgb, write_image_outputs, write_particles_csv, write_sample_report
from ._pipeline import (MODALITIES, SUMMARY_MEASURES, ImageResult, MeasureOptions, classify_particles, measure_mask,
                        summarize)
from ._table import TABLE_SCHEMA, ParticleTable
from ._separate import RECOMMENDED, SEPARATION_MODES, Instance, Separation, clean_mask, separate
from ..postprocess import CLASSICAL, MASK_DEFAULT, POST_HELP, POST_KEYS, PostProcess, recommended
from ._confidence import (CONFIDENCE_FIELDS, LIMITS, PROBABILITY_SCALE, ConfidenceLimits, confidence_fields,
                          confidence_warnings, image_confidence, particle_confidence, quantize_probability)
from ._shape import CONFIDENCE_LIMIT, classify_shape

__all__ = [
    "COLUMNS", "CONFIDENCE_LIMIT", "Calibration", "file_column", "file_row", "ImageDecodeError", "ImageResult", "Instance", "LoadedImage",
    "MODALITIES", "MeasureOptions", "ParticleTable", "TABLE_SCHEMA", "classify_particles", "SEPARATION_MODES", "SIZE_COLUMNS", "SUMMARY_MEASURES", "Separation",
    "average_precision", "instance_iou", "match_instances", "pixel_metrics", "rand_error",
    "classify_shape", "clean_mask", "convex_hull", "convexity", "detect_databar", "feret_diameters",
    "load_image", "measure_instance", "measure_mask", "outline", "particle_columns", "polygon_area",
    "overlay_rgb", "polygon_length", "resolve_calibration", "write_image_outputs", "write_particles_csv",
    "write_sample_report", "separate", "shape_dimensions", "summarize", "to_gray_float",
    "intensity_range", "MixedCalibrationError", "Warning_", "check_calibration_consistency",
    "plausibility_warnings", "ScaleBar", "ScaleBarMismatch", "check_scale_bar", "find_scale_bar", "read_scale_bar",
    "scale_bar_calibration", "write_labels_tiff", "add_gray_stats",
    "RECOMMENDED", "CLASSICAL", "MASK_DEFAULT", "POST_HELP", "POST_KEYS", "PostProcess", "recommended",
    "CONFIDENCE_FIELDS", "LIMITS", "ConfidenceLimits", "confidence_fields", "confidence_warnings", "image_confidence",
    "PROBABILITY_SCALE", "particle_confidence", "quantize_probability",
]
