"""Calibration read back from every instrument format, on files written by our own writers.

Each file is written with a known pixel size by ``semforge.analysis._emfiles`` (the layouts the
instruments use) and read by ``load_image``; before #13 only Zeiss, FEI and DM were calibrated.
"""

import numpy as np
import pytest
import tifffile

from semforge.analysis import ImageDecodeError, load_image
from semforge.analysis._emfiles import (TIFF_FLAVOURS, write_berkeley_emd, write_dm, write_mrc, write_ser,
                                        write_tiff_flavour, write_velox_emd)

IMG = (np.arange(96 * 80).reshape(80, 96) * 37 % 4001).astype(np.uint16)


@pytest.mark.parametrize("version,dtype", [(3, np.int32), (3, np.uint8), (4, np.float32), (4, np.uint16)])
def test_gatan_dm(tmp_path, version, dtype):
    p = tmp_path / f"a.dm{version}"
    write_dm(p, IMG.astype(dtype), 0.8125, "nm", version=version)
    img = load_image(p)
    assert img.format == f"dm{version}" and img.pixels.dtype == dtype
    assert np.array_equal(img.pixels, IMG.astype(dtype))
    assert img.calibration.pixel_size_nm == pytest.approx(0.8125)
    assert img.calibration.source == "file:gatan"


def test_gatan_dm_in_micrometres(tmp_path):
    write_dm(tmp_path / "b.dm3", IMG, 0.0125, "\u00b5m")
    assert load_image(tmp_path / "b.dm3").calibration.pixel_size_nm == pytest.approx(12.5)


@pytest.mark.parametrize("fmt,writer,size_arg,expect,source", [
    ("emd", write_velox_emd, 0.3125e-9, 0.3125, "file:velox"),
    ("emd", write_berkeley_emd, 1.75, 1.75, "file:emd"),
    ("ser", write_ser, 0.4e-9, 0.4, "file:tia"),
    ("mrc", write_mrc, 2.25, 2.25, "file:mrc"),
])
def test_ncempy_formats(tmp_path, fmt, writer, size_arg, expect, source):
    p = tmp_path / f"a.{fmt}"
    data = IMG.astype(np.float32) if fmt == "mrc" else IMG
    writer(p, data, size_arg)
    for src in (p, p.read_bytes()):  # by path (CLI) and by bytes (services)
        img = load_image(src, name="a")
        assert img.format == fmt
        assert np.array_equal(img.pixels, data), fmt
        assert img.calibration.pixel_size_nm == pytest.approx(expect, rel=1e-6)
        assert img.calibration.source == source


@pytest.mark.parametrize("flavour", TIFF_FLAVOURS)
def test_tiff_flavours(tmp_path, flavour):
    p = tmp_path / f"{flavour}.tif"
    write_tiff_flavour(p, IMG, 3.1, flavour)
    img = load_image(p)
    assert np.array_equal(img.pixels, IMG)
    assert img.calibration.pixel_size_nm == pytest.approx(3.1, rel=1e-4), flavour
    expect = {"jeol": "file:jeol-txt", "hitachi": "file:hitachi-txt", "resolution": "file:tiff-resolution"}
    assert img.calibration.source == expect.get(flavour, f"file:{flavour}")


def test_sidecar_only_by_path_and_screen_dpi_is_no_calibration(tmp_path):
    p = tmp_path / "h.tif"
    write_tiff_flavour(p, IMG, 3.1, "hitachi")
    assert load_image(p.read_bytes()).calibration.source == "none"  # bytes: no sidecar to read
    tifffile.imwrite(tmp_path / "dpi.tif", IMG, resolution=(72, 72), resolutionunit="INCH")
    assert load_image(tmp_path / "dpi.tif").calibration.source == "none"


def test_imagej_micron_unit(tmp_path):
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, IMG, imagej=True, resolution=(1 / 0.0042, 1 / 0.0042), metadata={"unit": "micron"})
    assert load_image(p).calibration.pixel_size_nm == pytest.approx(4.2, rel=1e-4)


@pytest.mark.parametrize("fmt,writer", [("dm3", write_dm), ("emd", write_velox_emd), ("ser", write_ser),
                                        ("mrc", write_mrc)])
def test_truncated_instrument_files_are_clear_errors(tmp_path, fmt, writer):
    p = tmp_path / f"a.{fmt}"
    writer(p, IMG.astype(np.float32) if fmt == "mrc" else IMG, 1.0)
    data = p.read_bytes()
    with pytest.raises(ImageDecodeError, match=r"cut\.%s: .*(truncated|decoded|no image)" % fmt):
        load_image(data[: len(data) // 2], name=f"cut.{fmt}")


@pytest.mark.realdata
def test_real_image_as_dm3_int32_and_dm4_float32_same_particles(bam, tmp_path):
    """The issue's case: the same micrograph as int32 DM3 gave 0 particles, as float32 DM4 95 instead of 85."""
    from semforge.analysis import match_instances
    from semforge.inference import create_segmenter
    from semforge.pipeline import AnalysisOptions, LocalStages, analyze_image

    x8 = tifffile.imread(sorted((bam / "images").glob("*.tif"))[0])[:, 512:]
    stages = LocalStages(create_segmenter("unetpp"))
    tifffile.imwrite(tmp_path / "ref.tif", x8)
    ref = analyze_image(stages, tmp_path / "ref.tif", "ref", AnalysisOptions(pixel_size_nm=7.344)).measured
    write_dm(tmp_path / "a.dm3", x8.astype(np.int32), 7.344, version=3)
    write_dm(tmp_path / "b.dm4", x8.astype(np.float32) * 16.0 + 0.5, 7.344, version=4)
    for p in (tmp_path / "a.dm3", tmp_path / "b.dm4"):
        out = analyze_image(stages, p, p.stem, AnalysisOptions())  # calibration from the file, checked by the bar
        prep, res = out.prepared, out.measured
        assert prep.calibration.pixel_size_nm == pytest.approx(7.344) and prep.specimen_rows == 712
        m = match_instances(res.labels, ref.labels)
        assert ref.included >= 15 and m["f1"] >= 0.95, (p.name, m)
