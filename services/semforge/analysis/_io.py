"""Loading micrographs and their calibration.

Reads Zeiss SEM TIFF (``CZ_SEM`` tag), FEI/Thermo TIFF metadata, Gatan
DM3/DM4 and plain TIFF/PNG/JPEG (8/16-bit, float, RGB -> gray). The pixel size
comes from the file when present, from the caller otherwise, and the source is
always recorded: sizes are never silently reported in pixels.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Calibration",
    "LoadedImage",
    "ImageDecodeError",
    "load_image",
    "resolve_calibration",
    "to_gray_float",
]

_UNIT_TO_NM = {
    "pm": 1e-3,
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "\u00b5m": 1e3,
    "micron": 1e3,
    "mm": 1e6,
    "m": 1e9,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
}


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can read (empty, unknown or truncated)."""


@dataclass(frozen=True)
class Calibration:
    """Pixel size of an image and where it came from.

    Attributes
    ----------
    pixel_size_nm : float or None
        Edge length of one (square) pixel in nanometres; ``None`` when unknown.
    source : str
        ``"file:<kind>"`` (e.g. ``file:zeiss``), ``"user"`` or ``"none"``.
    """

    pixel_size_nm: float | None
    source: str

    @property
    def calibrated(self) -> bool:
        return self.pixel_size_nm is not None

    @property
    def unit(self) -> str:
        return "nm" if self.calibrated else "px"


@dataclass
class LoadedImage:
    """A decoded micrograph.

    Attributes
    ----------
    pixels : ndarray, shape (H, W)
        Gray values as read (dtype of the file; RGB converted to gray float32).
    calibration : Calibration
        Pixel size from the file (or ``Calibration(None, "none")``).
    format : str
        ``tiff``, ``png``, ``jpeg``, ``dm3``, ``dm4``...
    metadata : dict
        Instrument facts found in the file (detector, magnification, ...).
    """

    pixels: np.ndarray
    calibration: Calibration
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]


def _unit_factor(unit: str) -> float:
    u = str(unit).strip().lower().replace("\u03bc", "\u00b5")
    if u not in _UNIT_TO_NM:
        raise KeyError(unit)
    return _UNIT_TO_NM[u]


def _zeiss_pixel_size(tif) -> float | None:
    meta = tif.sem_metadata
    if not meta:
        return None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        if key in meta:
            entry = meta[key]
            try:
                value, unit = float(entry[1]), entry[2]
                size = value * _unit_factor(unit)
            except (IndexError, TypeError, ValueError, KeyError):
                continue
            if size > 0:
                return size
    return None


def _fei_pixel_size(tif) -> float | None:
    meta = tif.fei_metadata
    if not meta:
        return None
    for section in ("Scan", "EScan", "Image"):
        sec = meta.get(section) or {}
        value = sec.get("PixelWidth")
        if value:
            try:
                size = float(value) * 1e9  # metres
            except (TypeError, ValueError):
                continue
            if size > 0:
                return size
    return None


def _load_tiff(data: bytes) -> LoadedImage:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.pages:
                raise ImageDecodeError("TIFF file has no image pages")
            page = tif.pages[0]
            pixels = page.asarray()
            metadata: dict[str, Any] = {}
            pixel_size = None
            source = "none"
            try:
                pixel_size = _zeiss_pixel_size(tif)
                if pixel_size is not None:
                    source = "file:zeiss"
                    mag = tif.sem_metadata.get("ap_mag")
                    if mag:
                        metadata["magnification"] = str(mag[1])
                else:
                    pixel_size = _fei_pixel_size(tif)
                    if pixel_size is not None:
                        source = "file:fei"
            except Exception:  # a broken vendor tag must not make the image unreadable
                pixel_size, source = None, "none"
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"TIFF could not be decoded ({type(exc).__name__}: {exc}); is the file truncated?") from exc
    return LoadedImage(pixels, Calibration(pixel_size, source), "tiff", metadata)


