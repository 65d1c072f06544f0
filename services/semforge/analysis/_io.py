"""Loading micrographs and their calibration.

Calibration is read from: Gatan DM3/DM4, Thermo Fisher Velox EMD, Berkeley
EMD, FEI/TIA SER and MRC (through ncempy); Zeiss (``CZ_SEM``), FEI/Thermo,
Tescan, ImageJ and OME TIFF (through tifffile, Tescan's tag text by us); JEOL
and Hitachi sidecar ``.txt`` files beside a TIFF given by path; baseline TIFF
resolution in pixels/cm. PNG/JPEG carry none. The pixel size comes from the
file when present, from the caller otherwise, and the source is always
recorded: sizes are never silently reported in pixels. See docs/metrology.md.
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
    "intensity_range",
    "sidecar_pixel_size",
    "write_labels_tiff",
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
        ``tiff``, ``png``, ``jpeg``, ``dm3``, ``dm4``, ``emd``, ``ser``, ``mrc``...
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
    u = str(unit).strip().lower().replace("\u03bc", "\u00b5").replace("_", "").strip("[]").strip()
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


def _text_value(text: str, key: str) -> str | None:
    """Value of ``key=value`` / ``key value`` in an INI-like text (first match, case-sensitive key)."""
    import re

    m = re.search(r"(?m)^\s*" + re.escape(key) + r"\s*[=\s]\s*(\S[^\r\n]*)", text)
    return m.group(1).strip() if m else None


def _tescan_pixel_size(tif) -> float | None:
    tag = tif.pages[0].tags.get(50431)
    if tag is None:
        return None
    raw = tag.value
    text = raw.decode("latin-1", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    v = _text_value(text, "PixelSizeX")
    return float(v) * 1e9 if v else None  # metres


def _imagej_pixel_size(tif) -> float | None:
    meta = tif.imagej_metadata
    if not meta or not meta.get("unit"):
        return None
    unit = str(meta["unit"]).replace("\\u00B5", "\u00b5").replace("\\u00b5", "\u00b5")
    xres = tif.pages[0].tags.get("XResolution")
    if xres is None:
        return None
    num, den = xres.value
    if not num or not den:
        return None
    return (den / num) * _unit_factor(unit)


def _ome_pixel_size(tif) -> float | None:
    import xml.etree.ElementTree as ET

    xml = tif.ome_metadata
    if not xml:
        return None
    for el in ET.fromstring(xml).iter():
        if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
            return float(el.get("PhysicalSizeX")) * _unit_factor(el.get("PhysicalSizeXUnit", "\u00b5m"))
    return None


def _resolution_pixel_size(tif) -> float | None:
    """Baseline TIFF X resolution in pixels per centimetre (inch-based values are screen dpi, not calibration)."""
    page = tif.pages[0]
    xres, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if xres is None or unit is None or int(unit.value) != 3:
        return None
    num, den = xres.value
    if not num or not den:
        return None
    size = den / num * 1e7
    return size if size <= 2e3 else None  # a micrograph's pixel is under 2 um


def sidecar_pixel_size(text: str) -> tuple[float, str] | None:
    """Pixel size (nm) from a JEOL or Hitachi SEM sidecar ``.txt``, and which kind it was.

    JEOL: ``$$SM_MICRON_BAR`` (scale-bar length in px) and
    ``$$SM_MICRON_MARKER`` (its length with unit, e.g. ``200nm``).
    Hitachi: ``PixelSize`` in nm.
    """
    import re

    bar, marker = _text_value(text, "$$SM_MICRON_BAR"), _text_value(text, "$$SM_MICRON_MARKER")
    if bar and marker:
        m = re.fullmatch(r"([0-9.]+)\s*([a-zA-Z\u00b5\u03bc]+)", marker.strip())
        if m and float(bar) > 0:
            return float(m.group(1)) * _unit_factor(m.group(2)) / float(bar), "file:jeol-txt"
    v = _text_value(text, "PixelSize")
    if v:
        return float(v), "file:hitachi-txt"
    return None


_TIFF_READERS = (("file:zeiss", _zeiss_pixel_size), ("file:fei", _fei_pixel_size), ("file:tescan", _tescan_pixel_size),
                 ("file:imagej", _imagej_pixel_size), ("file:ome", _ome_pixel_size))


def _load_tiff(data: bytes, sidecar: str | None = None) -> LoadedImage:
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
            for kind, reader in _TIFF_READERS:
                try:  # a broken vendor tag must not make the image unreadable
                    size = reader(tif)
                except Exception:
                    size = None
                if size is not None and np.isfinite(size) and size > 0:
                    pixel_size, source = float(size), kind
                    break
            if source == "file:zeiss":
                mag = (tif.sem_metadata or {}).get("ap_mag")
                if mag:
                    metadata["magnification"] = str(mag[1])
            if pixel_size is None and sidecar:
                try:
                    found = sidecar_pixel_size(sidecar)
                except (KeyError, ValueError):
                    found = None
                if found and found[0] > 0:
                    pixel_size, source = found
            if pixel_size is None:
                try:
                    pixel_size = _resolution_pixel_size(tif)
                except Exception:
                    pixel_size = None
                if pixel_size is not None:
                    source = "file:tiff-resolution"
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"TIFF could not be decoded ({type(exc).__name__}: {exc}); is the file truncated?") from exc
    return LoadedImage(pixels, Calibration(pixel_size, source), "tiff", metadata)


def _ncempy_read(data: bytes, fmt: str) -> dict:
    """Read one dataset with ncempy's reader for ``fmt`` from bytes (ncempy wants a file)."""
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "image." + fmt)
        with open(path, "wb") as fh:
            fh.write(data)
        with contextlib.redirect_stdout(io.StringIO()):  # ncempy prints on errors
            if fmt in ("dm3", "dm4"):
                from ncempy.io import dm

                with dm.fileDM(path) as f:
                    return f.getDataset(0)
            if fmt == "ser":
                from ncempy.io import ser

                return ser.serReader(path)
            if fmt == "mrc":
                from ncempy.io import mrc

                return mrc.mrcReader(path)
            if fmt == "emd":
                import h5py

                with h5py.File(path, "r") as h:
                    velox = "Data/Image" in h
                if velox:
                    from ncempy.io import emdVelox

                    out = emdVelox.emdVeloxReader(path, 0)
                    out["_kind"] = "velox"
                    return out
                from ncempy.io import emd

                out = emd.emdReader(path, 0)
                out["_kind"] = "emd"
                return out
    raise ValueError(fmt)


