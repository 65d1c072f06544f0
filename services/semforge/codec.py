"""Array <-> bytes: the one place images, masks and label images are encoded and decoded.

Label images: uint16 when the largest id fits, uint32 otherwise (zlib TIFF).
Masks and overlays: PNG. Decoding accepts TIFF and anything Pillow reads.

Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``: a warning over 89 MP, an error over 179 MP) is
not a limit of this project: uploads are checked against ``MAX_MEGAPIXELS`` from their header before any
decode (``semforge.analysis._probe``), and masks, overlays and label images are our own objects, written from
images that passed that check. :func:`pil_open` therefore opens PNG and JPEG without Pillow's check, so that
an image accepted at the configured limit can be reopened by every stage (#15: a 20000x20000 image was
accepted and failed after 5 minutes when measure reopened its own mask).
"""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["label_dtype", "as_label_image", "encode_png", "encode_tiff", "encode_labels", "decode_array",
           "write_png", "write_labels", "pil_open"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pil_open(fp):
    """``PIL.Image.open`` without Pillow's decompression-bomb check, for PNG and JPEG (other formats: plain
    ``Image.open``, whose limit then stands).

    For our own objects and for uploads already checked against ``MAX_MEGAPIXELS`` from their header; the
    project's limit is the only one. Does not read the global ``Image.MAX_IMAGE_PIXELS`` (changing that would
    change it for every thread of the process).

    Parameters
    ----------
    fp : binary file object, positioned at the start of the image (kept open by the caller while the image
        is used)
    """
    from PIL import Image

    pos = fp.tell()
    head = fp.read(8)
    fp.seek(pos)
    if head == _PNG_MAGIC:
        from PIL import PngImagePlugin

        return PngImagePlugin.PngImageFile(fp)
    if head[:3] == b"\xff\xd8\xff":
        from PIL import JpegImagePlugin

        return JpegImagePlugin.jpeg_factory(fp)
    return Image.open(fp)


def label_dtype(max_id: int) -> type:
    """The dtype of a label image whose largest id is ``max_id``."""
    return np.uint16 if int(max_id) < 65535 else np.uint32


def as_label_image(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    n = int(lab.max()) if lab.size else 0
    return lab.astype(label_dtype(n), copy=False)


def encode_png(arr: np.ndarray, *, compress_level: int = 1) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_tiff(arr: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(arr), compression="zlib")
    return buf.getvalue()


def encode_labels(labels: np.ndarray) -> bytes:
    """A label image as zlib TIFF with the dtype rule of :func:`label_dtype`."""
    return encode_tiff(as_label_image(labels))


def decode_array(data: bytes) -> np.ndarray:
    """Pixels of a TIFF or PNG (or another Pillow format) as stored: no scaling, no conversion."""
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    with pil_open(io.BytesIO(data)) as im:  # our own objects: no Pillow bomb limit (module docstring)
        return np.asarray(im)


def write_png(path: str | os.PathLike, arr: np.ndarray, *, compress_level: int = 3) -> None:
    with open(path, "wb") as fh:
        fh.write(encode_png(arr, compress_level=compress_level))


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    with open(path, "wb") as fh:
        fh.write(encode_labels(labels))
