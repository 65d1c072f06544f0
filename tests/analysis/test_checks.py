"""Plausibility warnings and the up-front refusal of mixed calibration."""

import numpy as np
import pytest
import tifffile

from semforge.analysis import (Calibration, MeasureOptions, MixedCalibrationError, check_calibration_consistency,
                               measure_mask, plausibility_warnings)
from semforge.training.synth import write_zeiss_tiff


def _discs(px_nm=None):
    m = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[:200, :200]
    for cy, cx in [(50, 50), (50, 140), (140, 60), (140, 150)]:
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= 15 ** 2] = True
    return m


def codes(ws):
    return sorted(w.code for w in ws)


def test_good_image_has_no_warning():
    cal = Calibration(7.344, "file:zeiss")
    res = measure_mask(_discs(), calibration=cal)
    assert len(res.included()) == 4
    assert plausibility_warnings(image="a", calibration=cal, particles=res.particles, image_shape=(200, 200)) == []


def test_um_typed_instead_of_nm_is_caught():
    """7.344 nm typed as 0.007344 (its value in um): the size filter of 0.5 nm becomes 68 px -> no particles."""
    cal = Calibration(0.007344, "user")
    opts = MeasureOptions()
    res = measure_mask(_discs(), calibration=cal, options=opts)
    assert res.included() == []
    ws = plausibility_warnings(image="a", calibration=cal, particles=res.particles,
                               min_diameter_nm=opts.min_diameter_nm)
    assert codes(ws) == ["no_particles"]
    assert "um instead of nm" in ws[0].message and "68 px" in ws[0].message
    # without the size filter the particles survive, and their size in nm is implausible (0.2 nm)
    res = measure_mask(_discs(), calibration=cal, options=MeasureOptions(min_diameter_nm=0))
    assert codes(plausibility_warnings(image="a", calibration=cal, particles=res.particles)) == [
        "particle_size_implausible"]
    # a pixel size given in pm (7344 "nm") is outside any electron micrograph's range
    ws = plausibility_warnings(image="a", calibration=Calibration(7344.0, "user"))
    assert codes(ws) == ["pixel_size_implausible"]


def test_uncalibrated_tiny_huge_and_few():
    ws = plausibility_warnings(image="a", calibration=Calibration(None, "none"))
    assert codes(ws) == ["uncalibrated"] and "--pixel-size" in ws[0].message
    noise = np.zeros((100, 100), bool)
    noise[::10, ::10] = True
    noise[1::10, ::10] = True
    res = measure_mask(noise, calibration=Calibration(5.0, "user"),
                       options=MeasureOptions(min_area_px=0, min_bbox_px=0, max_hole_area_px=0, min_diameter_nm=0))
    assert "particles_tiny" in codes(plausibility_warnings(image="a", calibration=Calibration(5.0, "user"),
                                                           particles=res.particles))
    big = np.zeros((100, 100), bool)
    big[5:95, 5:95] = True
    res = measure_mask(big, calibration=Calibration(5.0, "user"))
    ws = plausibility_warnings(image="a", calibration=Calibration(5.0, "user"), particles=res.particles,
                               image_shape=(100, 100), min_count=10)
    assert codes(ws) == ["few_particles", "particles_huge"]
    assert str(ws[0]).startswith("warning [few_particles] a:")
    assert ws[0].as_dict()["code"] == "few_particles"


def test_mixed_calibration_refused_with_names():
    check_calibration_consistency([("a", Calibration(1.0, "user")), ("b", Calibration(2.0, "file:zeiss"))])
    check_calibration_consistency([("a", Calibration(None, "none")), ("b", Calibration(None, "none"))])
    with pytest.raises(MixedCalibrationError, match=r"1 of 2 images have no pixel size \(b\)"):
        check_calibration_consistency([("a", Calibration(1.0, "user")), ("b", Calibration(None, "none"))])


def test_workflow_refuses_mixed_batch_before_any_work(tmp_path):
    from semforge.pipeline import analyze_paths

    img = np.full((128, 128), 30, np.uint8)
    img[40:80, 40:80] = 200
    write_zeiss_tiff(tmp_path / "cal.tif", img, 5.0)
    tifffile.imwrite(tmp_path / "plain.tif", img)
    calls = []
    with pytest.raises(MixedCalibrationError, match="plain"):
        analyze_paths([str(tmp_path / "cal.tif"), str(tmp_path / "plain.tif")], tmp_path / "out",
                      segmenter="classical", progress=lambda *a: calls.append(a))
    assert {c[2] for c in calls} == {"load"} and not (tmp_path / "out").exists()  # refused before segmenting


def test_workflow_prints_warnings(tmp_path, capsys):
    from semforge.pipeline import analyze_paths

    img = np.full((128, 128), 30, np.uint8)
    img[40:80, 40:80] = 200
    tifffile.imwrite(tmp_path / "plain.tif", img)
    analyze_paths([str(tmp_path / "plain.tif")], tmp_path / "out", segmenter="classical")
    assert "warning [uncalibrated] plain:" in capsys.readouterr().err


def test_scale_bar_calibration_is_said():
    ws = plausibility_warnings(image="a", calibration=Calibration(7.4, "scalebar"))
    assert codes(ws) == ["calibrated_from_scale_bar"] and "7.4 nm/px" in ws[0].message