_NCEMPY_SOURCE = {"dm3": "file:gatan", "dm4": "file:gatan", "ser": "file:tia", "mrc": "file:mrc",
                  "velox": "file:velox", "emd": "file:emd"}


def _load_ncempy(data: bytes, fmt: str) -> LoadedImage:
    """Gatan DM3/DM4, FEI/TIA SER, MRC, Velox and Berkeley EMD through ncempy."""
    try:
        ds = _ncempy_read(data, fmt)
    except Exception as exc:
        raise ImageDecodeError(f"{fmt.upper()} file could not be decoded ({type(exc).__name__}: {exc}); "
                               "is the file truncated?") from exc
    if not ds or "data" not in ds:
        raise ImageDecodeError(f"{fmt.upper()} file holds no image")
    pixels = np.asarray(ds["data"])
    while pixels.ndim > 2 and not (pixels.ndim == 3 and pixels.shape[-1] in (3, 4)):
        pixels = pixels[0]  # first frame of a stack / series
    kind = ds.get("_kind", fmt)
    pixel_size, source = None, "none"
    try:
        sizes, units = ds["pixelSize"], ds["pixelUnit"]
        size = float(np.ravel(sizes)[-1])
        unit = units if isinstance(units, str) else list(units)[-1]
        if size > 0 and unit:
            pixel_size, source = size * _unit_factor(unit), _NCEMPY_SOURCE[kind]
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return LoadedImage(pixels, Calibration(pixel_size, source), "emd" if kind in ("velox", "emd") else fmt, {})


