"""Known answers for the appearance matching of renders (semforge adapt --render-style, #16)."""

import numpy as np
import pytest

from semforge.training.segmentation.style import fourier_style, match_histogram, restyle


def test_match_histogram_takes_the_reference_values_in_the_source_order():
    rng = np.random.default_rng(0)
    src = rng.permutation(64).reshape(8, 8).astype(np.float32)
    ref = np.linspace(0.2, 0.9, 64).astype(np.float32)[rng.permutation(64)].reshape(8, 8)
    out = match_histogram(src, ref)
    assert np.allclose(np.sort(out.ravel()), np.sort(ref.ravel()))  # the reference's gray values exactly
    assert np.array_equal(np.argsort(out.ravel()), np.argsort(src.ravel()))  # in the source's rank order
    # a larger reference: its quantiles
    big = np.repeat(np.array([0.1, 0.5, 0.9], np.float32), 100)
    out = match_histogram(np.arange(6, dtype=np.float32).reshape(2, 3), big)
    assert out.ravel().tolist() == pytest.approx([0.1, 0.1, 0.5, 0.5, 0.9, 0.9])


def test_fourier_style_swaps_only_the_low_frequency_amplitude():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    src = 0.5 + 0.1 * np.sin(xx / 3.0) + 0.02 * rng.standard_normal((64, 64))  # fine structure
    ref = 0.3 + 0.15 * (yy / 63.0)  # darker, with a slow gradient
    out = fourier_style(src, ref, beta=0.05)  # band half-width 3 px of the 64-px spectrum
    assert out.dtype == np.float32 and out.shape == src.shape
    assert out.mean() == pytest.approx(ref.mean(), abs=1e-4)  # the zero frequency comes from the reference
    diff = np.fft.fftshift(np.fft.fft2(out.astype(np.float64) - src))
    band = np.zeros((64, 64), bool)
    band[32 - 3:32 + 4, 32 - 3:32 + 4] = True
    assert np.abs(diff[~band]).max() < 1e-2 * np.abs(diff[band]).max()  # nothing outside the band changed
    assert np.allclose(fourier_style(src, src), src, atol=1e-6)  # its own style: unchanged
    assert np.allclose(restyle("none", src, ref), src)
    with pytest.raises(ValueError, match="one shape"):
        fourier_style(src, ref[:32])
    with pytest.raises(ValueError, match="beta"):
        fourier_style(src, ref, beta=0.6)
    with pytest.raises(ValueError, match="unknown render style"):
        restyle("cyclegan", src, ref)


def test_histogram_by_class_keeps_particles_bright_whatever_the_density():
    from semforge.training.segmentation.style import class_quantiles, match_histogram_by_class

    # a dense render (half particles) matched to a sparse real field (5 % particles): whole-image matching would
    # make most render particles background-gray; by class, particles take particle values, background background
    rng = np.random.default_rng(2)
    src_fg = np.zeros((20, 20), bool)
    src_fg[:, :10] = True
    src = np.where(src_fg, 0.8, 0.3) + 0.01 * rng.standard_normal((20, 20))
    real_fg = np.zeros((40, 40), bool)
    real_fg[:4, :20] = True
    real = np.where(real_fg, 0.6, 0.15) + 0.02 * rng.standard_normal((40, 40))
    bg_q, fg_q = class_quantiles(real, real_fg)
    out = match_histogram_by_class(src, src_fg, bg_q, fg_q)
    assert out[src_fg].min() > 0.5 and out[~src_fg].max() < 0.25
    assert abs(np.median(out[src_fg]) - 0.6) < 0.01 and abs(np.median(out[~src_fg]) - 0.15) < 0.01
    whole = match_histogram(src, real)
    assert (whole[src_fg] < 0.3).mean() > 0.8  # the density mismatch the by-class matching avoids
    with pytest.raises(ValueError, match="does not match"):
        match_histogram_by_class(src, src_fg[:10], bg_q, fg_q)


def test_fourier_style_can_keep_the_render_mean():
    yy, xx = np.mgrid[:64, :64]
    src = 0.5 + 0.1 * np.sin(xx / 3.0)
    ref = 0.2 + 0.1 * (yy / 63.0)
    out = fourier_style(src, ref, beta=0.05, keep_mean=True)
    assert out.mean() == pytest.approx(src.mean(), abs=1e-4)
    assert not np.allclose(out, src, atol=1e-3)  # the slow gradient of the reference came in
