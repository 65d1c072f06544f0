"""Writers of the instrument file formats the loader reads, for known-answer tests and demos.

Each writes one 2-D image with a known pixel size the way the instrument
software lays it out (only the fields a reader needs). Nothing here is used
to analyse data: these make test files whose calibration is known, so the
readers (ncempy, tifffile and the few lines of our own for sidecar/tag text)
are checked against a number, not against themselves.
"""

from __future__ import annotations

import json
import os
import struct
import uuid

import numpy as np

__all__ = ["write_dm", "write_ser", "write_velox_emd", "write_berkeley_emd", "write_mrc", "write_tiff_flavour",
           "TIFF_FLAVOURS"]

#: numpy dtype -> (DM image DataType, DM tag encoded type of the array elements)
_DM_TYPES = {np.dtype(np.int16): (1, 2), np.dtype(np.float32): (2, 6), np.dtype(np.uint8): (6, 10),
             np.dtype(np.int32): (7, 3), np.dtype(np.int8): (9, 10), np.dtype(np.uint16): (10, 4),
             np.dtype(np.uint32): (11, 5), np.dtype(np.float64): (12, 7)}


class _DM:
    """Gatan DigitalMicrograph tag tree writer (DM3: 32-bit lengths, DM4: 64-bit)."""

    def __init__(self, version: int):
        self.v = version
        self.L = ">I" if version == 3 else ">Q"

    def n(self, x: int) -> bytes:
        return struct.pack(self.L, x)

    def group(self, label: str, entries: list[bytes]) -> bytes:
        body = b"\x01\x00" + self.n(len(entries)) + b"".join(entries)
        head = b"\x14" + struct.pack(">H", len(label)) + label.encode()
        return head + (self.n(len(body)) if self.v == 4 else b"") + body

    def _data(self, label: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + self.n(len(info)) + b"".join(self.n(i) for i in info) + payload
        head = b"\x15" + struct.pack(">H", len(label)) + label.encode()
        return head + (self.n(len(body)) if self.v == 4 else b"") + body

    def long(self, label: str, value: int) -> bytes:
        return self._data(label, [3], struct.pack("<i", value))

    def ulong(self, label: str, value: int) -> bytes:
        return self._data(label, [5], struct.pack("<I", value))

    def float(self, label: str, value: float) -> bytes:
        return self._data(label, [6], struct.pack("<f", value))

    def text(self, label: str, value: str) -> bytes:  # DM strings are arrays of uint16
        return self._data(label, [20, 4, len(value)], value.encode("utf-16-le"))

    def array(self, label: str, enc: int, data: np.ndarray) -> bytes:
        return self._data(label, [20, enc, data.size], np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes())

    def file(self, root: list[bytes]) -> bytes:
        body = b"\x01\x00" + self.n(len(root)) + b"".join(root)
        head_len = 12 if self.v == 3 else 16
        return struct.pack(">I", self.v) + self.n(head_len + len(body) + 8 - 16) + struct.pack(">I", 1) + body + b"\x00" * 8


def write_dm(path: str | os.PathLike, image: np.ndarray, pixel_size: float, unit: str = "nm", *,
             version: int = 3) -> None:
    """Write a Gatan DM3 (``version=3``) or DM4 file: one image, square pixels of ``pixel_size`` ``unit``.

    The layout is DigitalMicrograph's: ``ImageList.1.ImageData`` with
    ``Calibrations.Dimension.{1,2}.{Origin,Scale,Units}``, ``Data``,
    ``DataType``, ``Dimensions`` and ``PixelDepth``.
    """
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype not in _DM_TYPES:
        raise ValueError(f"need a 2-D image of {sorted(str(d) for d in _DM_TYPES)}, got {a.dtype} {a.shape}")
    dm = _DM(version)
    dtype_code, enc = _DM_TYPES[a.dtype]
    dims = [dm.group("", [dm.float("Origin", 0.0), dm.float("Scale", pixel_size), dm.text("Units", unit)])
            for _ in range(2)]
    image_data = dm.group("ImageData", [
        dm.group("Calibrations", [dm.group("Dimension", dims)]),
        dm.array("Data", enc, a.ravel()),
        dm.long("DataType", dtype_code),
        dm.group("Dimensions", [dm.ulong("", a.shape[1]), dm.ulong("", a.shape[0])]),
        dm.long("PixelDepth", a.dtype.itemsize),
    ])
    root = [dm.group("ImageList", [dm.group("", [image_data, dm.group("ImageTags", [])])])]
    with open(path, "wb") as fh:
        fh.write(dm.file(root))


_SER_TYPES = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 2, np.dtype(np.uint32): 3, np.dtype(np.int8): 4,
              np.dtype(np.int16): 5, np.dtype(np.int32): 6, np.dtype(np.float32): 7, np.dtype(np.float64): 8}


