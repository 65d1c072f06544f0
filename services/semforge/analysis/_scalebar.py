"""Reading the scale bar of an instrument data bar, and checking the calibration against it.

The scale bar is the longest horizontal line in the data bar (bright on a dark
bar or dark on a bright one); its label ("200 nm", "1 um") is the
number-and-unit text nearest to it, read with Tesseract OCR (Debian
``tesseract-ocr``; ``make setup`` installs it). Why OCR and not our own glyph
matcher: instruments use different fonts and sizes (Zeiss, FEI, JEOL,
Hitachi, Tescan, Fiji-burned bars), and a matcher would need templates of
each font; Tesseract reads them without any, at 0.1-0.3 s per image.

Length of the bar: the distance between the centres of its end ticks when it
has ticks (an "H", as Zeiss draws it), else its full length in pixels (a plain
bar, as Fiji and FEI draw it). A bar is drawn at a whole number of pixels, so
it carries up to one pixel of rounding: :func:`check_scale_bar` accepts a
disagreement up to ``max(3 %, 1 px / bar length)``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import UserInputError
from ._io import Calibration, _unit_factor, to_gray_float

__all__ = ["ScaleBar", "ScaleBarMismatch", "find_scale_bar", "read_scale_bar", "check_scale_bar",
           "tesseract_available", "scale_bar_tolerance", "scale_bar_calibration"]

_LABEL = re.compile(r"^(\d+(?:[.,]\d+)?)\s*(nm|um|\u00b5m|\u03bcm|mm|pm|\u00c5)$", re.IGNORECASE)


class ScaleBarMismatch(UserInputError):
    """The scale bar and the file's pixel size disagree beyond the tolerance."""


@dataclass(frozen=True)
class ScaleBar:
    """A scale bar found in a data bar.

    Attributes
    ----------
    length_px : float
        Bar length in pixels (tick centre to tick centre, or full length).
    row, col0, col1 : int
        Image row of the bar's line and its first/last column.
    ticks : bool
        Whether the bar has end ticks.
    label : str or None
        The label as read ("200 nm"), ``None`` when none was read.
    length_nm : float or None
        The label's length in nm.
    """

    length_px: float
    row: int
    col0: int
    col1: int
    ticks: bool
    label: str | None = None
    length_nm: float | None = None

    @property
    def pixel_size_nm(self) -> float | None:
        return self.length_nm / self.length_px if self.length_nm and self.length_px > 0 else None


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def scale_bar_tolerance(length_px: float) -> float:
    """Relative disagreement accepted between a bar of ``length_px`` pixels and the metadata."""
    return max(0.03, 1.0 / max(length_px, 1.0))


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the True runs of a boolean row."""
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _background(bar: np.ndarray) -> float:
    """The data bar's background gray value (its most common 8-bit level)."""
    q = np.rint(bar * 255).astype(int)
    return float(np.bincount(q.ravel(), minlength=256).argmax() / 255.0)


def _foreground(bar: np.ndarray) -> np.ndarray:
    """Marks of the data bar (text, lines): pixels far from the bar's background value."""
    return np.abs(bar - _background(bar)) > 0.4


