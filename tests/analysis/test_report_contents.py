"""The sample report (#13): warnings never silent, ISO 9276 distributions, provenance, a report people like."""

import hashlib
import json

import numpy as np
import pytest
import tifffile

from semforge.training.synth import write_zeiss_tiff


def _discs_image(n_side=6, size=(256, 320), r=9, seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    img = rng.normal(40, 4, size).clip(0, 255)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n_side):
        for j in range(n_side):
            cy, cx = 25 + i * (h - 50) / max(n_side - 1, 1), 25 + j * (w - 50) / max(n_side - 1, 1)
            rr = r * (0.7 + 0.6 * rng.random())
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= rr ** 2] = 200
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from semforge.pipeline import analyze_paths

    d = tmp_path_factory.mktemp("rep")
    write_zeiss_tiff(d / "a.tif", _discs_image(seed=1), 5.0)
    write_zeiss_tiff(d / "b.tif", _discs_image(n_side=2, seed=2), 5.0)
    warned = []
    import semforge.pipeline as pl

    written = pl.analyze(pl.LocalStages("classical", d / "out"), [(str(d / "a.tif"), "a"), (str(d / "b.tif"), "b")],
                         pl.AnalysisOptions(), title="t", warn=warned.append)
    return d, written, warned, json.loads((d / "out" / "report.json").read_text())


def test_warnings_reach_caller_and_every_report_form(tmp_path):
    from openpyxl import load_workbook
    from semforge.pipeline import analyze_paths

    blank = np.full((128, 160), 40, np.uint8)  # nothing to find, no pixel size
    tifffile.imwrite(tmp_path / "blank.tif", blank)
    warned = []
    import semforge.pipeline as pl

    pl.analyze(pl.LocalStages("classical", tmp_path / "out"), [(str(tmp_path / "blank.tif"), "blank")],
               pl.AnalysisOptions(), title="t", warn=warned.append)
    codes = {w.code for w in warned}
    assert {"uncalibrated", "no_particles"} <= codes
    assert len(warned) == len(set(warned))  # once each although the report stage hands them on too
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {w["code"] for w in doc["warnings"]} >= {"uncalibrated", "no_particles"}
    page = (tmp_path / "out" / "report.html").read_text()
    assert "id='warnings'" in page and "no_particles" in page
    ws = load_workbook(tmp_path / "out" / "report.xlsx")["warnings"]
    assert {r[0] for r in ws.iter_rows(min_row=2, values_only=True)} >= {"uncalibrated", "no_particles"}


def test_too_few_particles_for_quantiles_is_a_warning(report, tmp_path):
    import semforge.pipeline as pl

    d, _, warned, doc = report
    assert doc["distribution"]["count"] >= 29 and not [w for w in warned if w.code == "few_particles"]
    warned = []  # image b alone: 4 particles, x10/x90 need 29
    pl.analyze(pl.LocalStages("classical", tmp_path / "out"), [(str(d / "b.tif"), "b")], pl.AnalysisOptions(),
               title="t", warn=warned.append)
    few = [w for w in warned if w.code == "few_particles"]
    assert any("x10,0" in w.message and "29" in w.message for w in few)
    assert any("x50,0" in w.message and "at least 6 " in w.message for w in few)  # 4 < 6 for the median
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [w["code"] for w in doc["warnings"]].count("few_particles") == len(few)
    assert "x10,0 of ecd" in (tmp_path / "out" / "report.html").read_text()


