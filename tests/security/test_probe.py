"""Header-only image size probe: limits checked before any decode, nothing image-sized allocated."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image

from semforge.analysis import ImageDecodeError
from semforge.analysis._probe import ImageTooLarge, check_image_limits, probe_image


def _huge_tiff_header(w=30000, h=30000, bigtiff=False) -> bytes:
    """A TIFF header (an IFD with width, length, bits, deflate compression, one strip) claiming w x h 8-bit
    pixels, followed by a few bytes of "compressed" data: the shape of a decompression bomb."""
    bo = "<"
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0), (277, 3, 1),
            (278, 4, h), (279, 4, 16)]
    if bigtiff:
        head = b"II+\x00" + struct.pack(bo + "HHQ", 8, 0, 16)
        ifd_at = 16
        ifd_len = 8 + 20 * len(tags) + 8
        data_at = ifd_at + ifd_len
        ifd = struct.pack(bo + "Q", len(tags)) + b"".join(
            struct.pack(bo + "HHQQ", t, 16 if ty == 4 else ty, 1, data_at if t == 273 else v) for t, ty, v in tags)
        ifd += struct.pack(bo + "Q", 0)
    else:
        head = b"II*\x00" + struct.pack(bo + "I", 8)
        ifd_at = 8
        ifd_len = 2 + 12 * len(tags) + 4
        data_at = ifd_at + ifd_len
        ifd = struct.pack(bo + "H", len(tags)) + b"".join(
            struct.pack(bo + "HHI" + ("H2x" if ty == 3 else "I"), t, ty, 1, data_at if t == 273 else v)
            for t, ty, v in tags)
        ifd += struct.pack(bo + "I", 0)
    return head + ifd + b"\x78\x9c" + b"\x00" * 14


@pytest.mark.parametrize("bigtiff", [False, True])
def test_30000_square_tiff_rejected_from_the_header_without_allocating(bigtiff):
    data = _huge_tiff_header(bigtiff=bigtiff)
    assert len(data) < 1_000_000
    tracemalloc.start()
    with pytest.raises(ImageTooLarge, match="30000x30000 px") as e:
        check_image_limits(data, max_pixels=400e6)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * len(data) + 1_000_000  # the header bytes, never the 900 MB of pixels
    assert e.value.header.pixels == 900_000_000 and e.value.limit == "pixels"


@pytest.mark.parametrize("fmt,mode,size", [("PNG", "L", (640, 480)), ("PNG", "RGB", (33, 17)),
                                           ("JPEG", "L", (1024, 768)), ("JPEG", "RGB", (100, 50)),
                                           ("TIFF", "I;16", (300, 200))])
def test_probe_agrees_with_a_full_decode(fmt, mode, size):
    buf = io.BytesIO()
    kw = {"exif": Image.Exif()} if fmt == "JPEG" else {}
    Image.new(mode, size).save(buf, fmt, **kw)
    h = probe_image(buf.getvalue())
    assert (h.width, h.height) == size and h.file_bytes == len(buf.getvalue())
    assert h.samples == (3 if mode == "RGB" else 1)


def test_probe_of_a_zeiss_tiff_file_reads_only_the_header(sample_tiff):
    path, truth = sample_tiff
    with open(path, "rb") as fh:
        h = probe_image(fh)
    assert (h.height, h.width) == truth.shape and h.format == "tiff"


def test_limits_bytes_and_decoded_size():
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000)).save(buf, "PNG")
    data = buf.getvalue()
    assert check_image_limits(data, max_pixels=2e6).pixels == 2_000_000  # exactly at the limit: accepted
    with pytest.raises(ImageTooLarge, match="MP"):
        check_image_limits(data, max_pixels=2e6 - 1)
    with pytest.raises(ImageTooLarge, match="bytes") as e:
        check_image_limits(data, max_bytes=len(data) - 1)
    assert e.value.limit == "bytes"
    with pytest.raises(ImageTooLarge, match="MiB"):
        check_image_limits(data, max_decoded_bytes=5 * 2**20)  # 6 MB of RGB


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"), (b"GIF89a....", "unknown"), (b"II*\x00", "truncated"),
    (b"II*\x00" + struct.pack("<I", 10**9), "outside the file"),
    (b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 13, b"IHDR") + struct.pack(">IIBB", 0, 10, 8, 0) + b"\0" * 7, "0x10"),
    (b"\xff\xd8\xff\xd9", "frame header"), (b"\xff\xd8\x00\x00", "marker"), (b"\xff\xd8\x00", "truncated"),
])
def test_bad_headers_are_decode_errors(data, msg):
    with pytest.raises(ImageDecodeError, match=msg):
        probe_image(data)