def find_scale_bar(pixels: np.ndarray, specimen_rows: int, *, min_length: int = 10) -> ScaleBar | None:
    """Find the scale bar's line in the data bar (rows from ``specimen_rows`` down); no label.

    Returns ``None`` when the data bar has no horizontal line of at least
    ``min_length`` px (lines longer than half the width are frames, not bars).
    """
    gray = to_gray_float(pixels)
    h, w = gray.shape
    if specimen_rows >= h:
        return None
    fg = _foreground(gray[specimen_rows:])
    best = None  # (length, row, c0, c1)
    band = np.abs(gray[specimen_rows:] - _background(gray[specimen_rows:])) <= 0.1
    for r in range(fg.shape[0]):
        if fg[r].mean() > 0.3 or band[r].mean() < 0.6:  # a frame line, or image rows below the bar
            continue
        for c0, c1 in _runs(fg[r]):
            n = c1 - c0
            if min_length <= n <= w // 2 and (best is None or n > best[0]):
                best = (n, r, c0, c1)
    if best is None:
        return None
    n, r, c0, c1 = best
    # thickness of the line: rows above/below with the same run
    rows = [r]
    for step in (-1, 1):
        rr = r + step
        while 0 <= rr < fg.shape[0] and fg[rr, c0:c1].mean() > 0.9:
            rows.append(rr)
            rr += step
    top, bot = min(rows), max(rows)
    thick = bot - top + 1

    def tick_width(cols: range) -> list[int]:
        out = []
        for c in cols:
            above = fg[max(0, top - thick - 2):top, c].all() if top > 0 else False
            below = fg[bot + 1:bot + thick + 3, c].all() if bot + 1 < fg.shape[0] else False
            if above or below:
                out.append(c)
        return out

    left = tick_width(range(c0, min(c0 + 4, c1)))
    right = tick_width(range(max(c1 - 4, c0), c1))
    if left and right:
        length = float(np.mean(right) - np.mean(left))
        ticks = True
    else:
        length, ticks = float(n), False
    return ScaleBar(length_px=length, row=specimen_rows + (top + bot) // 2, col0=int(c0), col1=int(c1 - 1),
                    ticks=ticks)