def write_ser(path: str | os.PathLike, image: np.ndarray, pixel_size_m: float) -> None:
    """Write an FEI/TIA ``.ser`` series file (version 0x0220) holding one image with ``pixel_size_m`` metres/px.

    TIA stores rows bottom-up; readers flip them back.
    """
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype not in _SER_TYPES:
        raise ValueError(f"need a 2-D image of a TIA type, got {a.dtype} {a.shape}")
    desc, units = b"Number", b""
    dim = struct.pack("<i2d2i", 1, 0.0, 1.0, 0, len(desc)) + desc + struct.pack("<i", len(units)) + units
    head_len = 2 + 2 + 2 + 16 + 8 + 4 + len(dim)
    offsets_at = head_len
    data_at = offsets_at + 16
    element = (struct.pack("<2di", 0.0, pixel_size_m, 0) + struct.pack("<2di", 0.0, pixel_size_m, 0)
               + struct.pack("<h", _SER_TYPES[a.dtype]) + struct.pack("<2i", a.shape[1], a.shape[0])
               + np.ascontiguousarray(np.flipud(a)).astype(a.dtype.newbyteorder("<")).tobytes())
    tag_at = data_at + len(element)
    out = (struct.pack("<3h", 0x4949, 0x0197, 0x0220) + struct.pack("<4i", 0x4122, 0x4152, 1, 1)
           + struct.pack("<q", offsets_at) + struct.pack("<i", 1) + dim
           + struct.pack("<qq", data_at, tag_at) + element + struct.pack("<hi", 0x4152, 0))
    with open(path, "wb") as fh:
        fh.write(out)


def write_velox_emd(path: str | os.PathLike, image: np.ndarray, pixel_size_m: float) -> None:
    """Write a Thermo Fisher Velox ``.emd`` (HDF5): ``Data/Image/<uuid>/{Data, Metadata}``.

    ``Data`` is (H, W, frames); ``Metadata`` the UTF-8 JSON as a uint8 column,
    with ``BinaryResult.PixelSize`` in metres as Velox writes it.
    """
    import h5py

    a = np.asarray(image)
    meta = {"BinaryResult": {"PixelSize": {"width": repr(pixel_size_m), "height": repr(pixel_size_m)},
                             "PixelUnitX": "m", "PixelUnitY": "m", "Detector": "HAADF",
                             "ImageSize": {"width": str(a.shape[1]), "height": str(a.shape[0])}},
            "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1767225600"}},
            "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
            "Instrument": {"InstrumentModel": "semforge test writer"},
            "Detectors": {"Detector-0": {"DetectorName": "HAADF"}},
            "Stage": {"AlphaTilt": "0", "BetaTilt": "0", "Position": {"x": "0", "y": "0", "z": "0"}},
            "Scan": {"DwellTime": "1e-06"}, "CustomProperties": {}}
    raw = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with h5py.File(path, "w") as f:
        f.create_group("Version").attrs["version"] = '{"format": "Velox", "version": 2}'
        f.create_dataset("Version/Data", data=np.frombuffer(b'{"format": "Velox", "version": 2}', np.uint8))
        g = f.create_group(f"Data/Image/{uuid.uuid4().hex}")
        g.create_dataset("Data", data=a[:, :, None])
        md = np.zeros((raw.size + 16, 1), np.uint8)
        md[: raw.size, 0] = raw
        g.create_dataset("Metadata", data=md)


def write_berkeley_emd(path: str | os.PathLike, image: np.ndarray, pixel_size_nm: float) -> None:
    """Write a Berkeley EMD 0.2 file with ncempy's own writer (dimension vectors in nm)."""
    from ncempy.io import emd

    a = np.asarray(image)
    emd.emdWriter(str(path), a, pixel_size=(pixel_size_nm, pixel_size_nm), pixel_unit=("n_m", "n_m"),
                  overwrite=True)


