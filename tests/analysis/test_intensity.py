"""Intensity handling: the same picture stored at any bit depth / sample type gives the same particles.

Before the fix, 12-bit data in uint16 was divided by 65535 (a nearly black image) and int32 by 2**32:
the shipped UNet++ found 0 particles in both.
"""

import numpy as np
import pytest
import tifffile

from semforge.analysis import (Calibration, MeasureOptions, intensity_range, match_instances, measure_mask,
                               plausibility_warnings, to_gray_float)


def run_image(path, *, pixel_size_nm=None, segmenter="unetpp", stages=None):
    """One image through the in-process pipeline: (Prepared, Measured)."""
    from semforge.pipeline import AnalysisOptions, LocalStages, analyze_image

    stages = stages or LocalStages(segmenter)
    out = analyze_image(stages, path, path.stem, AnalysisOptions(pixel_size_nm=pixel_size_nm))
    return out.prepared, out.measured


def representations(x8: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The 8-bit picture ``x8`` as instruments and converters store it."""
    rng = np.random.default_rng(seed)
    x = x8.astype(np.int64)
    hot = x * 16 + rng.integers(0, 16, x.shape)  # 12-bit with sub-LSB detail
    flat = hot.ravel()
    flat[rng.choice(flat.size, 20, replace=False)] = 65535  # hot pixels of a 12-bit camera
    return {
        "uint16-12bit": (x * 16 + rng.integers(0, 16, x.shape)).astype(np.uint16),
        "uint16-12bit-hot-pixels": hot.astype(np.uint16),
        "uint16-14bit": (x * 64).astype(np.uint16),
        "uint16-16bit": (x * 257).astype(np.uint16),
        "int16-signed": (x * 100 - 12800).astype(np.int16),
        "int32": x.astype(np.int32),
        "uint32-24bit": (x * 65793).astype(np.uint32),
        "float32-counts": (x * 37.5 + 1000.25).astype(np.float32),
        "float32-whole": x.astype(np.float32),
        "float64-unit": x / 255.0,
        "rgb8": np.repeat(x8[..., None], 3, axis=-1),
        "rgba16": np.dstack([x * 257] * 3 + [np.full_like(x, 65535)]).astype(np.uint16),
    }


def synthetic_micrograph(h=200, w=240, seed=3):
    """Bright discs on a dark noisy background with a black data bar holding white text."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 40 + rng.normal(0, 6, (h, w))
    for cy, cx, r in [(40, 50, 14), (45, 140, 18), (110, 80, 12), (120, 190, 16), (150, 130, 10)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 190 + rng.normal(0, 6)
    img[176:] = 0
    img[184:192, 10:60] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def test_every_representation_gives_the_8bit_gray_image():
    x8 = synthetic_micrograph()
    ref = x8 / 255.0
    for name, arr in representations(x8).items():
        g = to_gray_float(arr)
        assert g.shape == x8.shape and g.dtype == np.float32, name
        err = np.abs(g - ref)
        # hot pixels are clipped to white; everything else within one 8-bit step
        assert np.quantile(err, 0.999) <= 1 / 255 + 1e-6, (name, float(err.max()))


@pytest.mark.parametrize("arr,rule", [
    (np.array([[0, 255]], np.uint8), "bits:8"),
    (np.array([[0, 4095]], np.uint16), "bits:12"),
    (np.array([[0, 1000]], np.uint16), "bits:10"),
    (np.array([[0, 16383]], np.int32), "bits:14"),
    (np.array([[0.0, 0.5]], np.float32), "unit"),
    (np.array([[-5, 5]], np.int16), "robust"),
    (np.array([[0.5, 700.25]], np.float64), "robust"),
])
def test_intensity_rule(arr, rule):
    assert intensity_range(arr)[2] == rule


def test_saturated_and_hot_pixels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4096, (300, 300)).astype(np.uint16)
    x[:100] = 4095  # a third saturated: still 12-bit, saturated is white
    assert intensity_range(x)[:2] == (0.0, 4095.0)
    x.ravel()[:5] = 65535  # 5 hot pixels do not turn the scale to 16 bit
    g = to_gray_float(x)
    assert intensity_range(x)[:2] == (0.0, 4095.0)
    assert g.ravel()[:5].tolist() == [1.0] * 5
    assert g[150, 150] == pytest.approx(x[150, 150] / 4095, abs=1e-6)
    f = rng.normal(100, 10, (300, 300)).astype(np.float32)
    f[0, :3] = [np.nan, np.inf, 1e30]  # a dead and two hot pixels
    g = to_gray_float(f)
    assert np.isfinite(g).all() and g[0, 0] == 0 and g[0, 2] == 1
    assert 0.3 < float(np.median(g)) < 0.7  # the hot pixel did not squash the range


def test_unetpp_same_particles_on_synthetic_representations():
    """Known answer on a synthetic image with the shipped UNet++: same particles whatever the storage."""
    from semforge.inference import create_segmenter

    seg = create_segmenter("unetpp")
    x8 = synthetic_micrograph()
    opts = MeasureOptions()

    def run(arr):
        prob = seg.predict(to_gray_float(arr)[:176], modality="se")
        mask = np.zeros(x8.shape, bool)
        mask[:176] = prob >= 0.5
        return measure_mask(mask, calibration=Calibration(2.0, "user"), specimen_rows=176, options=opts)

    ref = run(x8)
    assert len(ref.included()) == 5
    for name in ("uint16-12bit", "int32", "float32-counts", "rgba16"):
        res = run(representations(x8)[name])
        m = match_instances(res.labels, ref.labels)
        assert m["f1"] == 1.0 and m["mean_matched_iou"] > 0.97, (name, m)


@pytest.mark.realdata
def test_real_image_same_particles_in_every_representation(bam, tmp_path):
    """The shipped UNet++ in process on a real micrograph stored 8 ways (left half, data bar kept)."""
    from semforge.inference import create_segmenter

    from semforge.pipeline import LocalStages

    src = sorted((bam / "images").glob("*.tif"))[0]
    x8 = tifffile.imread(src)[:, :512]
    stages = LocalStages(create_segmenter("unetpp"))

    def run(path):
        prep, measured = run_image(path, pixel_size_nm=7.344, stages=stages)
        assert prep.specimen_rows == 712, path.name
        return measured

    p8 = tmp_path / "uint8.tif"
    tifffile.imwrite(p8, x8)
    ref = run(p8)
    n_ref = ref.included
    assert n_ref >= 15
    reps = representations(x8)
    for name in ("uint16-12bit-hot-pixels", "uint16-14bit", "int16-signed", "int32", "float32-counts", "rgba16"):
        p = tmp_path / f"{name}.tif"
        tifffile.imwrite(p, reps[name])
        res = run(p)
        m = match_instances(res.labels, ref.labels)
        assert abs(res.included - n_ref) <= max(1, 0.05 * n_ref), (name, res.included, n_ref)
        assert m["f1"] >= 0.95, (name, m)
        assert not [w for w in plausibility_warnings(image=name, calibration=res.table.calibration,
                                                     particles=res.table.particles) if w.code == "no_particles"]


def _jpeg(x8, quality=75):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x8).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def test_databar_found_on_jpeg_copy_and_any_bit_depth():
    """Text on the bar: JPEG noise around it made the exact-equality rule start the bar below the text."""
    rng = np.random.default_rng(4)
    x = np.clip(rng.normal(90, 25, (400, 320)), 0, 255).astype(np.uint8)
    x[352:] = 0
    for c0 in range(10, 300, 32):  # a line of "O" glyphs (2-px strokes) right below the specimen
        x[356:372, c0:c0 + 8] = 255
        x[358:370, c0 + 2:c0 + 6] = 0
    from semforge.analysis import detect_databar

    assert detect_databar(x) == 352
    for q in (75, 95):
        assert detect_databar(_jpeg(x, q)) == 352, q
    assert detect_databar((x.astype(np.uint16) * 16 + rng.integers(0, 16, x.shape)).astype(np.uint16)) == 352
    assert detect_databar(x.astype(np.float32) * 3.5 - 10) == 352


@pytest.mark.realdata
def test_databar_on_jpeg_copies_of_all_real_images(bam):
    from semforge.analysis import detect_databar

    paths = sorted((bam / "images").glob("*.tif")) + sorted((bam.parent / "bam-tio2-tsem" / "images").glob("*.tif"))
    assert len(paths) == 40
    for p in paths:
        assert detect_databar(_jpeg(tifffile.imread(p), 75)) == 712, p.name
