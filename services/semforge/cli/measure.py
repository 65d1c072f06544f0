"""``semforge measure``: separation + morphometry on an existing binary mask (no model)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ._common import CliError, add_analysis_options, analysis_options, check_inputs


def register(sub) -> None:
    m = sub.add_parser("measure", help="separation + morphometry on an existing binary mask")
    m.add_argument("--mask", required=True)
    m.add_argument("--out", required=True)
    add_analysis_options(m, databar_default="none")
    m.set_defaults(func=run)


@dataclass(frozen=True)
class MeasureArgs:
    mask: str
    out: str
    options: object

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MeasureArgs":
        return cls(args.mask, args.out, analysis_options(args))


def run(args: argparse.Namespace) -> int:
    a = MeasureArgs.from_args(args)
    check_inputs([a.mask])
    from ..analysis import (detect_databar, load_image, measure_mask, resolve_calibration, write_labels_tiff,
                            write_particles_csv)

    img = load_image(a.mask)
    mask = img.pixels
    if mask.ndim != 2:
        raise CliError(f"{a.mask}: expected a 2-D binary mask")
    cal = resolve_calibration(img.calibration, user_pixel_size_nm=a.options.pixel_size_nm)
    rows = a.options.databar.specimen_rows(mask.shape[0], lambda: detect_databar(mask))
    res = measure_mask(mask > 0, calibration=cal, image_name=Path(a.mask).name.rsplit(".", 1)[0],
                       specimen_rows=rows, options=a.options.measure)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_labels_tiff(out / "labels.tif", res.labels, cal)  # ImageJ-calibrated (#13)
    write_particles_csv(out / "particles.csv", res.particles, res.unit)
    if not cal.calibrated:
        sys.stderr.write("WARNING: no pixel size (file has none, --pixel-size-nm not given): sizes are in PIXELS\n")
    print(f"{len(res.particles)} particles ({len(res.included())} included) -> {out / 'particles.csv'}")
    return 0
