"""The command line (exit codes, one-line errors) and the proto contracts (buf lint)."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def semforge(*args, cwd=None):
    return subprocess.run([str(BIN / "semforge"), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_buf_lint_clean():
    buf = shutil.which("buf", path=str(BIN)) or shutil.which("buf")
    assert buf, "buf (buf-bin) is part of the dev dependencies"
    r = subprocess.run([buf, "lint"], cwd=REPO / "protos", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_analyze_in_process_writes_the_contract_files(sample_tiff, tmp_path):
    path, truth = sample_tiff
    r = semforge("analyze", str(path), "--out", str(tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    d = tmp_path / "synthetic_1"
    assert tifffile.imread(d / "labels.tif").shape == truth.shape
    rows = list(csv.DictReader(open(d / "particles.csv")))
    assert rows and {"id", "image", "area_nm2", "ecd_nm", "feret_min_nm", "feret_max_nm", "circularity",
                     "convexity", "solidity", "excluded", "exclude_reason", "shape"} <= set(rows[0])
    for f in ("summary.csv", "report.xlsx", "report.html", "report.json"):
        assert (tmp_path / f).stat().st_size > 0


def test_uncalibrated_report_says_so(tmp_path):
    from PIL import Image

    from semforge.training.synth import synthetic_sem

    img, _ = synthetic_sem(seed=5, n_particles=10)
    Image.fromarray(img).save(tmp_path / "plain.png")
    r = semforge("analyze", str(tmp_path / "plain.png"), "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "ecd_px" in (tmp_path / "o" / "plain" / "particles.csv").read_text().splitlines()[0]
    assert "NO PIXEL SIZE" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.parametrize("args,code,text", [
    (["analyze", "/nonexistent.tif", "--out", "x"], 2, "no such file"),
    (["analyze", "IMG", "--out", "x", "--pixel-size-nm", "-3"], 2, "must be > 0"),
    (["analyze", "IMG", "--out", "x", "--modality", "xray"], 2, "invalid choice"),
    (["analyze", "BAD", "--out", "x"], 2, "not a recognised image"),
    (["analyze", "IMG", "--out", "x", "--server", "127.0.0.1:1", "--wait", "1"], 3, "not serving"),
    (["render", "--out", "x", "--shapes", "sphere,blob"], 2, "unknown shape 'blob'"),
    (["render", "--out", "x", "--particles", "0"], 2, "particles must be"),
    (["render", "--out", "x", "--spec", "/nonexistent.json"], 2, "cannot read scene spec"),
    (["translate", "/nonexistent", "--out", "x", "--model", "/nonexistent"], 2, "train one"),
    (["train", "classifier"], 2, "give the rendered scenes with --data"),
    (["train", "segmenter", "--data", ".", "--threads", "-1"], 2, "threads must be >= 0"),
    (["train", "translator", "--data", "/nonexistent", "--real", "/nonexistent"], 2, "no such directory"),
])
def test_errors_are_one_line_with_exit_codes(args, code, text, sample_tiff, tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"garbage" * 50)
    args = [str(sample_tiff[0]) if a == "IMG" else str(bad) if a == "BAD" else a for a in args]
    r = semforge(*args, cwd=tmp_path)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert text in r.stderr
    assert "Traceback" not in r.stderr


def test_render_command_writes_a_dataset_and_resumes(tmp_path):
    import json

    args = ("render", "--out", str(tmp_path / "r"), "--scenes", "2", "--particles", "15", "--size", "64",
            "--shapes", "sphere,disc", "--frames", "30", "--seed", "9")
    r = semforge(*args)
    assert r.returncode == 0, r.stderr
    assert "2/2 scene_" in r.stderr and "dataset:" in r.stdout
    scene = json.loads((tmp_path / "r" / "datasets" / "render" / "scene_00001" / "scene.json").read_text())
    assert len(scene["particles"]) == 15 and {p["shape"] for p in scene["particles"]} <= {"sphere", "disc"}
    r = semforge(*args)
    assert r.returncode == 0 and "resuming: 2/2" in r.stderr and "0 rendered now" in r.stdout


def test_render_recipe_renders_every_dataset_of_the_recipe(tmp_path):
    r = semforge("render", "--recipe", "tiny", "--out", str(tmp_path / "r"), "--workers", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "r" / "datasets").iterdir()) == ["tiny-n20", "tiny-n60"]
    assert len(list((tmp_path / "r" / "datasets").rglob("height_noisy.tif"))) == 4
    assert "recipe tiny: done" in r.stdout


def test_measure_command(tmp_path):
    import numpy as np
    from skimage.draw import disk

    m = np.zeros((100, 120), np.uint8)
    m[disk((50, 40), 18)] = 255
    m[disk((50, 72), 18)] = 255  # overlapping pair
    tifffile.imwrite(tmp_path / "mask.tif", m)
    r = semforge("measure", "--mask", str(tmp_path / "mask.tif"), "--out", str(tmp_path / "o"), "--pixel-size-nm", "2")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "o" / "particles.csv")))
    assert len(rows) == 2 and all(x["separated"] == "True" for x in rows)
    assert tifffile.imread(tmp_path / "o" / "labels.tif").max() == 2


def test_measure_databar_auto_detects_and_none_keeps_every_row(tmp_path):
    import numpy as np
    from skimage.draw import disk

    m = np.zeros((100, 120), np.uint8)
    m[disk((40, 60), 15)] = 255
    m[80:, :] = 255  # a flat instrument data bar under the specimen
    tifffile.imwrite(tmp_path / "mask.tif", m)
    counts = {}
    for bar in ("auto", "none", "80"):
        r = semforge("measure", "--mask", str(tmp_path / "mask.tif"), "--out", str(tmp_path / bar), "--databar", bar)
        assert r.returncode == 0, r.stderr
        counts[bar] = len(list(csv.DictReader(open(tmp_path / bar / "particles.csv"))))
    assert counts == {"auto": 1, "80": 1, "none": 2}


def test_only_user_errors_exit_2():
    from semforge.cli import exit_code
    from semforge.errors import InvalidOption

    assert exit_code(InvalidOption("bad modality", field="modality")) == (2, "bad modality")
    code, message = exit_code(ValueError("an internal mistake"))
    assert code == 1 and "bug" in message and "SEMFORGE_DEBUG=1" in message
    assert exit_code(KeyError("x"))[0] == 1