def write_mrc(path: str | os.PathLike, image: np.ndarray, pixel_size_nm: float) -> None:
    """Write an MRC 2014 file with ncempy's writer (pixel size stored in Angstrom)."""
    from ncempy.io import mrc

    a = np.ascontiguousarray(np.asarray(image)[None])
    a10 = pixel_size_nm * 10.0
    mrc.mrcWriter(str(path), a, (a10, a10, a10))


#: TIFF flavours :func:`write_tiff_flavour` makes (the loader reads each one's calibration)
TIFF_FLAVOURS = ("zeiss", "fei", "imagej", "ome", "tescan", "jeol", "hitachi", "resolution")


def write_tiff_flavour(path: str | os.PathLike, image: np.ndarray, pixel_size_nm: float, flavour: str) -> None:
    """Write a TIFF the way one instrument family stores its pixel size.

    ``zeiss``: ``CZ_SEM`` tag 34118; ``fei``: FEI/Thermo INI text in tag
    34682 (``[Scan] PixelWidth`` in m); ``imagej``: ImageJ hyperstack with
    ``unit=nm`` and X/YResolution px per unit; ``ome``: OME-XML with
    ``PhysicalSizeX/Unit``; ``tescan``: Tescan's ``[MAIN] PixelSizeX`` (m)
    text in tag 50431; ``jeol``: a sidecar ``.txt`` with
    ``$$SM_MICRON_BAR`` (bar px) and ``$$SM_MICRON_MARKER`` (bar length);
    ``hitachi``: a sidecar ``.txt`` with ``PixelSize`` (nm);
    ``resolution``: only the baseline TIFF resolution tags in centimetres.
    """
    import tifffile

    a = np.asarray(image)
    p = os.fspath(path)
    if flavour == "zeiss":
        text = f"0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = {pixel_size_nm:.4f} nm\r\n"
        tifffile.imwrite(p, a, extratags=[(34118, "s", 0, text, True)])
    elif flavour == "fei":
        text = f"[User]\r\nDate=01/01/2026\r\n[Scan]\r\nPixelWidth={pixel_size_nm * 1e-9:.6e}\r\nPixelHeight={pixel_size_nm * 1e-9:.6e}\r\n"
        tifffile.imwrite(p, a, extratags=[(34682, "s", 0, text, True)])
    elif flavour == "imagej":
        tifffile.imwrite(p, a, imagej=True, resolution=(1.0 / pixel_size_nm, 1.0 / pixel_size_nm),
                         metadata={"unit": "nm", "axes": "YX"})
    elif flavour == "ome":
        tifffile.imwrite(p, a, ome=True, metadata={"axes": "YX", "PhysicalSizeX": pixel_size_nm,
                                                   "PhysicalSizeXUnit": "nm", "PhysicalSizeY": pixel_size_nm,
                                                   "PhysicalSizeYUnit": "nm"})
    elif flavour == "tescan":
        text = (f"[MAIN]\r\nDevice=VEGA3 TESCAN\r\nMagnification=50000\r\nPixelSizeX={pixel_size_nm * 1e-9:.6e}\r\n"
                f"PixelSizeY={pixel_size_nm * 1e-9:.6e}\r\n[SEM]\r\nHV=20000\r\n")
        tifffile.imwrite(p, a, extratags=[(50431, "B", len(text), text.encode(), True)])
    elif flavour == "jeol":
        tifffile.imwrite(p, a)
        bar_px = 250
        with open(os.path.splitext(p)[0] + ".txt", "w") as fh:
            fh.write(f"$CM_FORMAT JEOL/SEM\n$CM_MAG 50000\n$CM_FULL_SIZE {a.shape[1]} {a.shape[0]}\n"
                     f"$$SM_MICRON_BAR {bar_px}\n$$SM_MICRON_MARKER {bar_px * pixel_size_nm:g}nm\n")
    elif flavour == "hitachi":
        tifffile.imwrite(p, a)
        with open(os.path.splitext(p)[0] + ".txt", "w") as fh:
            fh.write(f"[SemImageFile]\nInstructName=SU8000\nMagnification=50000\nPixelSize={pixel_size_nm:g}\n"
                     f"DataSize={a.shape[1]}x{a.shape[0]}\n")
    elif flavour == "resolution":
        per_cm = 1e7 / pixel_size_nm
        tifffile.imwrite(p, a, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    else:
        raise ValueError(f"unknown TIFF flavour {flavour!r}; valid: {', '.join(TIFF_FLAVOURS)}")
