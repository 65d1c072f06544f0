"""Loading, calibration and data bar detection."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from semforge.analysis import ImageDecodeError, detect_databar, load_image, resolve_calibration, to_gray_float
from semforge.training.synth import write_zeiss_tiff


def test_zeiss_tag_gives_pixel_size(tmp_path):
    p = tmp_path / "z.tif"
    write_zeiss_tiff(p, np.zeros((64, 64), np.uint8), 3.25)
    img = load_image(p)
    assert img.calibration.pixel_size_nm == pytest.approx(3.25)
    assert img.calibration.source == "file:zeiss"


def test_fei_metadata_gives_pixel_size(tmp_path):
    p = tmp_path / "fei.tif"
    text = "[User]\r\nDate=01/01/2026\r\n[Scan]\r\nPixelWidth=4.2e-009\r\nPixelHeight=4.2e-009\r\n"
    tifffile.imwrite(p, np.zeros((64, 64), np.uint16), extratags=[(34682, "s", 0, text, True)])
    img = load_image(p)
    assert img.calibration.pixel_size_nm == pytest.approx(4.2)
    assert img.calibration.source == "file:fei"


def test_plain_png_has_no_calibration_and_user_overrides(tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 65535).astype(np.uint16)).save(p)
    img = load_image(p)
    assert img.calibration.pixel_size_nm is None and img.calibration.source == "none"
    assert img.pixels.dtype == np.uint16
    cal = resolve_calibration(img.calibration, user_pixel_size_nm=1.5)
    assert cal.pixel_size_nm == 1.5 and cal.source == "user"
    with pytest.raises(ValueError, match="positive"):
        resolve_calibration(img.calibration, user_pixel_size_nm=-1)


def test_rgb_and_float_to_gray():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255
    g = to_gray_float(rgb)
    assert g.shape == (10, 10) and g.max() == pytest.approx(0.299, abs=1e-3)
    f = to_gray_float(np.array([[1.5, 3.5], [2.5, np.nan]]))  # fractional: robust min..max
    assert f[0, 0] == 0 and f[0, 1] == 1 and f[1, 1] == 0


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"hello, this is not an image" * 10, "not a recognised image"),
])
def test_bad_bytes(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        load_image(data, name="x")


def test_truncated_tiff(tmp_path):
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="TIFF"):
        load_image(buf.getvalue()[:4000], name="cut.tif")


def test_databar_detection_synthetic():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (400, 300), dtype=np.uint8)
    assert detect_databar(img) == 400
    img[350:] = 0
    img[360:370, 20:120] = 255
    assert detect_databar(img) == 350


@pytest.mark.realdata
def test_databar_and_calibration_on_real_images(bam):
    for p in sorted((bam / "images").glob("*.tif")):
        img = load_image(p)
        assert img.calibration.pixel_size_nm == pytest.approx(7.344)
        assert detect_databar(img.pixels) == 712, p.name
