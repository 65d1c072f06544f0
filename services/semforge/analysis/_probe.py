"""Image size from the file header, before any decode: pixel and byte limits that cost nothing to check.

A 30000x30000 TIFF is a few kilobytes of header; decoding it first (as
``load_image`` does) allocates the full array, 860 MB and more, before any
limit can be applied. :func:`probe_image` reads only the header (TIFF/BigTIFF
IFD 0, PNG IHDR, JPEG SOFn, the DM3/DM4 magic, the HDF5 metadata of an EMD) and :func:`check_image_limits`
refuses what is too large, without allocating anything image-sized.

Where to call it: in the gateway's ``Upload`` right after the bytes are
stored and before ``load_image`` (``_image_info``): open the object, probe,
and on :class:`ImageTooLarge` delete the object (a rejected upload is never
kept) and answer RESOURCE_EXHAUSTED with the message; on
:class:`~semforge.analysis.ImageDecodeError` delete it and answer
INVALID_ARGUMENT. This limit is the only pixel limit: our own masks and overlays,
and uploads that passed it, are opened without Pillow's decompression-bomb check
(``semforge.codec.pil_open``), so anything accepted can be reopened by every stage.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import ObjectTooLarge
from ._io import ImageDecodeError

__all__ = ["ImageHeader", "ImageTooLarge", "check_image_limits", "probe_image"]

_MAX_JPEG_SEGMENTS = 4096
_MAX_TIFF_ENTRIES = 4096


class ImageTooLarge(ObjectTooLarge):
    """An image over a pixel or byte limit (found from its header; nothing was decoded): RESOURCE_EXHAUSTED.

    Attributes
    ----------
    header : ImageHeader or None
    limit : str
        Which limit: ``"pixels"`` or ``"bytes"``.
    """

    def __init__(self, message: str, header: "ImageHeader | None", limit: str):
        super().__init__(message, field="data")
        self.header, self.limit = header, limit


@dataclass(frozen=True)
class ImageHeader:
    """What the header says.

    Attributes
    ----------
    format : str
        ``tiff``, ``bigtiff``, ``png``, ``jpeg``, ``dm3``, ``dm4`` or ``emd`` (HDF5).
    width, height : int
        Pixels; 0 when the header does not say (DM3/DM4: their data are not
        compressed, so the byte limit bounds the pixels).
    frames : int
        Frames the decoder reads whole (an EMD stack), 1 otherwise; counted in :attr:`pixels`.
    samples : int
        Samples per pixel (1 gray, 3 RGB, ...).
    bits : int
        Bits per sample.
    file_bytes : int
        Size of the file.
    """

    format: str
    width: int
    height: int
    samples: int = 1
    bits: int = 8
    file_bytes: int = 0
    frames: int = 1

    @property
    def pixels(self) -> int:
        """Pixels the decoder allocates (every frame of a stack)."""
        return self.width * self.height * self.frames

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array (at least one byte per sample)."""
        return self.pixels * self.samples * max(1, (self.bits + 7) // 8)


def _as_file(source) -> tuple[BinaryIO, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if hasattr(source, "read") and hasattr(source, "seek"):
        return source, False
    return open(source, "rb"), True


def _read(fh: BinaryIO, offset: int, n: int) -> bytes:
    if not 0 <= offset < 1 << 62:
        raise ImageDecodeError(f"header points outside the file (offset {offset})")
    fh.seek(offset)
    b = fh.read(n)
    if len(b) != n:
        raise ImageDecodeError(f"header truncated: needed {n} bytes at offset {offset}")
    return b


def _tiff(fh: BinaryIO, head: bytes, size: int) -> ImageHeader:
    bo = "<" if head[:2] == b"II" else ">"
    big = struct.unpack(bo + "H", head[2:4])[0] == 43
    if big:
        bytesize, _, ifd = struct.unpack(bo + "HHQ", _read(fh, 4, 12))
        if bytesize != 8:
            raise ImageDecodeError(f"BigTIFF with offset size {bytesize} (expected 8)")
        nfmt, efmt, esize, inline = "Q", "HHQ", 20, 8
    else:
        ifd = struct.unpack(bo + "I", _read(fh, 4, 4))[0]
        nfmt, efmt, esize, inline = "H", "HHI", 12, 4
    if not 8 <= ifd < size:
        raise ImageDecodeError(f"TIFF first IFD offset {ifd} outside the file ({size} bytes)")
    ncount = struct.calcsize(nfmt)
    n = struct.unpack(bo + nfmt, _read(fh, ifd, ncount))[0]
    if not 0 < n <= _MAX_TIFF_ENTRIES:
        raise ImageDecodeError(f"TIFF IFD with {n} entries")
    entries = _read(fh, ifd + ncount, n * esize)
    type_size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
    type_fmt = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q", 18: "Q"}
    vals: dict[int, int] = {}
    for i in range(n):
        e = entries[i * esize:(i + 1) * esize]
        tag, typ, count = struct.unpack(bo + efmt, e[:esize - inline])
        if tag not in (256, 257, 258, 277) or typ not in type_fmt or count < 1:
            continue
        raw = e[4 + (8 if big else 4):]
        if type_size[typ] * count > inline:  # values elsewhere: we need only the first one
            off = struct.unpack(bo + ("Q" if big else "I"), raw)[0]
            raw = _read(fh, off, type_size[typ])
        v = struct.unpack(bo + type_fmt[typ], raw[:type_size[typ]])[0]
        vals[tag] = max(v, vals.get(tag, v))  # a repeated tag: the larger value, never under-report
    if 256 not in vals or 257 not in vals:
        raise ImageDecodeError("TIFF without ImageWidth/ImageLength in its first IFD")
    w, h = int(vals[256]), int(vals[257])
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"TIFF of {w}x{h} pixels")
    return ImageHeader("bigtiff" if big else "tiff", w, h, max(1, int(vals.get(277, 1))),
                       max(1, int(vals.get(258, 1))), size)


def _png(fh: BinaryIO, size: int) -> ImageHeader:
    length, ctype = struct.unpack(">I4s", _read(fh, 8, 8))
    if ctype != b"IHDR" or length != 13:
        raise ImageDecodeError("PNG without an IHDR chunk first")
    w, h, depth, color = struct.unpack(">IIBB", _read(fh, 16, 10))
    if w == 0 or h == 0:
        raise ImageDecodeError(f"PNG of {w}x{h} pixels")
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if samples is None:
        raise ImageDecodeError(f"PNG colour type {color} is not valid")
    return ImageHeader("png", w, h, samples, depth, size)


def _jpeg(fh: BinaryIO, size: int) -> ImageHeader:
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        marker = _read(fh, pos, 2)
        if marker[0] != 0xFF:
            raise ImageDecodeError(f"JPEG marker expected at offset {pos}")
        m = marker[1]
        if m == 0xFF:  # fill byte
            pos += 1
            continue
        if m in (0x01, 0xD8) or 0xD0 <= m <= 0xD7:  # markers without a length
            pos += 2
            continue
        if m in (0xD9, 0xDA):
            raise ImageDecodeError("JPEG without a frame header (SOF) before the scan")
        length = struct.unpack(">H", _read(fh, pos + 2, 2))[0]
        if length < 2:
            raise ImageDecodeError(f"JPEG segment of length {length}")
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            bits, h, w, comps = struct.unpack(">BHHB", _read(fh, pos + 4, 6))
            if w == 0 or h == 0:
                raise ImageDecodeError(f"JPEG of {w}x{h} pixels (height given later, DNL) is not supported")
            return ImageHeader("jpeg", w, h, max(1, comps), bits, size)
        pos += 2 + length
    raise ImageDecodeError(f"JPEG with more than {_MAX_JPEG_SEGMENTS} segments before its frame header")


_MAX_HDF5_OBJECTS = 10_000


def _hdf5(fh: BinaryIO, size: int) -> ImageHeader:
    """EMD (HDF5: Velox, Berkeley): the largest dataset's shape and type from the file's metadata, nothing of
    its data read. HDF5 datasets may be compressed (a few kB can decode to gigabytes), so the byte size does not
    bound them as it does DM3/DM4, SER and MRC."""
    import h5py

    best: list = []
    seen = [0]

    def visit(name, obj):
        seen[0] += 1
        if seen[0] > _MAX_HDF5_OBJECTS:
            raise ImageDecodeError(f"HDF5 file with more than {_MAX_HDF5_OBJECTS} objects")
        if isinstance(obj, h5py.Dataset) and obj.shape and len(obj.shape) >= 2:
            n = 1
            for d in obj.shape:
                n *= int(d)
            if not best or n > best[0]:
                best[:] = [n, name, tuple(int(d) for d in obj.shape), obj.dtype.itemsize]

    fh.seek(0)
    try:
        with h5py.File(fh, "r") as f:
            f.visititems(visit)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError, ... on bad files
        raise ImageDecodeError(f"HDF5/EMD file could not be read ({type(exc).__name__}: {exc})") from None
    if not best:
        raise ImageDecodeError("HDF5/EMD file without an image dataset")
    _, name, shape, itemsize = best
    if isinstance(name, bytes):  # a damaged name table (found by the fuzz run)
        name = name.decode("utf-8", "replace")
    if "Data/Image" in str(name) and len(shape) >= 3:  # Velox: (height, width, frames)
        h, w, frames = shape[0], shape[1], 1
        for d in shape[2:]:
            frames *= d
    else:  # Berkeley EMD and others: (..., height, width)
        h, w, frames = shape[-2], shape[-1], 1
        for d in shape[:-2]:
            frames *= d
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"EMD dataset of shape {shape}")
    return ImageHeader("emd", w, h, 1, 8 * itemsize, size, max(1, frames))


