"""Test-time flips (inference/tta.py): known answers, and the teacher flips of `semforge adapt`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from semforge.inference import OnnxSegmenter
from semforge.inference.tta import flip_mean
from semforge.training.synth import synthetic_sem


def test_flip_mean_is_exact_for_an_equivariant_map_and_averages_a_ramp():
    g = np.random.default_rng(0).random((6, 9)).astype(np.float32)
    pointwise = lambda a: np.stack([2 * a, a + 1])  # noqa: E731  (commutes with every flip)
    for n in (1, 2, 4, 8):
        np.testing.assert_allclose(flip_mean(pointwise, g, n), pointwise(g), rtol=1e-6)
    # a network that adds its column index: left-right flips average it to the mean column (4 of 0..8);
    # the transposes of the 8-fold group add the row index instead (mean 2.5 of 0..5)
    ramp = lambda a: a[None] + np.arange(a.shape[-1], dtype=np.float32)  # noqa: E731
    np.testing.assert_allclose(flip_mean(ramp, g, 1)[0] - g, np.broadcast_to(np.arange(9), (6, 9)), atol=1e-5)
    np.testing.assert_allclose(flip_mean(ramp, g, 2)[0] - g, 4.0, atol=1e-5)
    np.testing.assert_allclose(flip_mean(ramp, g, 4)[0] - g, 4.0, atol=1e-5)
    np.testing.assert_allclose(flip_mean(ramp, g, 8)[0] - g, (4 * 4.0 + 4 * 2.5) / 8, atol=1e-5)
    # a one-sided feature is brought back where it was: a detector of the left edge of a bright square
    img = np.zeros((16, 16), np.float32)
    img[4:10, 3:9] = 1
    left_edge = lambda a: (np.diff(a, axis=1, prepend=0) > 0.5).astype(np.float32)[None]  # noqa: E731
    m = flip_mean(left_edge, img, 2)[0]
    assert m[5, 3] == pytest.approx(0.5) and m[5, 8] == pytest.approx(0.5) and m.sum() == pytest.approx(6)
    with pytest.raises(ValueError, match="flips must be one of"):
        flip_mean(pointwise, g, 3)


def test_flip_mean_of_the_shipped_network_keeps_shape_and_range():
    seg = OnnxSegmenter("semforge_unetpp_se", threads=1)
    img, _ = synthetic_sem(seed=1, size=(200, 232), n_particles=12, databar_rows=0, radius_px=(10, 2))
    g = img.astype(np.float32) / 255.0
    plain = seg.predict_channels(g)
    for n in (4, 8):  # 8 includes transposes: a 200 x 232 input seen as 232 x 200
        p = flip_mean(seg.predict_channels, g, n)
        assert p.shape == plain.shape and 0 <= p.min() and p.max() <= 1
        # the same network: the mean agrees with the plain output on most pixels' decisions
        assert ((p[0] >= 0.5) == (plain[0] >= 0.5)).mean() > 0.95


def test_adapt_teacher_flips_recorded_and_validated(tmp_path, capsys):
    from semforge.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    img, _ = synthetic_sem(seed=0, size=(224, 256), n_particles=15, databar_rows=0, radius_px=(10, 2))
    tifffile.imwrite(imgs / "a0.tif", img)
    common = ["adapt", "--images", str(imgs), "--modality", "se", "--steps", "2", "--batch", "1", "--patch", "128",
              "--quiet"]
    assert main(common + ["--out", str(tmp_path / "m"), "--teacher-flips", "4"]) == 0
    rec = json.loads((tmp_path / "m" / "1" / "training.json").read_text())["adaptation"]
    assert rec["config"]["teacher_flips"] == 4 and "mean over 4 flips" in rec["route"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse: not one of the choices
        main(common + ["--out", str(tmp_path / "bad"), "--teacher-flips", "3"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    from semforge.errors import UserInputError
    from semforge.training.segmentation.adapt import AdaptConfig

    with pytest.raises(UserInputError, match="teacher_flips must be one of"):
        AdaptConfig(images=["x.tif"], teacher_flips=5).validate()
