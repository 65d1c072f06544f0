"""Fuzz run over the image decoders and the header probe (a few minutes; `pytest -m slow`)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.parametrize("seed_set", ["images", "em"])
def test_fuzz_decoders_and_probe(tmp_path, seed_set):
    """``images``: TIFF/PNG/JPEG; ``em``: DM3, DM4, TIA SER, Velox and Berkeley EMD, MRC (#15)."""
    seconds = float(os.environ.get("SEMFORGE_FUZZ_SECONDS", "180"))
    out = tmp_path / "fuzz.json"

    def limit_memory():  # a decoder that allocates a bomb fails with MemoryError instead of taking the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    r = subprocess.run([sys.executable, str(HERE / "fuzz_images.py"), "--seconds", str(seconds), "--json", str(out),
                        "--seeds", seed_set],
                       capture_output=True, text=True, timeout=seconds + 300, preexec_fn=limit_memory)
    rep = json.loads(out.read_text())
    print(json.dumps(rep["stats"]))
    assert rep["stats"]["inputs"] > 1000
    assert rep["crashes"] == {}, json.dumps(rep["crashes"], indent=1)[:4000]
    assert rep["probe_mismatches"] == [], rep["probe_mismatches"][:3]
    assert rep["stats"].get("non_finite_gray", 0) == 0  # NaN/inf images are refused by load_image
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_regression_nonfinite_float_image_is_a_decode_error(bad):
    """Found by the fuzz run: a float TIFF with NaN/inf decoded to an all-NaN gray image."""
    import io

    import tifffile

    from semforge.analysis import ImageDecodeError, load_image

    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[10, 10] = bad
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    with pytest.raises(ImageDecodeError, match="NaN or infinite"):
        load_image(buf.getvalue(), name="x.tif")
    arr[10, 10] = 0.5
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    assert load_image(buf.getvalue()).pixels.shape == (64, 64)
