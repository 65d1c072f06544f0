"""Writing results: per-image label image, particle table and overlay; sample-level reports."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import codec
from ._morphometry import file_row, particle_columns
from ._io import write_labels_tiff
from ._pipeline import ImageResult, summarize

__all__ = ["write_image_outputs", "write_sample_report", "overlay_rgb", "write_particles_csv"]


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else round(v, 6)
    if v is None:
        return ""
    return v


def _file_table(particles: list[dict[str, Any]], unit: str) -> tuple[list[str], list[dict[str, Any]]]:
    """File columns (contract order, extra columns after) and rows with the unit in the size names."""
    rows = [file_row(p, unit) for p in particles]
    columns = particle_columns(unit)
    extra = sorted({k for r in rows for k in r} - set(columns))
    return columns + extra, rows


def write_particles_csv(path: str | os.PathLike, particles: list[dict[str, Any]], unit: str) -> None:
    """Write a particle table as CSV: contract columns with the unit (``ecd_nm`` / ``ecd_px``), extras after."""
    cols, rows = _file_table(particles, unit)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in cols])


def _palette(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hues = rng.random(n + 1)
    rgb = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hues + k / 3.0)) for k in range(3)], axis=1)
    return (rgb * 255).astype(np.uint8)


def overlay_rgb(gray: np.ndarray, labels: np.ndarray, particles: list[dict[str, Any]], *, alpha: float = 0.45) -> np.ndarray:
    """Labels coloured over the gray image; excluded particles grey, outlines drawn.

    Parameters
    ----------
    gray : ndarray, shape (H, W), float in [0, 1] or uint8
    labels : ndarray, shape (H, W), int
    particles : rows of the particle table (``id``, ``excluded``)
    """
    from scipy import ndimage as ndi

    g = np.asarray(gray)
    g8 = g if g.dtype == np.uint8 else (np.clip(g.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    base = np.repeat(g8[..., None], 3, axis=2).astype(np.float32)
    n = int(labels.max()) if labels.size else 0
    colors = _palette(n).astype(np.float32)
    excluded = np.zeros(n + 1, dtype=bool)
    for p in particles:
        if p["id"] <= n:
            excluded[p["id"]] = p["excluded"]
    colors[excluded] = 128.0
    fg = labels > 0
    col = colors[labels]
    out = base.copy()
    out[fg] = (1 - alpha) * base[fg] + alpha * col[fg]
    edge = fg & (ndi.grey_erosion(labels, size=3) != ndi.grey_dilation(labels, size=3))
    out[edge] = colors[labels[edge]] * 0.6 + 255 * 0.4 * (~excluded[labels[edge]])[:, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def write_image_outputs(result: ImageResult, gray: np.ndarray, outdir: str | os.PathLike, *,
                        write_labels: bool = True) -> dict[str, str]:
    """Write ``labels.tif`` (unless ``write_labels`` is False), ``particles.csv`` and ``overlay.png`` for one image.

    Returns the written paths by name.
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if write_labels:  # ImageJ-calibrated (#13)
        write_labels_tiff(out / "labels.tif", result.labels, result.calibration)
    write_particles_csv(out / "particles.csv", result.particles, result.unit)
    codec.write_png(out / "overlay.png", overlay_rgb(gray, result.labels, result.particles))
    return {"labels": str(out / "labels.tif"), "particles": str(out / "particles.csv"),
            "overlay": str(out / "overlay.png")}


