"""#16: per-image confidence flags; adaptation from unlabeled images (weights rebuilt from ONNX, a new version)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from semforge.inference import SHIPPED, OnnxSegmenter, model_dir
from semforge.training.segmentation.confidence import image_confidence
from semforge.training.synth import synthetic_sem


def _crisp(shape=(200, 300), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    p = np.zeros((2, *shape), np.float32) + 0.01
    for _ in range(30):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(5, 15)
        p[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 0.99
    return p


def test_confidence_flags_empty_implausible_and_unsure_fields():
    ok = image_confidence(_crisp())
    assert ok["trusted"] and ok["flags"] == [] and ok["score"] > 0.5
    blank = image_confidence(np.zeros((2, 100, 100), np.float32))
    assert not blank["trusted"] and blank["flags"] == ["empty_prediction"] and blank["score"] == 0.0
    full = image_confidence(np.full((100, 100), 0.97, np.float32))
    assert "implausible_foreground" in full["flags"]
    unsure = _crisp()
    unsure[0] = np.where(unsure[0] > 0.5, 0.6, 0.3)  # the same particles, but hesitant everywhere
    u = image_confidence(unsure)
    assert "low_confidence" in u["flags"] and u["score"] < ok["score"]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        image_confidence(np.full((10, 10), 2.0))
    with pytest.raises(ValueError, match="shape"):
        image_confidence(np.zeros(10))


def test_shipped_weights_rebuild_in_torch_from_the_onnx_file():
    import torch

    from semforge.training.segmentation.adapt import torch_from_onnx
    from semforge.training.segmentation.model import ModelConfig, normalize

    for mod in ("se", "tem"):
        d = model_dir(SHIPPED[mod])
        meta = json.loads((d / "training.json").read_text())
        net = torch_from_onnx(d / "model.onnx", ModelConfig(**meta["config"]["model"]))
        x = np.random.default_rng(1).random((1, 1, 96, 128)).astype(np.float32)
        with torch.no_grad():
            ref = torch.sigmoid(net.eval()(torch.from_numpy(normalize(x)))).numpy()
            # no batch statistics left in the live path: training mode computes the same function
            same = torch.sigmoid(net.train()(torch.from_numpy(normalize(x)))).numpy()
        assert np.abs(same - ref).max() < 1e-5
        got = OnnxSegmenter(SHIPPED[mod], threads=1).run(x)
        assert np.abs(got - ref).max() < 1e-4 and ref.std() > 1e-3


def test_adapt_writes_fold_versions_from_unlabeled_images(tmp_path):
    from semforge.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(2):
        img, _ = synthetic_sem(seed=k, size=(224, 256), n_particles=15, databar_rows=0, radius_px=(10, 2))
        tifffile.imwrite(imgs / f"a{k}.tif", img)
    out = tmp_path / "repo" / "semforge_unetpp_se_adapted"
    rc = main(["adapt", "--images", str(imgs), "--modality", "se", "--out", str(out), "--folds", "2",
               "--steps", "2", "--batch", "1", "--patch", "128", "--quiet"])
    assert rc == 0
    folds = json.loads((out / "folds.json").read_text())
    assert folds["versions"] == {"1": ["a1"], "2": ["a0"]} and folds["modality"] == "se"
    rec = json.loads((out / "1" / "training.json").read_text())
    assert rec["adaptation"]["human_masks_used"] is False and rec["outputs"] == ["particle", "border"]
    assert rec["adaptation"]["images"] == [str(imgs / "a1.tif")]
    assert 'name: "semforge_unetpp_se_adapted"' in (out / "config.pbtxt").read_text()
    assert (out / "configs" / "cpu.pbtxt").exists() and (out / "1" / "model.py").exists()
    seg = OnnxSegmenter(out.name, version=2, repo=out.parent, threads=1)
    p = seg.predict_channels(np.random.default_rng(0).random((128, 160)).astype(np.float32))
    assert p.shape == (2, 128, 160) and np.isfinite(p).all()
    # a second plain run is the next version
    assert main(["adapt", "--images", str(imgs), "--modality", "se", "--out", str(out), "--steps", "1",
                 "--batch", "1", "--patch", "128", "--border-weight", "7", "--quiet"]) == 0
    assert (out / "3" / "model.onnx").exists()
    assert json.loads((out / "3" / "training.json").read_text())["adaptation"]["config"]["border_weight"] == 7
    assert rec["adaptation"]["config"]["border_weight"] == 5  # the default


def test_adapt_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from semforge.cli import main

    assert main(["adapt", "--images", str(tmp_path / "none"), "--modality", "se", "--out", str(tmp_path / "o")]) == 2
    assert "no image folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["adapt", "--images", str(tmp_path / "empty"), "--modality", "se", "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err


def test_adapt_bad_option_is_refused_before_anything_is_written(tmp_path, capsys):
    from semforge.cli import main

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.tif").write_bytes(b"not read: the options are checked first")
    out = tmp_path / "o"
    for opt, msg in ((["--border-weight", "0"], "border_weight must be > 0"),
                     (["--border-weight", "-3"], "border_weight must be > 0"),
                     (["--threshold", "0.95"], "need 0 <= low < threshold < high <= 1"),
                     (["--base", str(tmp_path / "nomodel" / "1")], "no model version at")):
        assert main(["adapt", "--images", str(tmp_path / "imgs"), "--modality", "se", "--out", str(out), *opt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
        assert not out.exists()  # no half-made model folder left behind


def test_pseudo_labels_refine_px_puts_outlines_on_the_gray_edge():
    """Known answer: the network's particle is 2 px too small; the gray disk has the true radius 12 px.
    With ``refine_px`` the pseudo-label takes the gray outline (within 0.5 px of radius), without it stays small,
    and the pixels it adds are learned (weight 1) although the network was unsure there."""
    from semforge.training.segmentation.adapt import AdaptConfig, pseudo_labels

    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 40)
    gray = np.where(r <= 12, 0.8, 0.2).astype(np.float32)
    p = np.stack([np.clip(10.5 - r, 0, 1) * 0.98 + 0.01, np.full(r.shape, 0.01)]).astype(np.float32)
    p[0][(r > 10.5) & (r <= 12)] = 0.4  # unsure rim, below the threshold
    radius = {}
    for band in (0, 2):
        y, w = pseudo_labels(p, AdaptConfig(images=["x"], threshold=0.5, refine_px=band), None, gray)
        radius[band] = np.sqrt(y[0].sum() / np.pi)
        if band:
            grown = (y[0] > 0) & (p[0] < 0.5)
            assert grown.sum() > 50 and w[grown].min() == 1.0
    assert abs(radius[2] - 12) < 0.5 and radius[0] < 11.2
    with pytest.raises(ValueError, match="gray"):
        pseudo_labels(p, AdaptConfig(images=["x"], refine_px=2), None, None)


def _fake_render_dataset(root: Path, n: int = 2, size: int = 160) -> Path:
    """A rendered dataset in the layout `semforge render` writes (scene_*/scene.json, se.png, instances.tif):
    bright touching squares on a dark holder."""
    from PIL import Image

    ds = root / "grains"
    for k in range(n):
        d = ds / f"scene_{k:05d}"
        d.mkdir(parents=True)
        inst = np.zeros((size, size), np.uint16)
        for i in range(6):
            y0, x0 = 20 + 22 * i, 30 + 10 * k
            inst[y0:y0 + 20, x0:x0 + 20] = 2 * i + 1
            inst[y0:y0 + 20, x0 + 20:x0 + 40] = 2 * i + 2  # touching its neighbour
        Image.fromarray(np.where(inst > 0, 200, 40).astype(np.uint8)).save(d / "se.png")
        tifffile.imwrite(d / "instances.tif", inst)
        (d / "scene.json").write_text(json.dumps({"pixel_size_nm": 7.344}))
    return ds


def test_instance_targets_cut_touching_particles():
    from semforge.training.segmentation.adapt import instance_targets

    inst = np.zeros((20, 30), np.int32)
    inst[5:15, 5:15], inst[5:15, 15:25] = 1, 2
    y, w = instance_targets(inst)
    assert w.min() == 1.0 and y.shape == (2, 20, 30)
    # the two columns where the squares touch are cut from the foreground and are border
    assert y[0][5:15, 14:16].sum() == 0 and y[1][5:15, 14:16].min() == 1
    assert y[0][6:14, 6:13].min() == 1 and y[0][6:14, 17:24].min() == 1 and y[1][0].sum() == 0


def test_adapt_learns_renders_beside_the_images(tmp_path, capsys):
    """`--renders`: rendered scenes with exact labels fill a share of each batch; recorded; bad input exit 2."""
    from semforge.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    img, _ = synthetic_sem(seed=0, size=(224, 256), n_particles=15, databar_rows=0, radius_px=(10, 2))
    tifffile.imwrite(imgs / "a0.tif", img)
    ds = _fake_render_dataset(tmp_path)
    out = tmp_path / "repo" / "m"
    common = ["adapt", "--images", str(imgs), "--modality", "se", "--steps", "3", "--batch", "2", "--patch", "128",
              "--quiet"]
    assert main(common + ["--out", str(out), "--renders", str(ds)]) == 0
    rec = json.loads((out / "1" / "training.json").read_text())["adaptation"]
    assert rec["rendered_scenes"] == 2 and rec["config"]["render_share"] == 0.5 and rec["render_crops_per_batch"] == 1
    assert rec["config"]["renders"] == [str(ds)] and rec["human_masks_used"] is False
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "1" / "training.json").read_text())["adaptation"]
    assert plain["rendered_scenes"] == 0 and plain["curve"] != rec["curve"]
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "o2"), "--render-share", "0.5"]) == 2
    assert "--renders" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "o3"), "--renders", str(tmp_path / "nowhere")]) == 2
    assert "no training data" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "o4"), "--renders", str(ds), "--render-share", "1.5"]) == 2
    assert "render_share" in capsys.readouterr().err
    # every batch must hold both kinds: no crop of the renders (share 0, or a batch of 1) or none of the images
    for extra in (["--render-share", "0"], ["--render-share", "0.9"], ["--batch", "1"]):
        assert main(common + ["--out", str(tmp_path / "o5"), "--renders", str(ds)] + extra) == 2, extra
        assert "rendered crop(s) per batch" in capsys.readouterr().err


def test_adapt_renders_only_restyled_to_the_images(tmp_path, capsys):
    """`--render-share 1 --render-style`: the appearance route -- renders only (no pseudo-labels), each crop
    restyled toward a crop of the images; recorded as such; inconsistent options exit 2 with one line."""
    from semforge.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    img, _ = synthetic_sem(seed=0, size=(224, 256), n_particles=15, databar_rows=0, radius_px=(10, 2))
    tifffile.imwrite(imgs / "a0.tif", img)
    ds = _fake_render_dataset(tmp_path)
    common = ["adapt", "--images", str(imgs), "--modality", "se", "--steps", "3", "--batch", "2", "--patch", "128",
              "--quiet", "--renders", str(ds), "--render-share", "1"]
    curves = {}
    for style in ("none", "fourier", "histogram"):
        out = tmp_path / style
        assert main(common + ["--out", str(out), "--render-style", style]) == 0
        rec = json.loads((out / "1" / "training.json").read_text())["adaptation"]
        assert rec["render_crops_per_batch"] == 2 and rec["config"]["render_style"] == style
        assert rec["route"].startswith("fine-tuning on renders only") and rec["human_masks_used"] is False
        curves[style] = rec["curve"]
    assert "Fourier" in json.loads((tmp_path / "fourier" / "1" / "training.json").read_text())["adaptation"]["route"]
    # the restyling changes what the network sees, so the losses differ
    assert curves["none"] != curves["fourier"] and curves["none"] != curves["histogram"]
    capsys.readouterr()
    bad = [(["--reference-masks", str(imgs)], "excludes --reference-masks"),
           (["--render-style", "fourier", "--style-beta", "0.7"], "style_beta")]
    for extra, msg in bad:
        assert main(common + ["--out", str(tmp_path / "bad")] + extra) == 2, extra
        assert msg in capsys.readouterr().err
    plain = ["adapt", "--images", str(imgs), "--modality", "se", "--steps", "3", "--batch", "2", "--patch", "128",
             "--quiet", "--out", str(tmp_path / "bad2"), "--render-style", "histogram"]
    assert main(plain) == 2
    assert "needs rendered datasets" in capsys.readouterr().err
