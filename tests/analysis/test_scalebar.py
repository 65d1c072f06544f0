"""Scale bar: found and read in generated data bars with known bars, and on all 40 real images."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw, ImageFont

from semforge.analysis import (Calibration, ScaleBarMismatch, check_scale_bar, detect_databar, find_scale_bar,
                               read_scale_bar, scale_bar_calibration)
from semforge.analysis._scalebar import scale_bar_tolerance, tesseract_available


@pytest.fixture(autouse=True)
def _needs_tesseract(request):
    if "no_ocr" not in request.keywords and not tesseract_available():
        pytest.fail("Tesseract OCR is needed for the scale-bar tests; run `make setup` (Debian tesseract-ocr)")


def _font(size):
    import matplotlib

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)


def micrograph_with_bar(*, bar_px, label, style="zeiss", dark=True, w=900, h=700, bar_h=70, seed=0):
    """A noisy specimen above a data bar holding text and a scale bar of ``bar_px`` px labelled ``label``."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(110, 30, (h, w)), 0, 255).astype(np.uint8)
    bg, ink = (0, 255) if dark else (255, 0)
    band = Image.new("L", (w, bar_h), bg)
    d = ImageDraw.Draw(band)
    f = _font(14)
    d.text((10, 12), "EHT = 5.00 kV", fill=ink, font=f)
    d.text((10, 38), "WD = 4.1 mm   Mag = 20.00 K X", fill=ink, font=f)
    x0 = w - bar_px - 80
    if style == "zeiss":  # "H" bar, label above; length = tick centre to tick centre
        y = 50
        d.rectangle([x0 - 1, y - 10, x0, y + 10], fill=ink)
        d.rectangle([x0 + bar_px - 1, y - 10, x0 + bar_px, y + 10], fill=ink)
        d.rectangle([x0, y - 1, x0 + bar_px, y], fill=ink)
        tw = d.textlength(label, font=f)
        d.text((x0 + bar_px / 2 - tw / 2, 14), label, fill=ink, font=f)
    else:  # plain filled bar, label to its left (FEI style); length = full length
        y = 40
        d.rectangle([x0, y, x0 + bar_px - 1, y + 5], fill=ink)
        tw = d.textlength(label, font=f)
        d.text((x0 - tw - 12, y - 6), label, fill=ink, font=f)
    img[h - bar_h:] = np.asarray(band)
    return img


@pytest.mark.parametrize("bar_px,label,nm,style,dark", [
    (100, "500 nm", 500, "zeiss", True),
    (160, "2 \u00b5m", 2000, "plain", True),
    (75, "50 nm", 50, "plain", False),
    (120, "1 um", 1000, "zeiss", False),
])
def test_generated_bars_known_answer(bar_px, label, nm, style, dark):
    img = micrograph_with_bar(bar_px=bar_px, label=label, style=style, dark=dark)
    rows = detect_databar(img)
    assert rows == 630
    bar = read_scale_bar(img, rows)
    assert bar is not None and bar.ticks == (style == "zeiss")
    assert bar.length_px == pytest.approx(bar_px, abs=0.51)
    assert bar.length_nm == pytest.approx(nm)
    assert bar.pixel_size_nm == pytest.approx(nm / bar_px, rel=0.02)


def test_cross_check_agree_disagree_and_calibrate():
    img = micrograph_with_bar(bar_px=100, label="500 nm")
    rows = detect_databar(img)
    cal, bar, note = scale_bar_calibration(img, rows, Calibration(5.05, "file:zeiss"), image="x")
    assert cal == Calibration(5.05, "file:zeiss") and note is None
    cal, bar, note = scale_bar_calibration(img, rows, Calibration(None, "none"), image="x")
    assert cal.source == "scalebar" and cal.pixel_size_nm == pytest.approx(5.0, rel=0.01)
    with pytest.raises(ScaleBarMismatch, match=r"x: the scale bar \(500 nm over 100.0 px = 5 nm/px\) disagrees "
                                                r"with the pixel size 5.5 nm/px from file:fei by 9.1 %"):
        scale_bar_calibration(img, rows, Calibration(5.5, "file:fei"), image="x")


@pytest.mark.no_ocr
def test_no_bar_and_tolerance():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 300), dtype=np.uint8)
    assert find_scale_bar(img, 300) is None
    img[260:] = 0
    assert find_scale_bar(img, 260) is None  # empty data bar
    assert scale_bar_calibration(img, 300, Calibration(None, "none"))[2] == "no data bar"
    assert scale_bar_tolerance(27) == pytest.approx(1 / 27) and scale_bar_tolerance(500) == 0.03
    assert check_scale_bar(Calibration(2.0, "user"), None) == Calibration(2.0, "user")


@pytest.mark.realdata
def test_all_40_real_images_give_7344_nm_per_px(bam):
    paths = sorted((bam / "images").glob("*.tif")) + sorted((bam.parent / "bam-tio2-tsem" / "images").glob("*.tif"))
    assert len(paths) == 40
    for p in paths:
        x = tifffile.imread(p)
        cal, bar, note = scale_bar_calibration(x, 712, Calibration(7.344, "file:zeiss"), image=p.name)
        assert note is None and bar.label in ("200 nm", "300 nm"), (p.name, bar)
        assert bar.pixel_size_nm == pytest.approx(7.344, rel=0.02), (p.name, bar)
        # the same image without metadata is calibrated from its bar
        cal = check_scale_bar(Calibration(None, "none"), bar)
        assert cal.source == "scalebar" and cal.pixel_size_nm == pytest.approx(7.344, rel=0.02)