def probe_image(source) -> ImageHeader:
    """Read an image's dimensions from its header only.

    Parameters
    ----------
    source : bytes, path or seekable binary file
        Only the header bytes are read (a few hundred, more for JPEG files
        with large metadata segments).

    Returns
    -------
    ImageHeader

    Raises
    ------
    ImageDecodeError
        Empty, unknown format, or a header that is truncated or inconsistent.

    Examples
    --------
    >>> import struct
    >>> tiff = b"II*\\x00" + struct.pack("<I", 8) + struct.pack("<H", 2) + \\
    ...     struct.pack("<HHII", 256, 4, 1, 30000) + struct.pack("<HHII", 257, 4, 1, 30000) + b"\\x00" * 4
    >>> probe_image(tiff).pixels
    900000000
    """
    fh, close = _as_file(source)
    try:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            raise ImageDecodeError("file is empty (0 bytes)")
        fh.seek(0)
        head = fh.read(8)
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(fh, head, size)
        if head == b"\x89PNG\r\n\x1a\n":
            return _png(fh, size)
        if head[:2] == b"\xff\xd8":
            return _jpeg(fh, size)
        if head[:4] in (b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"):
            return ImageHeader(f"dm{head[3]}", 0, 0, 1, 8, size)
        if head == b"\x89HDF\r\n\x1a\n":
            return _hdf5(fh, size)
        raise ImageDecodeError("not a TIFF, PNG, JPEG, DM3/DM4 or EMD file (unknown header)")
    except struct.error as exc:
        raise ImageDecodeError(f"header truncated: {exc}") from None
    finally:
        if close:
            fh.close()


def check_image_limits(source, *, max_pixels: float | None = None, max_bytes: int | None = None,
                       max_decoded_bytes: int | None = None) -> ImageHeader:
    """:func:`probe_image`, then refuse an image over a limit.

    Parameters
    ----------
    max_pixels : float, optional
        Largest width x height.
    max_bytes : int, optional
        Largest file size (and, for formats whose header gives no size, the
        bound on their uncompressed data).
    max_decoded_bytes : int, optional
        Largest decoded array (pixels x samples x bytes per sample).

    Raises
    ------
    ImageTooLarge
        With a message naming the size and the limit.
    ImageDecodeError
        As :func:`probe_image`.
    """
    h = probe_image(source)
    if max_bytes is not None and h.file_bytes > max_bytes:
        raise ImageTooLarge(f"file of {h.file_bytes} bytes exceeds the limit of {max_bytes} bytes", h, "bytes")
    if max_pixels is not None and h.pixels > max_pixels:
        frames = f" x {h.frames} frames" if h.frames > 1 else ""
        raise ImageTooLarge(f"{h.width}x{h.height} px{frames} ({h.pixels / 1e6:.1f} MP) exceeds the limit of "
                            f"{max_pixels / 1e6:g} MP", h, "pixels")
    if max_decoded_bytes is not None and h.decoded_bytes > max_decoded_bytes:
        raise ImageTooLarge(f"{h.width}x{h.height} px x {h.samples} x {h.bits} bit decodes to "
                            f"{h.decoded_bytes / 2**20:.0f} MiB, over the limit of {max_decoded_bytes / 2**20:.0f} MiB",
                            h, "pixels")
    return h
