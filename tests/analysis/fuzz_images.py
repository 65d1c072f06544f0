"""Fuzz the image decoders (``load_image``) and the header probe with mutated real files (hypothesis).

Seeds: a Zeiss SEM TIFF, plain 8/16-bit/float TIFFs (strips, tiles, deflate,
BigTIFF), PNG gray/RGB/16-bit, JPEG gray/RGB. Mutations (biased to the first
bytes, where the headers are): byte flips and overwrites, "interesting"
integers (0, 1, 0xFFFF, 2^31-1, 2^32-1) written over 2/4-byte fields,
truncation, insertion. Each input goes through ``probe_image`` and, as the
gateway would do, is decoded only when the header is within the limits;
then through ``load_image`` and what the gateway's ``Upload`` does with the result
(``to_gray_float``, ``detect_databar``).

A *crash* is any exception other than ``ImageDecodeError`` (clean) or
``ImageTooLarge``; plain ``ValueError`` is counted apart (it reaches the
user as INVALID_ARGUMENT, but with a less helpful message). Also counted:
inputs where the decoder produced more pixels than the probe announced
(``probe_mismatch``: a probe that under-reports would let a bomb through) and,
apart, harmless over-reports.

Usage: python tests/analysis/fuzz_images.py --seconds 180 --json out/fuzz.json [--seeds em]
(``--seeds em``: the EM formats instead: DM3, DM4, TIA SER, Velox and Berkeley EMD, MRC; a hang of one
input over 20 s counts as a crash)
(run with a memory limit: the slow test sets RLIMIT_AS).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import logging
import sys
import time
import traceback
import warnings

import numpy as np

logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # it logs every malformed tag it skips

MAX_PIXELS = 50e6
MAX_DECODED = 512 << 20
INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def seeds() -> dict[str, bytes]:
    import tifffile
    from PIL import Image

    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    out = {}
    img, _ = synthetic_sem(seed=1, size=(128, 160), n_particles=6, databar_rows=0)
    img = np.asarray(img)
    b = io.BytesIO()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_zeiss_tiff(Path(d) / "z.tif", img, 2.5)
        out["zeiss.tif"] = (Path(d) / "z.tif").read_bytes()
    for name, arr, kw in [("u8.tif", img, {}), ("u16.tif", img.astype(np.uint16) * 200, {}),
                          ("f32.tif", img.astype(np.float32) / 255, {}),
                          ("tiled.tif", img, {"tile": (64, 64)}),
                          ("deflate.tif", img, {"compression": "zlib"}), ("big.tif", img, {"bigtiff": True}),
                          ("rgb.tif", np.stack([img] * 3, -1), {"photometric": "rgb"})]:
        b = io.BytesIO()
        big = kw.pop("bigtiff", False)
        tifffile.imwrite(b, arr, bigtiff=big, **kw)
        out[name] = b.getvalue()
    for name, im, fmt in [("gray.png", Image.fromarray(img), "PNG"),
                          ("rgb.png", Image.fromarray(np.stack([img] * 3, -1)), "PNG"),
                          ("u16.png", Image.fromarray(img.astype(np.uint16) * 200), "PNG"),
                          ("gray.jpg", Image.fromarray(img), "JPEG"),
                          ("rgb.jpg", Image.fromarray(np.stack([img] * 3, -1)), "JPEG")]:
        b = io.BytesIO()
        im.save(b, fmt)
        out[name] = b.getvalue()
    return out


def em_seeds() -> dict[str, bytes]:
    """The EM formats (``semforge.analysis._emfiles`` writers): DM3, DM4 (uint16 and float32), TIA SER,
    Velox and Berkeley EMD (HDF5), MRC."""
    import tempfile
    from pathlib import Path

    from semforge.analysis._emfiles import write_berkeley_emd, write_dm, write_mrc, write_ser, write_velox_emd
    from semforge.training.synth import synthetic_sem

    img, _ = synthetic_sem(seed=2, size=(64, 80), n_particles=3, radius_px=(6.0, 1.0), databar_rows=0)
    img = np.asarray(img)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        write_dm(p / "a.dm3", img.astype(np.uint16) * 100, 2.5, version=3)
        write_dm(p / "b.dm4", img.astype(np.float32) / 255, 0.8, "nm", version=4)
        write_dm(p / "c.dm3", img, 1.5, "um", version=3)
        write_ser(p / "d.ser", img.astype(np.uint16), 2e-9)
        write_velox_emd(p / "e.emd", img.astype(np.uint16), 1e-9)
        write_berkeley_emd(p / "f.emd", img.astype(np.float32), 1.2)
        write_mrc(p / "g.mrc", img.astype(np.float32), 3.0)
        for f in sorted(p.iterdir()):
            out[f.name] = f.read_bytes()
    return out


def mutations(st, seed_map):
    names = sorted(seed_map)

    @st.composite
    def mutated(draw):
        name = draw(st.sampled_from(names))
        data = bytearray(seed_map[name])
        for _ in range(draw(st.integers(1, 6))):
            n = len(data)
            if n == 0:
                break
            hi = draw(st.sampled_from([min(n, 64), min(n, 512), n]))  # mostly headers
            pos = draw(st.integers(0, max(0, hi - 1)))
            op = draw(st.sampled_from(["flip", "set", "int16", "int32", "truncate", "insert", "delete"]))
            if op == "flip":
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                data[pos] = draw(st.integers(0, 255))
            elif op in ("int16", "int32"):
                size = 2 if op == "int16" else 4
                v = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * size)) - 1)
                order = draw(st.sampled_from(["little", "big"]))
                data[pos:pos + size] = v.to_bytes(size, order)
            elif op == "truncate":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            else:
                del data[pos:pos + draw(st.integers(1, 64))]
        return name, bytes(data)
    return mutated()


class Hang(Exception):
    """One input took longer than ``PER_INPUT_S`` (a decoder loop that does not end is a finding too)."""


PER_INPUT_S = 20


def _alarm(signum, frame):
    raise Hang(f"no answer within {PER_INPUT_S} s")


def run(seconds: float, batch: int = 300, seed_set: str = "images") -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from semforge.analysis import ImageDecodeError, detect_databar, load_image, to_gray_float
    from semforge.analysis._probe import ImageTooLarge, check_image_limits

    import signal

    seed_map = em_seeds() if seed_set == "em" else seeds()
    signal.signal(signal.SIGALRM, _alarm)
    stats = collections.Counter()
    crashes: dict = {}
    mismatches: list = []
    plain_value_errors: dict = {}
    bad_calibrations: dict = {}
    decode_messages: collections.Counter = collections.Counter()

    def one(name, data):
        signal.alarm(PER_INPUT_S)
        try:
            _one(name, data)
        except Hang as exc:
            _record(crashes, "hang", name, data, exc)
        finally:
            signal.alarm(0)

    def _one(name, data):
        stats["inputs"] += 1
        stats["inputs_" + name.rsplit(".", 1)[-1]] += 1
        try:
            h = check_image_limits(data, max_pixels=MAX_PIXELS, max_decoded_bytes=MAX_DECODED)
            stats["probe_ok"] += 1
        except (ImageDecodeError, ImageTooLarge) as exc:
            stats["probe_rejected_" + type(exc).__name__] += 1
            h = None
            if isinstance(exc, ImageTooLarge):
                return  # the gateway stops here: never decoded
        except Exception as exc:  # noqa: BLE001 - a probe crash is a finding
            if isinstance(exc, Hang):
                raise
            _record(crashes, "probe", name, data, exc)
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = load_image(data, name=name)
            stats["decoded"] += 1
            stats["decoded_" + name.rsplit(".", 1)[-1]] += 1
            gray = to_gray_float(img.pixels)  # what the gateway's Upload does next (_image_info)
            detect_databar(img.pixels)
            if not np.isfinite(gray).all():
                stats["non_finite_gray"] += 1
            ps = img.calibration.pixel_size_nm
            if ps is not None and not (np.isfinite(ps) and ps > 0):  # inf/NaN/negative: garbage downstream
                stats["bad_calibration"] += 1
                bad_calibrations.setdefault(f"{name.rsplit('.', 1)[-1]}: {ps!r} ({img.calibration.source})", 0)
                bad_calibrations[f"{name.rsplit('.', 1)[-1]}: {ps!r} ({img.calibration.source})"] += 1
        except ImageDecodeError as exc:
            stats["decode_rejected"] += 1
            decode_messages[str(exc).split(": ", 1)[-1][:70]] += 1  # what the user reads (kinds, for the record)
            return
        except Hang:
            raise
        except ValueError as exc:
            stats["plain_value_error"] += 1
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            plain_value_errors.setdefault(key, 0)
            plain_value_errors[key] += 1
            return
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, Hang):
                raise
            _record(crashes, "load_image", name, data, exc)
            return
        if h is not None and h.width and (img.pixels.shape[-1], img.pixels.shape[-2]) != (h.width, h.height):
            if img.pixels.shape[-1] * img.pixels.shape[-2] <= h.pixels:
                stats["probe_over_reports"] += 1  # conservative (e.g. a repeated width tag): harmless
                return
            stats["probe_mismatch"] += 1
            if len(mismatches) < 20:
                mismatches.append({"seed": name, "probe": [h.width, h.height], "decoded": list(img.pixels.shape),
                                   "sha256": hashlib.sha256(data).hexdigest()[:16], "input_hex": data[:400].hex()})

    @settings(max_examples=batch, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(mutations(st, seed_map))
    def fuzz(case):
        one(*case)

    t0 = time.monotonic()
    batches = 0
    while time.monotonic() - t0 < seconds:
        fuzz()
        batches += 1
    for name, data in seed_map.items():  # the unmutated seeds must decode and agree with the probe
        one(name, data)
    return {"seconds": round(time.monotonic() - t0, 1), "batches": batches, "seeds": sorted(seed_map),
            "stats": dict(stats), "crashes": crashes, "plain_value_errors": plain_value_errors,
            "bad_calibrations": bad_calibrations, "decode_messages": dict(decode_messages.most_common(25)),
            "probe_mismatches": mismatches}


def _record(crashes, where, name, data, exc):
    key = f"{where}: {type(exc).__name__}"
    tb = traceback.extract_tb(exc.__traceback__)
    entry = crashes.setdefault(key, {"count": 0, "example": None})
    entry["count"] += 1
    if entry["example"] is None:
        entry["example"] = {"seed": name, "message": str(exc)[:200], "at": f"{tb[-1].filename}:{tb[-1].lineno}",
                            "input_hex": data[:256].hex(), "size": len(data)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--json")
    ap.add_argument("--seeds", choices=["images", "em"], default="images",
                    help="images: TIFF/PNG/JPEG; em: DM3/DM4/SER/EMD/MRC")
    a = ap.parse_args()
    rep = run(a.seconds, seed_set=a.seeds)
    text = json.dumps(rep, indent=1)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(text)
    print(json.dumps({k: rep[k] for k in ("seconds", "stats")}, indent=1))
    for k, v in rep["crashes"].items():
        print(f"CRASH {k} x{v['count']}: {v['example']['message']} at {v['example']['at']}")
    return 1 if (rep["crashes"] or rep["probe_mismatches"] or rep["stats"].get("non_finite_gray")
                 or rep["stats"].get("bad_calibration")) else 0


if __name__ == "__main__":
    sys.exit(main())