def test_distribution_labelled_iso9276_with_cis_and_fits(report):
    d, written, _, doc = report
    dist = doc["distribution"]
    labels = [q["label"] for q in dist["quantiles"]]
    assert labels == ["x10,0", "x50,0", "x90,0", "x10,3", "x50,3", "x90,3"]
    for q in dist["quantiles"]:
        assert q["ci_low"] <= q["value"] <= q["ci_high"]
    assert dist["mean_ci"][0] <= dist["mean"] <= dist["mean_ci"][1]
    x50_0 = next(q["value"] for q in dist["quantiles"] if q["label"] == "x50,0")
    x50_3 = next(q["value"] for q in dist["quantiles"] if q["label"] == "x50,3")
    assert x50_3 > x50_0  # volume weighting favours the large particles
    assert {"normal", "lognormal"} <= set(dist["fits"]) and "ks_d" in dist["fits"]["lognormal"]
    assert (d / "out" / "distribution.png").stat().st_size > 10_000
    page = (d / "out" / "report.html").read_text()
    assert "x50,3" in page and "KS D=" in page and "ISO 9276" in page
    from openpyxl import load_workbook

    wb = load_workbook(d / "out" / "report.xlsx")
    rows = list(wb["distribution"].iter_rows(values_only=True))
    assert rows[0][2] == "value (nm)" and [r[0] for r in rows[2:8]] == labels


def test_shape_table_per_image_and_pooled(report):
    d, _, _, doc = report
    shapes = doc["shape_counts"]
    assert set(shapes) == {"a", "b", "all (pooled)"}
    pooled = shapes["all (pooled)"]
    for s, c in pooled.items():
        assert c == shapes["a"].get(s, 0) + shapes["b"].get(s, 0)
    assert sum(pooled.values()) == doc["distribution"]["count"]
    page = (d / "out" / "report.html").read_text()
    assert "Shape classes per image" in page and "all (pooled)" in page and "<h2>Shapes</h2>" in page
    from openpyxl import load_workbook

    wb = load_workbook(d / "out" / "report.xlsx")
    assert [r[0] for r in wb["shape_counts"].iter_rows(min_row=2, values_only=True)] == ["a", "b", "all (pooled)"]
    by_class = {r[0]: r for r in wb["shapes"].iter_rows(min_row=2, values_only=True)}  # the classifier's table
    assert all(by_class[s][2] == c for s, c in pooled.items())  # measured per class = pooled counts
    assert "median_sphere_diameter_nm" in [c.value for c in wb["shapes"][1]]


def test_provenance_in_json_xlsx_and_html(report):
    import semforge
    from openpyxl import load_workbook

    d, _, _, doc = report
    assert doc["schema_version"] == "semforge.report/v2"
    p = doc["provenance"]
    assert p["version"] == semforge.__version__ and p["timestamp"].endswith("+00:00")
    assert p["models"]["segmenter"] == "classical" and p["models"]["classifier"]
    # the user chose no post-processing (None: follow the segmenter and modality); what was applied is recorded
    assert p["options"]["measure"]["separate"] is None and p["options"]["databar"] == "auto"
    assert p["postprocess"] == {"threshold": 0.5, "separate": "watershed", "watershed_h": 0.5, "grow_px": 0,
                                "min_contrast": 0.0, "refine_px": 0}  # the classical segmenter's (semforge.postprocess.CLASSICAL)
    ins = {i["name"]: i for i in p["inputs"]}
    assert ins["a"]["file"] == "a.tif"
    assert ins["a"]["sha256"] == hashlib.sha256((d / "a.tif").read_bytes()).hexdigest()
    assert ins["a"]["calibration_source"].startswith("file") and ins["a"]["pixel_size_nm"] == pytest.approx(5.0)
    params = dict(load_workbook(d / "out" / "report.xlsx")["parameters"].iter_rows(min_row=2, values_only=True))
    assert params["version"] == semforge.__version__ and params["inputs[0].sha256"] == ins["a"]["sha256"]
    assert params["postprocess.separate"] == "watershed" and params["postprocess.threshold"] == 0.5
    page = (d / "out" / "report.html").read_text()
    assert "<footer>" in page and ins["b"]["sha256"] in page and semforge.__version__ in page