def _load_pillow(data: bytes) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    from ..codec import pil_open

    try:  # PNG/JPEG without Pillow's bomb limit: MAX_MEGAPIXELS, checked from the header, is the limit (#15)
        with pil_open(io.BytesIO(data)) as im:
            fmt = (im.format or "image").lower()
            im.load()
            if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
                pixels = np.asarray(im.convert("RGB"))
            else:
                pixels = np.asarray(im)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image (expected TIFF, PNG, JPEG, DM3/DM4, EMD, SER or MRC)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"image could not be decoded ({exc}); is the file truncated?") from exc
    except Image.DecompressionBombError as exc:  # a format other than PNG/JPEG/TIFF over Pillow's own limit
        raise ImageDecodeError(f"image too large for its decoder ({exc}); convert it to TIFF") from exc
    return LoadedImage(pixels, Calibration(None, "none"), fmt, {})


_MRC_MODE_BYTES = {0: 1, 1: 2, 2: 4, 4: 8, 6: 2, 12: 2}


def _is_mrc(data: bytes) -> bool:
    """MRC: ``MAP`` at byte 208 (MRC2014), or a 1024-byte header with plausible sizes and mode that account
    for at least the whole file (older writers, ncempy's included, leave ``MAP`` out)."""
    if len(data) <= 1024:
        return False
    if data[208:211] == b"MAP":
        return True
    import struct

    nx, ny, nz, mode = struct.unpack("<4i", data[:16])
    next_ = struct.unpack("<i", data[92:96])[0]
    if mode not in _MRC_MODE_BYTES or min(nx, ny, nz) < 1 or max(nx, ny, nz) > 100_000 or next_ < 0:
        return False
    return len(data) <= 1024 + next_ + nx * ny * nz * _MRC_MODE_BYTES[mode]  # shorter: a truncated MRC


def _sniff(data: bytes) -> str:
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] in (b"\x00\x00\x00\x03",):
        return "dm3"
    if data[:4] in (b"\x00\x00\x00\x04",):
        return "dm4"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "emd"
    if data[:4] == b"II\x97\x01":
        return "ser"
    if _is_mrc(data):
        return "mrc"
    return "pillow"


#: bit depths an integer detector writes; the full scale is ``2**n - 1``
BIT_DEPTHS = (8, 10, 12, 14, 16, 20, 24, 32)
#: share of pixels allowed above the inferred full scale (hot pixels) / outside the robust range
ROBUST_PERCENTILE = 0.01


def intensity_range(pixels: np.ndarray) -> tuple[float, float, str]:
    """Gray values that map to black and white, and the rule that chose them.

    The range depends on the data, never on the container's dtype (a 12-bit
    detector's image in ``uint16`` is scaled by 4095, not 65535). Isolated
    hot or dead pixels are ignored: the range is read from the smaller
    (larger) value of every pair of adjacent pixels, which never shows a
    single outlier, at the 99.99th (0.01th) percentile.

    * ``bits:N`` -- non-negative whole-number data (any integer dtype, or
      floats holding whole numbers): black is 0, white the full scale
      ``2**N - 1`` of the smallest usual detector bit depth N (8, 10, 12,
      14, 16, 20, 24, 32) that holds the robust maximum. Hot pixels above it
      are clipped to white; saturated pixels are white. 8-bit data is
      divided by 255 as it always was.
    * ``unit`` -- floats already in [0, 1]: kept.
    * ``robust`` -- anything else (negative values, fractional intensities
      such as counts or dose-normalised floats): the robust minimum and
      maximum become black and white, as a display range maps them.

    Parameters
    ----------
    pixels : ndarray, shape (H, W) or (H, W, C)
        Raw values (channels: the range is taken over all of them).

    Returns
    -------
    lo, hi : float
    rule : str
    """
    arr = np.asarray(pixels)
    if arr.dtype == bool:
        return 0.0, 1.0, "bool"
    if arr.dtype.kind not in "uif":
        raise ImageDecodeError(f"unsupported sample type {arr.dtype}")
    if arr.dtype == np.uint8:  # the smallest depth: nothing to infer
        return 0.0, 255.0, "bits:8"
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, bool)
    if not finite.any():
        raise ImageDecodeError("image has no finite pixel values")
    vals = arr[finite]
    vmin, vmax = float(vals.min()), float(vals.max())
    whole = arr.dtype.kind in "ui" or bool(np.all(vals == np.round(vals)))
    if arr.dtype.kind == "f" and vmin >= 0 and vmax <= 1.0:
        return 0.0, 1.0, "unit"
    a = arr
    if not finite.all():
        a = arr.astype(np.float64)
        a[~finite] = np.median(vals)
    if a.ndim == 3:
        a = a.max(axis=-1)
    if min(a.shape) >= 2:
        # an isolated hot (dead) pixel has normal neighbours: the smaller (larger) value of each pair of
        # adjacent pixels never shows it, while anything two pixels wide survives
        hi_vals = np.concatenate([np.minimum(a[:, :-1], a[:, 1:]).ravel(), np.minimum(a[:-1], a[1:]).ravel()])
        lo_vals = np.concatenate([np.maximum(a[:, :-1], a[:, 1:]).ravel(), np.maximum(a[:-1], a[1:]).ravel()])
    else:
        hi_vals = lo_vals = a.ravel()
    lo = float(np.percentile(lo_vals, ROBUST_PERCENTILE))
    hi = float(np.percentile(hi_vals, 100.0 - ROBUST_PERCENTILE))
    if whole and vmin >= 0:
        for n in BIT_DEPTHS:
            if hi <= 2.0**n - 1:
                return 0.0, 2.0**n - 1, f"bits:{n}"
    if hi <= lo:
        lo, hi = vmin, vmax
    return lo, hi, "robust"


