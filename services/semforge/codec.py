"""Array <-> bytes: the one place images, masks and label images are encoded and decoded.

Label images: uint16 when the largest id fits, uint32 otherwise (zlib TIFF).
Masks and overlays: PNG. Decoding accepts TIFF and anything Pillow reads.
"""

from __future__ import annotations

import io
import os

import numpy as np

__all__ = ["label_dtype", "as_label_image", "encode_png", "encode_tiff", "encode_labels", "decode_array",
           "write_png", "write_labels"]


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
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def write_png(path: str | os.PathLike, arr: np.ndarray, *, compress_level: int = 3) -> None:
    with open(path, "wb") as fh:
        fh.write(encode_png(arr, compress_level=compress_level))


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    with open(path, "wb") as fh:
        fh.write(encode_labels(labels))
