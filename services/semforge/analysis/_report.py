"""Writing results: per-image label image, particle table and overlay; sample-level reports."""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
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
from ._checks import Warning_, plausibility_warnings
from ._confidence import confidence_fields, confidence_warnings
from ._distribution import distribution_summary, plot_distribution, shape_class_counts
from ._pipeline import ImageResult, summarize

__all__ = ["write_image_outputs", "write_sample_report", "overlay_rgb", "write_particles_csv", "report_warnings",
           "sample_distribution", "REPORT_SCHEMA"]


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


def overlay_rgb(gray: np.ndarray, labels: np.ndarray, particles: list[dict[str, Any]], *, alpha: float = 0.45,
                ids: bool = False, pixel_size_nm: float | None = None) -> np.ndarray:
    """Labels coloured over the gray image; excluded particles grey, outlines drawn; with ``ids`` each
    particle's id (as in ``particles.csv``) at its centroid, with ``pixel_size_nm`` a scale bar.

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
    out = np.clip(out, 0, 255).astype(np.uint8)
    if ids or pixel_size_nm:
        out = _annotate(out, particles if ids else [], pixel_size_nm)
    return out


def _nice_length(target: float) -> float:
    """The 1-2-5 length closest below ``target`` (scale bar lengths: 50, 100, 200, 500 nm...)."""
    if target <= 0:
        return 0.0
    e = 10 ** math.floor(math.log10(target))
    return max(m * e for m in (1, 2, 5) if m * e <= target)


def _annotate(rgb: np.ndarray, particles: list[dict[str, Any]], pixel_size_nm: float | None) -> np.ndarray:
    """Particle ids at their centroids and a scale bar (bottom left, about 1/5 of the width)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    size = max(10, min(h, w) // 60)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    d = ImageDraw.Draw(im)
    for p in particles:
        if "centroid_x_px" in p and "centroid_y_px" in p:
            d.text((p["centroid_x_px"], p["centroid_y_px"]), str(p["id"]), fill=(255, 255, 255) if not
                   p.get("excluded") else (200, 200, 200), font=font, anchor="mm", stroke_width=max(1, size // 8),
                   stroke_fill=(0, 0, 0))
    if pixel_size_nm:
        nm = _nice_length(w * pixel_size_nm / 5)
        px = int(round(nm / pixel_size_nm))
        label = f"{nm / 1000:g} um" if nm >= 1000 else f"{nm:g} nm"
        x0, y1 = max(8, w // 40), h - max(8, h // 40)
        t = max(3, h // 150)
        d.rectangle([x0 - 4, y1 - t - size - 10, x0 + px + 4, y1 + 4], fill=(0, 0, 0))
        d.rectangle([x0, y1 - t, x0 + px, y1], fill=(255, 255, 255))
        d.text((x0 + px / 2, y1 - t - 4), label, fill=(255, 255, 255), font=font, anchor="mb")
    return np.asarray(im)


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
    codec.write_png(out / "overlay.png", overlay_rgb(gray, result.labels, result.particles, ids=True,
                                                     pixel_size_nm=result.calibration.pixel_size_nm))
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
            if inc:
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
        ws.freeze_panes = "A2"  # header row stays visible
        if ws.max_row > 1:
            ws.auto_filter.ref = ws.dimensions
        for i, h in enumerate(header, start=1):
            ws.column_dimensions[ws.cell(1, i).column_letter].width = max(10, min(40, len(str(h)) + 2))
    wb.save(path)


#: version of the ``report.json`` layout (``schema_version``); bump on an incompatible change
REPORT_SCHEMA = "semforge.report/v2"


def sample_distribution(results: list[ImageResult], *, n_boot: int = 2000) -> dict[str, Any]:
    """ISO 9276 distribution of the pooled ECD of the included particles (number and volume weighted)."""
    unit = results[0].unit
    sizes = [p["ecd"] for r in results for p in r.particles if not p["excluded"]]
    return distribution_summary(sizes, measure="ecd", unit=unit, n_boot=n_boot)


def report_warnings(results: list[ImageResult], distribution: dict[str, Any] | None = None) -> list[Warning_]:
    """Every plausibility warning of a sample: per image (:func:`plausibility_warnings`), then the sample's
    (too few particles for the requested quantiles, from :func:`distribution_summary`)."""
    out: list[Warning_] = []
    for r in results:
        out += plausibility_warnings(image=r.name, calibration=r.calibration, particles=r.particles,
                                     image_shape=tuple(r.labels.shape[:2]),
                                     min_diameter_nm=getattr(r.options, "min_diameter_nm", None))
        out += confidence_warnings(r.name, r.confidence)  # outside the model's domain (#16)
    if (distribution or {}).get("count"):  # none at all: the images' no_particles warnings say it
        for msg in distribution.get("warnings", []):
            out.append(Warning_("few_particles", "", msg))
    return out


def write_sample_report(results: list[ImageResult], outdir: str | os.PathLike, *, title: str = "semforge report",
                        images: dict[str, dict[str, Any]] | None = None, warnings: list[Warning_] | None = None,
                        distribution: dict[str, Any] | None = None,
                        provenance: dict[str, Any] | None = None) -> dict[str, str]:
    """Aggregate several images of one sample into one report.

    Writes ``summary.csv`` (per image and for the whole sample),
    ``report.xlsx`` (summary, distribution, shapes, shape_counts, particles, images,
    warnings, parameters), ``report.json`` (``schema_version``
    :data:`REPORT_SCHEMA`), histogram and distribution PNGs and a
    self-contained ``report.html`` (warning banner, ISO 9276 distribution,
    shape table, per-image statistics and thumbnails, provenance footer).
    Mixed calibration states are refused: a sample is either all in nm or
    all in px.

    Parameters
    ----------
    warnings : list of Warning_, optional
        Computed here (:func:`report_warnings`) when not given.
    distribution : dict, optional
        :func:`sample_distribution`, computed here when not given.
    provenance : dict, optional
        Software/model versions, options, inputs (name, sha256), timestamp;
        completed here with what the results know (calibration per image).

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
    if distribution is None:
        distribution = sample_distribution(results)
    if warnings is None:
        warnings = report_warnings(results, distribution)
    prov = _provenance(results, provenance)
    allp = [p for r in results for p in r.particles]
    summary = summarize(allp, unit=unit, scope="sample")
    for r in results:  # per image: its statistics and the segmenter's confidence on it (#16)
        conf = confidence_fields(r.confidence)
        summary += [dict(row, confidence_score=conf["confidence_score"], confidence_flags=conf["confidence_flags"])
                    for row in summarize(r.particles, unit=unit, scope=r.name)]
    scols = ["scope", "measure", "column", "unit", "count", "mean", "sd", "median", "d10", "d50", "d90",
             "confidence_score", "confidence_flags"]
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(scols)
        for row in summary:
            w.writerow([_fmt(row.get(c)) for c in scols])
    pcols, file_rows = _file_table(allp, unit)
    shape_counts = {r.name: shape_class_counts(r.particles)["all"] for r in results}
    shape_counts["all (pooled)"] = shape_class_counts(allp)["all"]
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
        row.update(confidence_fields(r.confidence))
        row.update((images or {}).get(r.name, {}))
        info.append(row)
    icols = list(info[0].keys())
    dcols, drows = _distribution_rows(distribution)
    shape_names = list(shape_counts["all (pooled)"]) or ["unknown"]
    _xlsx(out / "report.xlsx", {
        "summary": (scols, ([row.get(c) for c in scols] for row in summary)),  # one unit per row: its column
        "distribution": (dcols, drows),
        "shapes": (_SHAPE_COLS[:3] + [f"{c}_{unit}" for c in _SHAPE_COLS[3:]],
                   ([row[c] for c in _SHAPE_COLS] for row in shape_table(allp))),
        "shape_counts": (["image"] + shape_names + ["total"],
                         ([img] + [c.get(s, 0) for s in shape_names] + [sum(c.values())]
                          for img, c in shape_counts.items())),
        "particles": (pcols, ([r.get(c) for c in pcols] for r in file_rows)),
        "images": (icols, ([row.get(c) for c in icols] for row in info)),
        "warnings": (["code", "image", "message"], ([w.code, w.image, w.message] for w in warnings)),
        "parameters": (["parameter", "value"], ([k, v] for k, v in _flatten(prov))),
    })
    calibrated = unit == "nm"
    shapes = shape_table(allp)
    doc = {"schema_version": REPORT_SCHEMA, "title": title, "unit": unit, "calibrated": calibrated,
           "warnings": [w.as_dict() for w in warnings], "provenance": prov, "images": info,
           "distribution": distribution, "shapes": shapes, "shape_counts": shape_counts, "summary": summary,
           "particles": file_rows}
    (out / "report.json").write_text(json.dumps(_nan_to_none(doc), indent=1))
    hists = _histograms(allp, unit, out)
    if distribution["count"] >= 2:
        plot_distribution(distribution, [p["ecd"] for p in allp if not p["excluded"]], str(out / "distribution.png"),
                          title=f"ECD, n = {distribution['count']} (pooled)")
    _write_html(out / "report.html", title=title, unit=unit, info=info, summary=summary, hists=hists,
                overlays={r.name: out / r.name / "overlay.png" for r in results}, warnings=warnings,
                distribution=distribution, shapes=shapes, shape_counts=shape_counts, provenance=prov,
                dist_plot=out / "distribution.png")
    written = {"summary": str(out / "summary.csv"), "xlsx": str(out / "report.xlsx"),
               "json": str(out / "report.json"), "html": str(out / "report.html")}
    if (out / "distribution.png").exists():
        written["distribution"] = str(out / "distribution.png")
    written.update({f"hist_{k}": v for k, v in hists.items()})
    return written


def _distribution_rows(d: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The distribution as a table: one row per quantile, the mean, then the fits."""
    u = d["unit"]
    cols = ["quantity", "weighting", f"value ({u})", f"ci_low ({u})", f"ci_high ({u})", "n", "effective_n",
            "min_n", "note"]
    level = f"{100 * d['level']:g} % bootstrap CI"
    rows = [[f"mean ECD", "number", d["mean"], d["mean_ci"][0], d["mean_ci"][1], d["count"], d["count"], "",
             level]]
    for q in d["quantiles"]:
        rows.append([q["label"], q["weighting"], q["value"], q["ci_low"], q["ci_high"], d["count"],
                     q["effective_count"], q["min_count"], level])
    for name, f in d["fits"].items():
        params = ", ".join(f"{k}={v:.4g}" for k, v in f.items() if k not in ("ks_d", "ks_p", "aic"))
        rows.append([f"{name} fit", "number", f.get("median", f.get("mean")), "", "", d["count"], "", "",
                     f"{params}; KS D={f['ks_d']:.4f}, p={f['ks_p']:.3g}, AIC={f['aic']:.1f}"])
    return cols, rows


def _provenance(results: list[ImageResult], given: dict[str, Any] | None) -> dict[str, Any]:
    from .. import __version__

    prov: dict[str, Any] = {"software": "semforge", "version": __version__,
                            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    prov.update(given or {})
    inputs = {i.get("name"): i for i in prov.get("inputs", [])}
    merged = []
    for r in results:
        row = dict(inputs.get(r.name, {"name": r.name}))
        row.update(pixel_size_nm=r.calibration.pixel_size_nm, calibration_source=r.calibration.source)
        merged.append(row)
    prov["inputs"] = merged
    if "options" not in prov and dataclasses.is_dataclass(results[0].options):  # called without the pipeline
        prov["measure_options"] = dataclasses.asdict(results[0].options)
    return prov


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(d, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in d):
            return [(prefix, json.dumps(list(d)))]
        return [kv for i, v in enumerate(d) for kv in _flatten(v, f"{prefix}[{i}]")]
    return [(prefix, d if isinstance(d, (int, float, str)) or d is None else str(d))]


_SHAPE_DIMS = ("sphere_diameter", "rod_length", "rod_thickness", "edge_length")
_SHAPE_COLS = ["shape", "particles", "measured"] + [f"median_{k}" for k in _SHAPE_DIMS]


def shape_table(particles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per shape class: particles, measured (included) ones and the median of each shape-specific dimension
    over the measured ones (Bals & Epple 2023: edge length, rod length and thickness, sphere diameter)."""
    out = []
    for shape in sorted({p.get("shape", "unknown") for p in particles}):
        rows = [p for p in particles if p.get("shape", "unknown") == shape]
        inc = [p for p in rows if not p["excluded"]]
        row: dict[str, Any] = {"shape": shape, "particles": len(rows), "measured": len(inc)}
        for k in _SHAPE_DIMS:
            v = [p[k] for p in inc if p.get(k) is not None]
            row[f"median_{k}"] = float(np.median(v)) if v else float("nan")
        out.append(row)
    return out


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


#: longest side of an overlay thumbnail in the HTML report (px); the full overlay.png sits beside the report
THUMB_PX = 560


def _thumb_tag(path: Path, max_px: int = THUMB_PX) -> str:
    """A downscaled JPEG of an overlay, inline (keeps the HTML at ~60 kB per image instead of ~800 kB)."""
    if not path.exists():
        return ""
    import io

    from PIL import Image

    from ..codec import pil_open

    with open(path, "rb") as fh, pil_open(fh) as im:  # our own overlay: no Pillow bomb limit (#15)
        im = im.convert("RGB")
        im.thumbnail((max_px, max_px), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=75, optimize=True)
        w = im.width
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    rel = html.escape(f"{path.parent.name}/{path.name}")
    return (f'<a href="{rel}"><img src="data:image/jpeg;base64,{data}" width="{w}" '
            f'alt="overlay {html.escape(path.parent.name)}"></a>')


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _row(cells: Iterable[Any], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{html.escape(_num(c))}</{tag}>" for c in cells) + "</tr>"


def _write_html(path: Path, *, title: str, unit: str, info: list[dict[str, Any]], summary: list[dict[str, Any]],
                hists: dict[str, str], overlays: dict[str, Path], warnings: list[Warning_] = (),
                distribution: dict[str, Any] | None = None, shapes: list[dict[str, Any]] = (),
                shape_counts: dict[str, dict[str, int]] | None = None,
                provenance: dict[str, Any] | None = None, dist_plot: Path | None = None) -> None:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             ".warn{background:#fdd;border:2px solid #c00;padding:1em}.warn li{margin:.2em 0}"
             "footer{margin-top:3em;border-top:1px solid #999;font-size:85%;color:#333}"
             "footer td{text-align:left}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if unit != "nm":
        parts.append("<p class='warn'><b>NO PIXEL SIZE: the images carry no calibration and none was given. "
                     "All lengths and areas below are in PIXELS, not nm. Re-run with --pixel-size-nm.</b></p>")
    if warnings:
        parts.append(f"<div class='warn' id='warnings'><b>{len(warnings)} warning(s): check before using "
                     "these numbers</b><ul>")
        parts.extend(f"<li><code>{e(w.code)}</code> {e(w.image or 'sample')}: {e(w.message)}</li>" for w in warnings)
        parts.append("</ul></div>")
    if distribution is not None:
        d = distribution
        parts.append(f"<h2>Size distribution: equivalent circle diameter (ISO 9276)</h2><p>{d['count']} included "
                     f"particles pooled over {len(info)} image(s). x<sub>p,0</sub>: number-weighted quantile, "
                     "x<sub>p,3</sub>: volume-weighted (ECD<sup>3</sup>). Intervals: "
                     f"{100 * d['level']:g} % percentile bootstrap.</p>")
        cols, rows = _distribution_rows(d)
        parts.append("<table>" + _row(cols, "th") + "".join(_row(r) for r in rows) + "</table>")
        if dist_plot is not None and dist_plot.exists():
            parts.append(_img_tag(dist_plot, 900))
        parts.append(f"<p><small>{e(d['method'])}</small></p>")
    if shapes:  # shape classes (covered / agglomerate: kept in the table, not measured)
        parts.append(f"<h2>Shapes</h2><table><tr><th>shape</th><th>particles</th><th>measured</th>"
                     f"<th>sphere diameter ({unit})</th><th>rod length ({unit})</th><th>rod thickness ({unit})</th>"
                     f"<th>edge length ({unit})</th></tr>")
        for row in shapes:
            vals = [row["shape"], row["particles"], row["measured"]] + [
                "" if math.isnan(row[f"median_{k}"]) else f"{row[f'median_{k}']:.4g}" for k in _SHAPE_DIMS]
            parts.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in vals) + "</tr>")
        parts.append("</table><p>Medians over the measured particles of each class.</p>")
    if shape_counts:
        names = list(shape_counts.get("all (pooled)", {})) or ["unknown"]
        parts.append("<h3>Shape classes per image (measured particles)</h3><table>"
                     + _row(["image"] + names + ["total"], "th")
                     + "".join(_row([img] + [c.get(s, 0) for s in names] + [sum(c.values())])
                               for img, c in shape_counts.items()) + "</table>")
    parts.append("<h2>Images</h2><table>" + _row(info[0].keys(), "th"))
    parts.extend(_row(row.values()) for row in info)
    parts.append("</table>")
    parts.append("<h2>Statistics per measure (number-weighted, included particles)</h2><table>"
                 + _row(["scope", "measure", "unit", "n", "mean", "SD", "median", "D10 (x10,0)", "D50 (x50,0)",
                         "D90 (x90,0)"], "th"))
    for row in summary:
        parts.append(_row([row["scope"], row["measure"], row["unit"], row["count"]]
                          + [row[k] for k in ("mean", "sd", "median", "d10", "d50", "d90")]))
    parts.append("</table><h2>Histograms</h2>")
    parts.extend(_img_tag(Path(p), 420) for p in hists.values())
    parts.append("<h2>Overlays</h2><p>Coloured: measured particles (numbers: particle id in particles.csv); "
                 "grey: excluded (border, not separable, ...). Click a thumbnail for the full-size overlay.</p>")
    by_scope = {(r["scope"], r["measure"]): r for r in summary}
    for name, p in overlays.items():
        ecd = by_scope.get((name, "ecd"), {})
        stats = (f"n = {ecd.get('count', 0)}, ECD mean {_num(ecd.get('mean'))} {unit}, "
                 f"x50,0 {_num(ecd.get('d50'))} {unit}") if ecd else ""
        parts.append(f"<h3>{e(name)}</h3><p>{e(stats)}</p>{_thumb_tag(p)}")
    if provenance:
        parts.append("<footer><h2>Provenance</h2><table>")
        parts.extend(f"<tr><th>{e(k)}</th><td>{e(_num(v))}</td></tr>" for k, v in _flatten(provenance))
        parts.append("</table></footer>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