def to_gray_float(pixels: np.ndarray) -> np.ndarray:
    """Convert any decoded image to a float32 gray image scaled to [0, 1].

    The same picture gives the same gray image whatever its storage: 8-bit,
    12/14/16-bit in ``uint16``, ``int32``, signed, ``float32``/``float64``,
    RGB(A) of any depth. Black and white come from :func:`intensity_range`
    (the data's actual range, robust to hot and saturated pixels), values
    outside are clipped, non-finite pixels become 0. RGB(A) is converted with
    ITU-R 601 luma weights (alpha ignored) before scaling.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        lo, hi, _ = intensity_range(rgb)
        gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif arr.ndim == 2:
        lo, hi, _ = intensity_range(arr)
        gray = arr.astype(np.float64)
    else:
        raise ImageDecodeError(f"expected a 2-D gray or RGB image, got shape {arr.shape}")
    finite = np.isfinite(gray)
    out = np.zeros(gray.shape, np.float64) if hi <= lo else (gray - lo) / (hi - lo)
    out[~finite] = 0
    return np.clip(out, 0.0, 1.0).astype(np.float32)


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
    sidecar = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
    else:
        label = name or os.fspath(source)
        with open(source, "rb") as fh:
            data = fh.read()
        side = os.path.splitext(os.fspath(source))[0] + ".txt"  # JEOL / Hitachi SEMs write one beside the TIFF
        if os.path.isfile(side) and os.path.getsize(side) < 1 << 20:
            with open(side, "r", encoding="latin-1") as fh:
                sidecar = fh.read()
    if len(data) == 0:
        raise ImageDecodeError(f"{label}: file is empty (0 bytes)")
    kind = _sniff(data)
    try:
        if kind == "tiff":
            img = _load_tiff(data, sidecar)
        elif kind in ("dm3", "dm4", "emd", "ser", "mrc"):
            img = _load_ncempy(data, kind)
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


def write_labels_tiff(path: str | os.PathLike, labels: np.ndarray, calibration: Calibration) -> None:
    """Write a label image as an ImageJ TIFF that Fiji opens calibrated (unit and pixel size).

    ``uint16`` up to 65535 particles, else ``float32`` (ImageJ has no 32-bit
    integer images); zip-compressed (ImageJ reads it). Uncalibrated images
    get the unit ``pixel``. Label ``k`` is the particle with ``id`` ``k`` in
    ``particles.csv``; its pixel count is ``area_px - overlap_px`` there (a
    pixel two reconstructed particles share is drawn for the nearer one).
    """
    import tifffile

    lab = np.asarray(labels)
    n = int(lab.max()) if lab.size else 0
    lab = lab.astype(np.uint16 if n <= 65535 else np.float32)
    if calibration.calibrated:
        px = float(calibration.pixel_size_nm)
        res, unit = (1.0 / px, 1.0 / px), "nm"
    else:
        res, unit = (1.0, 1.0), "pixel"
    tifffile.imwrite(path, lab, imagej=True, resolution=res, metadata={"unit": unit, "axes": "YX"},
                     compression="zlib")