def test_xlsx_units_frozen_header_filters(report):
    from openpyxl import load_workbook

    d, _, _, _ = report
    wb = load_workbook(d / "out" / "report.xlsx")
    for name in ("summary", "particles", "distribution", "images"):
        ws = wb[name]
        assert ws.freeze_panes == "A2", name
        assert ws.auto_filter.ref, name
    header = [c.value for c in wb["particles"][1]]
    assert "ecd_nm" in header and "area_nm2" in header
    assert "unit" in [c.value for c in wb["summary"][1]]  # measures of different units: a unit column


def test_overlay_has_particle_ids_and_a_scale_bar():
    from semforge.analysis import Calibration, measure_mask, overlay_rgb

    img = _discs_image(n_side=3, size=(240, 320))
    res = measure_mask(img > 128, calibration=Calibration(5.0, "user"))
    plain = overlay_rgb(img, res.labels, res.particles)
    ann = overlay_rgb(img, res.labels, res.particles, ids=True, pixel_size_nm=5.0)
    assert plain.shape == ann.shape
    p = res.particles[0]
    cy, cx = int(p["centroid_y_px"]), int(p["centroid_x_px"])
    assert (plain[cy - 4:cy + 5, cx - 4:cx + 5] != ann[cy - 4:cy + 5, cx - 4:cx + 5]).any()  # the id is drawn
    # 320 px * 5 nm / 5 = 320 nm -> a 200 nm bar = 40 px, white, in the bottom rows
    white = (ann[200:, :160] == 255).all(axis=2)
    assert white.sum(axis=1).max() == 41  # rectangle [x0, x0 + 40] inclusive
    no_bar = (overlay_rgb(img, res.labels, res.particles, ids=True)[200:, :160] == 255).all(axis=2)
    assert no_bar.sum(axis=1).max() < 41  # no pixel size, no bar


def test_html_for_20_images_of_1024x768_is_small(tmp_path):
    """#13: the HTML report was 17 MB for 20 images; thumbnails keep it at a few MB (size recorded in
    docs/metrology.md, "Reports")."""
    import dataclasses

    from semforge.analysis import (Calibration, ImageResult, MeasureOptions, measure_mask, write_image_outputs,
                                   write_sample_report)

    rng = np.random.default_rng(3)
    img = _discs_image(n_side=10, size=(768, 1024), r=22, seed=3)
    gray = np.clip(img / 255.0 + rng.normal(0, 0.08, img.shape), 0, 1)  # noisy like a micrograph (PNG-hostile)
    res = measure_mask(img > 128, calibration=Calibration(5.0, "user"), image_name="im00")
    results = []
    for i in range(20):
        name = f"im{i:02d}"
        r = dataclasses.replace(res, name=name, particles=[dict(p, image=name) for p in res.particles])
        write_image_outputs(r, gray, tmp_path / name, write_labels=False)
        results.append(r)
    write_sample_report(results, tmp_path, title="20 images")
    size = (tmp_path / "report.html").stat().st_size
    overlays = sum((tmp_path / f"im{i:02d}" / "overlay.png").stat().st_size for i in range(20))
    print(f"report.html {size / 1e6:.2f} MB for 20 images of 1024x768 (overlay PNGs {overlays / 1e6:.1f} MB)")
    assert size < 3e6 and size < overlays / 4


def test_provenance_names_the_model_versions():
    """#13: a report says which weights made it (the highest version in the repository is the one served)."""
    from semforge.inference import MODELS_REPO
    from semforge.pipeline.stages import _model_versions

    def highest(name):
        return max(int(p.name) for p in (MODELS_REPO / name).iterdir() if p.name.isdigit())

    v = _model_versions("unetpp", "cnn", "tem")
    assert v["segmenter_model"] == f"semforge_unetpp_transmission/{highest('semforge_unetpp_transmission')}"
    assert v["classifier_model"] == f"semforge_classifier_transmission/{highest('semforge_classifier_transmission')}"
    v = _model_versions("classical", "rules-v1", "se")
    assert v == {}
