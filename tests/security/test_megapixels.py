"""Anything accepted can be processed end to end: MAX_MEGAPIXELS is the only pixel limit (#15).

The report: a 20000x20000 image (exactly the old 400 MP default) was accepted and failed with INTERNAL after
5 minutes, because measure reopened its own mask with Pillow, whose decompression-bomb check refuses more than
2 x ``PIL.Image.MAX_IMAGE_PIXELS`` (179 MP). The fast tests here lower Pillow's limit far below MAX_MEGAPIXELS
(the same situation, a thousand times cheaper): before the fix the job at the limit failed exactly like the
report's. ``test_real_pillow_limit_end_to_end`` (slow) does it at Pillow's real limit.
"""

from __future__ import annotations

import hashlib
import io
import os
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from semforge import codec
from semforge.common.v1 import common_pb2
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.storage import LocalStore, blob_key


@pytest.fixture
def tiny_pillow_limit(monkeypatch):
    """Pillow refuses anything over 2 x 5,000 = 10,000 px (a 100x100 image) from here on, in every thread."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(Image.DecompressionBombError):  # the limit is live
        Image.open(io.BytesIO(codec.encode_png(np.zeros((200, 200), np.uint8))))


def test_own_masks_and_uploads_have_no_pillow_limit(tiny_pillow_limit, tmp_path):
    from semforge.analysis import load_image
    from semforge.analysis._report import _thumb_tag

    mask = (np.arange(300 * 400).reshape(300, 400) % 7 == 0).astype(np.uint8) * 255
    assert np.array_equal(codec.decode_array(codec.encode_png(mask)), mask)  # measure's mask read
    assert load_image(codec.encode_png(mask)).pixels.shape == (300, 400)  # a PNG upload
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="JPEG")
    assert load_image(buf.getvalue()).pixels.shape == (300, 400)  # a JPEG upload
    (tmp_path / "overlay.png").write_bytes(codec.encode_png(np.dstack([mask] * 3)))
    assert "data:image/jpeg;base64," in _thumb_tag(tmp_path / "overlay.png")  # the report's thumbnail


def _image(h: int, w: int, seed: int = 5) -> np.ndarray:
    from semforge.training.synth import synthetic_sem

    img, _ = synthetic_sem(seed=seed, size=(h, w), n_particles=max(4, h * w // 12000), databar_rows=0)
    return img


def _upload_and_run(emb, path, segmenter: str = ""):
    from semforge.client import GatewayClient

    name = path.name
    with GatewayClient(emb.gateway_address, timeout_s=600) as c:
        up = c.upload(path)  # in chunks, as the client does
        opts = common_pb2.AnalysisOptions(pixel_size_nm=2.0, specimen_rows=-1, segmenter=segmenter)
        return up, c.analyze([up.image.ref], [name.rsplit(".", 1)[0]], opts)


def _tiff(img: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, img)
    return buf.getvalue()


def test_image_at_the_limit_succeeds_and_one_over_is_refused_from_the_header(tiny_pillow_limit, monkeypatch,
                                                                             tmp_path):
    from semforge.embedded import start_embedded

    h, w = 320, 400  # 128,000 px: 13 x Pillow's (lowered) error limit
    monkeypatch.setenv("MAX_MEGAPIXELS", str(h * w / 1e6))
    emb = start_embedded(store=LocalStore(tmp_path / "store"))
    try:
        img = _image(h, w)
        for name, data in (("at_limit.tif", _tiff(img)), ("at_limit.png", codec.encode_png(img))):
            (tmp_path / name).write_bytes(data)
            up, job = _upload_and_run(emb, tmp_path / name)
            assert (up.image.width, up.image.height) == (w, h)
            assert job.state == common_pb2.JOB_STATE_SUCCEEDED, f"{name}: {job.message}"
        over = _tiff(_image(h, w + 1, seed=6))
        with grpc.insecure_channel(emb.gateway_address) as ch:
            with pytest.raises(grpc.RpcError) as e:
                gateway_pb2_grpc.GatewayServiceStub(ch).Upload(
                    iter([gateway_pb2.UploadRequest(name="over.tif", data=over)]), timeout=60)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        msg = e.value.details()
        assert f"over.tif: {w + 1}x{h} px" in msg and "exceeds the limit of 0.128 MP" in msg, msg
        assert "MAX_MEGAPIXELS" in msg
        assert not emb.store.exists(blob_key(hashlib.sha256(over).hexdigest()))  # not kept
    finally:
        emb.stop(0.2)


@pytest.mark.slow
def test_real_pillow_limit_end_to_end(monkeypatch, tmp_path):
    """An image over Pillow's own error limit (2 x 89.5 MP = 179 MP), with MAX_MEGAPIXELS set exactly to its
    size, goes through upload, segment, measure, classify and the report: SUCCEEDED. Before the fix it failed
    at measure with INTERNAL (DecompressionBombError). ``SEMFORGE_BIG_SIDE`` (default 13420: 180.1 MP)."""
    from semforge.embedded import start_embedded

    side = int(os.environ.get("SEMFORGE_BIG_SIDE", "13420"))
    assert side * side > 2 * Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("MAX_MEGAPIXELS", str(side * side / 1e6))
    rng = np.random.default_rng(0)
    img = np.full((side, side), 60, np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 24 ** 2)
    for y, x in rng.integers(0, side - 64, size=(400, 2)):  # bright discs on a dark, slightly noisy field
        img[y:y + 64, x:x + 64][disc] = 200
    (tmp_path / "big.tif").write_bytes(_tiff(img))
    del img
    emb = start_embedded(store=LocalStore(tmp_path / "store"))
    try:
        t0 = time.monotonic()
        up, job = _upload_and_run(emb, tmp_path / "big.tif", segmenter=os.environ.get("SEMFORGE_BIG_SEGMENTER", "classical"))
        took = time.monotonic() - t0
        print(f"\n{side}x{side} ({side * side / 1e6:.1f} MP): {job.state} in {took:.0f} s")
        assert job.state == common_pb2.JOB_STATE_SUCCEEDED, job.message
    finally:
        emb.stop(0.2)