def _load_dm(data: bytes, fmt: str) -> LoadedImage:
    import tempfile

    from ncempy.io import dm

    with tempfile.NamedTemporaryFile(suffix="." + fmt) as fh:
        fh.write(data)
        fh.flush()
        try:
            with dm.fileDM(fh.name) as f:
                ds = f.getDataset(0)
        except Exception as exc:
            raise ImageDecodeError(f"{fmt.upper()} file could not be decoded ({exc})") from exc
    pixels = np.asarray(ds["data"])
    if pixels.ndim == 3:
        pixels = pixels[0]
    pixel_size = None
    source = "none"
    try:
        size = float(ds["pixelSize"][-1])
        unit = ds["pixelUnit"][-1]
        if size > 0 and unit:
            pixel_size = size * _unit_factor(unit)
            source = "file:gatan"
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return LoadedImage(pixels, Calibration(pixel_size, source), fmt, {})


def _load_pillow(data: bytes) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "image").lower()
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
                pixels = np.asarray(im.convert("RGB"))
            else:
                pixels = np.asarray(im)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image (expected TIFF, PNG, JPEG, DM3 or DM4)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image could not be decoded ({exc}); is the file truncated?") from exc
    return LoadedImage(pixels, Calibration(None, "none"), fmt, {})


def _sniff(data: bytes) -> str:
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] in (b"\x00\x00\x00\x03",):
        return "dm3"
    if data[:4] in (b"\x00\x00\x00\x04",):
        return "dm4"
    return "pillow"


def to_gray_float(pixels: np.ndarray) -> np.ndarray:
    """Convert any decoded image to a float32 gray image scaled to [0, 1].

    Integer images are scaled by their dtype range; float images by their
    min/max. RGB(A) is converted with ITU-R 601 luma weights.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float32)
        if np.issubdtype(arr.dtype, np.integer):
            rgb /= float(np.iinfo(arr.dtype).max)
        arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(arr, 0, 1).astype(np.float32)
    if arr.ndim != 2:
        raise ImageDecodeError(f"expected a 2-D gray or RGB image, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return ((arr.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageDecodeError("image has no finite pixel values")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    out = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    out[~finite] = 0
    return out.astype(np.float32)


def load_image(source: str | os.PathLike | bytes, *, name: str | None = None) -> LoadedImage:
    """Decode a micrograph from a path or from bytes.

    Parameters
    ----------
    source : path or bytes
        The file. Its type is detected from its content, not its name.
    name : str, optional
        Used only in error messages.

    Returns
    -------
    LoadedImage

    Raises
    ------
    ImageDecodeError
        Empty, unknown, truncated, not 2-D, or with NaN/infinite pixels.
    FileNotFoundError
        ``source`` is a path that does not exist.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
    else:
        label = name or os.fspath(source)
        with open(source, "rb") as fh:
            data = fh.read()
    if len(data) == 0:
        raise ImageDecodeError(f"{label}: file is empty (0 bytes)")
    kind = _sniff(data)
    try:
        if kind == "tiff":
            img = _load_tiff(data)
        elif kind in ("dm3", "dm4"):
            img = _load_dm(data, kind)
        else:
            img = _load_pillow(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{label}: {exc}") from None
    px = img.pixels
    if px.ndim == 3 and px.shape[-1] in (3, 4):
        img.pixels = to_gray_float(px)
    elif px.ndim == 3 and px.shape[0] == 1:
        img.pixels = px[0]
    elif px.ndim != 2:
        raise ImageDecodeError(f"{label}: expected a 2-D image, got shape {px.shape}")
    if img.pixels.dtype.kind in "fc" and not np.isfinite(img.pixels).all():  # found by the fuzz run (#15)
        raise ImageDecodeError(f"{label}: image has NaN or infinite pixel values; export it as integer or clean it")
    if min(img.pixels.shape) < 8:
        raise ImageDecodeError(f"{label}: image is too small to analyse ({img.pixels.shape[1]}x{img.pixels.shape[0]} px)")
    return img


def resolve_calibration(file_cal: Calibration, *, user_pixel_size_nm: float | None = None) -> Calibration:
    """Choose the pixel size to use: the user's value overrides the file's.

    Raises
    ------
    ValueError
        A user pixel size that is not a positive finite number.
    """
    if user_pixel_size_nm is not None:
        v = float(user_pixel_size_nm)
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"pixel size must be a positive number of nm, got {user_pixel_size_nm!r}")
        return Calibration(v, "user")
    return file_cal