def _histograms(particles: list[dict[str, Any]], unit: str, outdir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inc = [p for p in particles if not p["excluded"]]
    written = {}
    for meas, key, label in (("ecd", "ecd", f"equivalent circle diameter ({unit})"),
                             ("feret", None, f"Feret diameter ({unit})"),
                             ("circularity", "circularity", "circularity"),
                             ("aspect_ratio", "aspect_ratio", "aspect ratio (max/min Feret)")):
        fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
        if meas == "feret":
            for k, name in (("feret_min", "min"), ("feret_max", "max")):
                v = [p[k] for p in inc]
                if v:
                    ax.hist(v, bins="auto", alpha=0.6, label=name)
            ax.legend()
        else:
            v = [p[key] for p in inc]
            if v:
                ax.hist(v, bins="auto", color="#3b6ea5")
        ax.set_xlabel(label)
        ax.set_ylabel("count")
        ax.set_title(f"n = {len(inc)}")
        fig.tight_layout()
        path = outdir / f"hist_{meas}.png"
        fig.savefig(path)
        plt.close(fig)
        written[meas] = str(path)
    return written


def _xlsx(path: Path, sheets: dict[str, tuple[list[str], Iterable[list[Any]]]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, (header, rows) in sheets.items():
        ws = wb.create_sheet(name[:31])
        ws.append(header)
        for r in rows:
            ws.append([_fmt(v) for v in r])
    wb.save(path)


def write_sample_report(results: list[ImageResult], outdir: str | os.PathLike, *, title: str = "semforge report",
                        images: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """Aggregate several images of one sample into one report.

    Writes ``summary.csv`` (per image and for the whole sample),
    ``report.xlsx`` (summary, particles, images), ``report.json``, histogram
    PNGs and a self-contained ``report.html``. Mixed calibration states are
    refused: a sample is either all in nm or all in px.

    Returns
    -------
    dict
        Written paths by name.
    """
    if not results:
        raise ValueError("no image results to report")
    units = {r.unit for r in results}
    if len(units) != 1:
        raise ValueError("images of one sample must all be calibrated or all uncalibrated "
                         "(give --pixel-size-nm for the images without a pixel size)")
    unit = units.pop()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    allp = [p for r in results for p in r.particles]
    summary = summarize(allp, unit=unit, scope="sample")
    for r in results:
        summary += summarize(r.particles, unit=unit, scope=r.name)
    scols = ["scope", "measure", "column", "unit", "count", "mean", "sd", "median", "d10", "d50", "d90"]
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(scols)
        for row in summary:
            w.writerow([_fmt(row[c]) for c in scols])
    pcols, file_rows = _file_table(allp, unit)
    info = []
    for r in results:
        reasons: dict[str, int] = {}
        for p in r.particles:
            if p["excluded"]:
                reasons[p["exclude_reason"]] = reasons.get(p["exclude_reason"], 0) + 1
        row = {"image": r.name, "pixel_size_nm": r.calibration.pixel_size_nm,
               "calibration_source": r.calibration.source, "specimen_rows": r.specimen_rows,
               "height": int(r.labels.shape[0]), "width": int(r.labels.shape[1]),
               "particles": len(r.particles), "included": len(r.included()),
               "excluded": json.dumps(reasons, sort_keys=True), "separation": r.options.separate,
               "modality": r.options.modality}
        row.update((images or {}).get(r.name, {}))
        info.append(row)
    icols = list(info[0].keys())
    _xlsx(out / "report.xlsx", {
        "summary": (scols, ([row[c] for c in scols] for row in summary)),
        "particles": (pcols, ([r.get(c) for c in pcols] for r in file_rows)),
        "images": (icols, ([row.get(c) for c in icols] for row in info)),
    })
    calibrated = unit == "nm"
    doc = {"title": title, "unit": unit, "calibrated": calibrated, "images": info, "summary": summary,
           "particles": file_rows}
    (out / "report.json").write_text(json.dumps(_nan_to_none(doc), indent=1))
    hists = _histograms(allp, unit, out)
    _write_html(out / "report.html", title=title, unit=unit, info=info, summary=summary, hists=hists,
                overlays={r.name: out / r.name / "overlay.png" for r in results})
    written = {"summary": str(out / "summary.csv"), "xlsx": str(out / "report.xlsx"),
               "json": str(out / "report.json"), "html": str(out / "report.html")}
    written.update({f"hist_{k}": v for k, v in hists.items()})
    return written


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    if isinstance(o, np.generic):
        return _nan_to_none(o.item())
    return o


def _img_tag(path: Path, width: int = 480) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{width}" alt="{html.escape(path.name)}">'


def _write_html(path: Path, *, title: str, unit: str, info: list[dict[str, Any]], summary: list[dict[str, Any]],
                hists: dict[str, str], overlays: dict[str, Path]) -> None:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             ".warn{background:#fdd;border:2px solid #c00;padding:1em;font-weight:bold}"
             "</style></head><body>", f"<h1>{e(title)}</h1>"]
    if unit != "nm":
        parts.append("<p class='warn'>NO PIXEL SIZE: the images carry no calibration and none was given. "
                     "All lengths and areas below are in PIXELS, not nm. Re-run with --pixel-size-nm.</p>")
    parts.append("<h2>Images</h2><table><tr>" + "".join(f"<th>{e(str(k))}</th>" for k in info[0]) + "</tr>")
    for row in info:
        parts.append("<tr>" + "".join(f"<td>{e(str(_fmt(v)))}</td>" for v in row.values()) + "</tr>")
    parts.append("</table>")
    parts.append("<h2>Sample distribution (included particles)</h2><table><tr>"
                 "<th>measure</th><th>unit</th><th>n</th><th>mean</th><th>SD</th><th>median</th>"
                 "<th>D10</th><th>D50</th><th>D90</th></tr>")
    for row in summary:
        if row["scope"] != "sample":
            continue
        vals = [row["measure"], row["unit"], row["count"]] + [
            "" if math.isnan(row[k]) else f"{row[k]:.4g}" for k in ("mean", "sd", "median", "d10", "d50", "d90")]
        parts.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in vals) + "</tr>")
    parts.append("</table><h2>Histograms</h2>")
    parts.extend(_img_tag(Path(p), 420) for p in hists.values())
    parts.append("<h2>Overlays</h2><p>Coloured: measured particles; grey: excluded (border, not separable, ...).</p>")
    for name, p in overlays.items():
        parts.append(f"<h3>{e(name)}</h3>{_img_tag(p, 720)}")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