def _ocr_words(img: np.ndarray, psm: int = 11) -> list[tuple[str, float, float]]:
    """Words read by Tesseract from a gray image in [0, 1]: (text, x centre, y centre) in ``img`` pixels."""
    from PIL import Image

    scale = 4
    dark_text = np.clip(img, 0, 1)
    if np.median(dark_text) < 0.5:  # Tesseract wants dark text on a light background
        dark_text = 1.0 - dark_text
    pad = 6
    dark_text = np.pad(dark_text, pad, constant_values=1.0)
    im = Image.fromarray((dark_text * 255).astype(np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.LANCZOS)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "bar.png")
        im.save(p)
        proc = subprocess.run(["tesseract", p, "-", "--psm", str(psm), "tsv"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed: {proc.stderr.strip()[:200]}")
    words = []
    for line in proc.stdout.splitlines()[1:]:
        f = line.split("\t")
        if len(f) == 12 and f[11].strip():
            x, y, ww, hh = (int(v) for v in f[6:10])
            words.append((f[11].strip(), (x + ww / 2) / scale - pad, (y + hh / 2) / scale - pad))
    return words


def _parse_label(words: list[tuple[str, float, float]], cx: float, cy: float) -> tuple[str, float] | None:
    """The number+unit nearest to (cx, cy): joins a number with the unit word after it."""
    cands = []
    for i, (t, x, y) in enumerate(words):
        t = t.replace("\u03bc", "\u00b5")
        texts = [(t, x, y)]
        if i + 1 < len(words):
            t2, x2, y2 = words[i + 1]
            texts.append((t + " " + t2.replace("\u03bc", "\u00b5"), (x + x2) / 2, (y + y2) / 2))
        for s, sx, sy in texts:
            m = _LABEL.match(s.strip())
            if m:
                unit = m.group(2)
                unit = "nm" if unit.lower() == "nm" else ("\u00b5m" if unit.lower() in ("um", "\u00b5m") else unit)
                value = float(m.group(1).replace(",", "."))
                try:
                    nm = value * _unit_factor(unit)
                except KeyError:
                    continue
                cands.append((np.hypot(sx - cx, (sy - cy) * 2.0), f"{m.group(1)} {unit}", nm))
    if not cands:
        return None
    _, label, nm = min(cands)
    return label, nm


def read_scale_bar(pixels: np.ndarray, specimen_rows: int) -> ScaleBar | None:
    """Find the scale bar and read its label.

    Returns
    -------
    ScaleBar or None
        ``None`` when no bar line was found; ``label``/``length_nm`` are
        ``None`` when the line was found but no label could be read.

    Raises
    ------
    RuntimeError
        Tesseract is not installed (``make setup`` installs Debian's
        ``tesseract-ocr``).
    """
    gray = to_gray_float(pixels)
    bar = find_scale_bar(gray, specimen_rows)
    if bar is None:
        return None
    if not tesseract_available():
        raise RuntimeError("reading the scale bar needs Tesseract OCR (Debian: apt-get install tesseract-ocr; "
                           "`make setup` does it)")
    h, w = gray.shape
    span = bar.col1 - bar.col0 + 1
    cx = (bar.col0 + bar.col1) / 2
    r = bar.row
    found = None
    # 1) one line of text right above the bar (Zeiss, Fiji); 2) anywhere around it (FEI, JEOL: beside or below)
    half = max(2 * span, 60)
    c0, c1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
    fg_bar = _foreground(gray[specimen_rows:])[:, bar.col0:bar.col1 + 1]
    top = r - specimen_rows
    while top > 0 and fg_bar[top - 1].any():  # up over the ticks
        top -= 1
    above = gray[specimen_rows:specimen_rows + top, c0:c1]
    rows = np.flatnonzero(_foreground(above).any(axis=1)) if above.size else np.array([], int)
    if rows.size:
        line = above[max(0, rows.max() - 24):rows.max() + 2]
        found = _parse_label(_ocr_words(line, psm=6), cx - c0, line.shape[0] / 2)
    if found is None:
        half = max(3 * span, 80)
        c0, c1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
        region = gray[specimen_rows:, c0:c1].copy()
        rr = r - specimen_rows
        region[max(0, rr - 1):rr + 2, bar.col0 - c0:bar.col1 - c0 + 1] = np.median(region)  # the line is not text
        found = _parse_label(_ocr_words(region), cx - c0, rr)
    if found is None:
        return bar
    label, nm = found
    return ScaleBar(bar.length_px, bar.row, bar.col0, bar.col1, bar.ticks, label, nm)


def check_scale_bar(calibration: Calibration, bar: ScaleBar | None, *, image: str = "image") -> Calibration:
    """Cross-check a calibration with the scale bar; calibrate from the bar when the file had none.

    Parameters
    ----------
    calibration : Calibration
        From the file (or the user).
    bar : ScaleBar or None
        From :func:`read_scale_bar`.
    image : str
        Name for the messages.

    Returns
    -------
    Calibration
        ``calibration`` unchanged when it agrees with the bar (or there is no
        readable bar); ``Calibration(bar px, "scalebar")`` when it had none.

    Raises
    ------
    ScaleBarMismatch
        The two disagree by more than :func:`scale_bar_tolerance`.
    """
    if bar is None or bar.pixel_size_nm is None:
        return calibration
    px_bar = bar.pixel_size_nm
    if not calibration.calibrated:
        return Calibration(px_bar, "scalebar")
    px = calibration.pixel_size_nm
    rel = abs(px_bar - px) / px
    tol = scale_bar_tolerance(bar.length_px)
    if rel > tol:
        raise ScaleBarMismatch(
            f"{image}: the scale bar ({bar.label} over {bar.length_px:.1f} px = {px_bar:.4g} nm/px) disagrees with "
            f"the pixel size {px:.4g} nm/px from {calibration.source} by {100 * rel:.1f} % (tolerance "
            f"{100 * tol:.1f} %); check the calibration, or give --pixel-size NM to override both",
            field="pixel_size_nm")
    return calibration


def scale_bar_calibration(pixels: np.ndarray, specimen_rows: int, calibration: Calibration, *,
                          image: str = "image") -> tuple[Calibration, ScaleBar | None, str | None]:
    """The pipeline's one call: read the bar, cross-check, calibrate from it when the file had no pixel size.

    Returns
    -------
    calibration : Calibration
        Unchanged, or ``source="scalebar"`` when calibrated from the bar.
    bar : ScaleBar or None
    note : str or None
        Why no check was made (no data bar, no bar line, no label, no OCR).

    Raises
    ------
    ScaleBarMismatch
        See :func:`check_scale_bar`.
    """
    h = np.asarray(pixels).shape[0]
    if specimen_rows >= h:
        return calibration, None, "no data bar"
    try:
        bar = read_scale_bar(pixels, specimen_rows)
    except RuntimeError as exc:
        return calibration, None, str(exc)
    if bar is None:
        return calibration, None, "no scale bar in the data bar"
    if bar.length_nm is None:
        return calibration, bar, "scale bar label not readable"
    return check_scale_bar(calibration, bar, image=image), bar, None
