"""EM files (#15): limits from the header before any decode, and bad files as clear INVALID_ARGUMENT.

An EMD is HDF5, whose datasets may be compressed: a file of a few kilobytes can hold a 20000x20000 image of
zeros that decodes to 800 MB (DM3/DM4, SER and MRC are not compressed: their byte size bounds them). The probe
reads the HDF5 metadata (shape, type) and the gateway refuses such a file before decoding it.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import grpc
import numpy as np
import pytest

from semforge.analysis import ImageDecodeError, load_image
from semforge.analysis._emfiles import write_berkeley_emd, write_dm, write_mrc, write_ser, write_velox_emd
from semforge.analysis._probe import ImageTooLarge, check_image_limits, probe_image
from semforge.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from semforge.storage import blob_key


def _velox_bomb(path, h=20000, w=20000, frames=1):
    """A Velox EMD whose only dataset is gzip-compressed and never written (all fill value): tiny on disk."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("Data/Image/0123456789abcdef")
        g.create_dataset("Data", shape=(h, w, frames), dtype=np.uint16, chunks=(1000, 1000, 1), compression="gzip")
        g.create_dataset("Metadata", data=np.zeros((16, 1), np.uint8))
    return path.read_bytes()


def test_compressed_emd_bomb_is_refused_from_the_header(tmp_path):
    data = _velox_bomb(tmp_path / "bomb.emd")
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge) as e:
            check_image_limits(data, max_pixels=180e6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "20000x20000 px (400.0 MP) exceeds the limit of 180 MP" in str(e.value)
    assert peak < 20 * len(data) + (4 << 20)  # nothing image-sized (a decode: 800 MB)
    stack = _velox_bomb(tmp_path / "stack.emd", 4000, 4000, 20)  # 16 MP a frame, 20 frames read whole
    with pytest.raises(ImageTooLarge, match=r"4000x4000 px x 20 frames \(320.0 MP\)"):
        check_image_limits(stack, max_pixels=180e6)


@pytest.mark.parametrize("fmt", ["velox", "berkeley"])
def test_probe_agrees_with_the_decoder_on_emd(tmp_path, fmt):
    img = (np.arange(48 * 80).reshape(48, 80) % 251).astype(np.uint16)
    p = tmp_path / "x.emd"
    if fmt == "velox":
        write_velox_emd(p, img, 1e-9)
    else:
        write_berkeley_emd(p, img.astype(np.float32), 1.2)
    h = probe_image(p.read_bytes())
    got = load_image(p.read_bytes()).pixels
    assert (h.format, h.width, h.height, h.frames) == ("emd", 80, 48, 1) and got.shape == (48, 80)


def _bad_em_files(tmp_path):
    img = (np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint16)
    out = {}
    for name, write in [("a.dm3", lambda p: write_dm(p, img, 1.0, version=3)),
                        ("b.dm4", lambda p: write_dm(p, img, 1.0, version=4)),
                        ("c.ser", lambda p: write_ser(p, img, 1e-9)),
                        ("d.emd", lambda p: write_velox_emd(p, img, 1e-9)),
                        ("e.mrc", lambda p: write_mrc(p, img.astype(np.float32), 1.0))]:
        write(tmp_path / name)
        good = (tmp_path / name).read_bytes()
        out[name] = good[: len(good) // 2]  # truncated: the commonest damage
    return out


def test_damaged_em_files_are_clear_decode_errors(tmp_path):
    for name, data in _bad_em_files(tmp_path).items():
        with pytest.raises(ImageDecodeError) as e:
            load_image(data, name=name)
        assert str(e.value).startswith(f"{name}: ") and ("could not be decoded" in str(e.value)
                                                         or "not a recognised image" in str(e.value)), str(e.value)




def _upload(emb, name, data):
    with grpc.insecure_channel(emb.gateway_address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            gateway_pb2_grpc.GatewayServiceStub(ch).Upload(iter([gateway_pb2.UploadRequest(name=name, data=data)]),
                                                           timeout=60)
    return e.value


def test_gateway_refuses_emd_bomb_and_damaged_em_files(emb, tmp_path):
    data = _velox_bomb(tmp_path / "bomb.emd")
    err = _upload(emb, "bomb.emd", data)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "bomb.emd: 20000x20000 px" in err.details() and "MAX_MEGAPIXELS" in err.details()
    assert not emb.store.exists(blob_key(hashlib.sha256(data).hexdigest()))
    for name, bad in _bad_em_files(tmp_path).items():
        err = _upload(emb, name, bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        assert err.details().startswith(f"{name}: "), err.details()
        assert not emb.store.exists(blob_key(hashlib.sha256(bad).hexdigest()))
