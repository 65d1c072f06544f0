"""Classifier training (tiny seeded runs, resume, ONNX fidelity), the shipped models, Triton and the classify service."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile

from semforge.classification import (CLASSES, SHIPPED_CLASSIFIERS, apply_classes, create_classifier,
                                     extract_crops)
from semforge.classification.train import ClassifierTrainConfig, train_classifier
from semforge.inference import MODELS_REPO, model_dir
from semforge.training.synth import synthetic_sem

REPO = Path(__file__).resolve().parents[2]


def _crops_npz(path: Path, cls_set: str, n_scenes: int = 6) -> Path:
    """Crops of synthetic ellipses; class = elongation bucket (a learnable toy task, no Blender needed)."""
    classes = CLASSES[cls_set]
    X, y, scene = [], [], []
    for s in range(n_scenes):
        img, lab = synthetic_sem(seed=s, size=(160, 200), n_particles=10, databar_rows=0)
        ids = [int(i) for i in np.unique(lab) if i]
        X.append(extract_crops(img / 255.0, lab, ids))
        for i in ids:
            r, c = np.nonzero(lab == i)
            y.append(0 if np.ptp(r) < np.ptp(c) else 1)
            scene.append(f"s{s}")
    np.savez(path, X=np.concatenate(X).astype(np.float16), y=np.array(y), scene=np.array(scene),
             source=np.array(["ideal"] * len(y)), classes=np.array(classes), modality=cls_set)
    return path


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """Both class sets trained for a few steps into a temporary model repository."""
    d = tmp_path_factory.mktemp("cls")
    for cls_set, modality in (("se", "se"), ("transmission", "tem")):
        cfg = ClassifierTrainConfig(data=[str(_crops_npz(d / f"{cls_set}.npz", cls_set))], modality=modality,
                                    repo=str(d / "repo"), workdir=str(d / f"work-{cls_set}"), width=4, batch=8,
                                    steps=6, eval_every=3, val_every=3, seed=1, threads=1)
        train_classifier(cfg)
    return d


def _scene(seed=5, n=40):
    img, lab = synthetic_sem(seed=seed, size=(256, 320), n_particles=n, databar_rows=0)
    parts = [{"id": int(i)} for i in np.unique(lab) if i]
    return img.astype(np.float32) / 255, lab, parts


def test_tiny_training_is_seeded_resumable_and_exports_a_faithful_onnx(tiny_repo, tmp_path):
    import onnxruntime as ort
    import torch

    from semforge.classification.model import create_model

    rec = json.loads((model_dir("semforge_classifier_se", repo=tiny_repo / "repo") / "training.json").read_text())
    assert rec["classes"] == CLASSES["se"] and rec["data"]["trained_on_real_masks"] is False
    assert rec["steps_done"] == 6 and [h["step"] for h in rec["history"]] == [3, 6]
    assert rec["input"]["size"] == 48 and rec["config"]["seed"] == 1
    npz = tiny_repo / "se.npz"
    base = dict(data=[str(npz)], modality="se", width=4, batch=8, steps=6, eval_every=3, val_every=3, seed=1,
                threads=1)
    # an interrupted run (time budget hit at step 3) resumes from its checkpoint and ends where a straight run ends
    part = ClassifierTrainConfig(**base, repo=str(tmp_path / "r1"), workdir=str(tmp_path / "w1"), time_budget_s=1e-9)
    assert train_classifier(part)["steps_done"] == 3
    resumed = train_classifier(ClassifierTrainConfig(**base, repo=str(tmp_path / "r1"), workdir=str(tmp_path / "w1"),
                                                     version=9))
    assert resumed["steps_done"] == 6
    x = np.load(npz)["X"][:16].astype(np.float32)
    outs = []
    for p in (model_dir("semforge_classifier_se", repo=tiny_repo / "repo"),
              model_dir("semforge_classifier_se", 9, repo=tmp_path / "r1")):
        outs.append(ort.InferenceSession(str(p / "model.onnx")).run(None, {"image": x})[0])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    assert np.allclose(outs[0].sum(1), 1, atol=1e-5)
    # ONNX = PyTorch on the same weights
    model = create_model(classes=len(CLASSES["se"]), width=4)
    model.load_state_dict(torch.load(tmp_path / "w1" / "best.pt"))
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(outs[1], ref, atol=1e-5)
    # another configuration cannot continue this work folder
    with pytest.raises(ValueError, match="another configuration"):
        train_classifier(ClassifierTrainConfig(**{**base, "lr": 0.1}, repo=str(tmp_path / "r1"),
                                               workdir=str(tmp_path / "w1")))


def test_bad_training_configs(tmp_path):
    with pytest.raises(ValueError, match="no training data"):
        train_classifier(ClassifierTrainConfig(data=[]))
    with pytest.raises(ValueError, match="unknown modality"):
        train_classifier(ClassifierTrainConfig(data=["x.npz"], modality="xray"))
    npz = _crops_npz(tmp_path / "se.npz", "se", 2)
    with pytest.raises(ValueError, match="classes"):
        train_classifier(ClassifierTrainConfig(data=[str(npz)], modality="tem", workdir=str(tmp_path / "w")))
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        train_classifier(ClassifierTrainConfig(data=[str(npz)], arch="resnet999", workdir=str(tmp_path / "w2"),
                                               steps=2, eval_every=1, val_every=1))


def test_classifier_names_and_errors(tiny_repo):
    with pytest.raises(ValueError, match="valid: cnn, cnn-triton, rules-v1"):
        create_classifier("alexnet")
    c = create_classifier("cnn", repo=tiny_repo / "repo", threads=1)
    gray, lab, parts = _scene()
    with pytest.raises(ValueError, match="confidence_limit"):
        c.classify(gray, lab, parts, confidence_limit=0)
    with pytest.raises(ValueError, match="2-D"):
        c.classify(gray[None], lab, parts)
    with pytest.raises(FileNotFoundError, match="no model"):
        create_classifier("cnn", repo=tiny_repo / "nothing").classify(gray, lab, parts)


def test_unknown_below_the_limit_and_rows_without_pixels(tiny_repo):
    c = create_classifier("cnn", repo=tiny_repo / "repo", threads=1)
    gray, lab, parts = _scene()
    probs, classes = c.probabilities(gray, lab, [p["id"] for p in parts], modality="se")
    assert probs.shape == (len(parts), len(CLASSES["se"])) and classes == CLASSES["se"]
    out = c.classify(gray, lab, parts + [{"id": 9999}], modality="se", confidence_limit=0.75)
    assert len(out) == len(parts) + 1 and out[-1] == ("unknown", 0.0)
    for (shape, conf), p in zip(out, probs):
        assert conf == pytest.approx(float(p.max()), abs=1e-4)
        assert (shape == "unknown") == (conf < 0.75)
        if shape != "unknown":
            assert shape == classes[int(p.argmax())]
    tem = c.classify(1 - gray, lab, parts, modality="tem", confidence_limit=0.01)
    assert {s for s, _ in tem} <= set(CLASSES["transmission"])


def test_covered_and_agglomerated_are_excluded_with_the_reason():
    base = {"excluded": False, "exclude_reason": "", "area": 100.0, "ecd": 11.3, "feret_max": 12.0}
    rows = [dict(base, id=1), dict(base, id=2), dict(base, id=3, excluded=True, exclude_reason="border"),
            dict(base, id=4, feret_max=20.0)]
    counts = apply_classes(rows, [("sphere", 0.9), ("covered", 0.8), ("agglomerate", 0.99), ("rod", 0.8)], "nm")
    assert counts == {"sphere": 1, "covered": 1, "agglomerate": 1, "rod": 1}
    assert [r["excluded"] for r in rows] == [False, True, True, False]
    assert [r["exclude_reason"] for r in rows] == ["", "covered", "border", ""]
    assert rows[0]["sphere_diameter"] == 11.3 and rows[3]["rod_length"] == 20.0
    assert rows[3]["rod_thickness"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="classes for"):
        apply_classes(rows, [], "nm")


# ---------------------------------------------------------------- the shipped models

shipped = pytest.mark.skipif(not all((MODELS_REPO / n).is_dir() for n in SHIPPED_CLASSIFIERS.values()),
                             reason="shipped classifier models not in models_repo/")


@shipped
def test_shipped_classifiers_are_small_documented_and_recognise_rendered_shapes():
    for cls_set, name in SHIPPED_CLASSIFIERS.items():
        d = model_dir(name)
        assert (d / "model.onnx").stat().st_size < 3_000_000
        assert (d / "model.py").read_text() == (REPO / "services/semforge/inference/triton_backend.py").read_text()
        rec = json.loads((d / "training.json").read_text())
        assert rec["classes"] == CLASSES[cls_set] and rec["data"]["trained_on_real_masks"] is False
        assert rec["best"]["macro_f1"] > 0.5
        for cfg in ("config.pbtxt", "configs/cpu.pbtxt"):
            text = (d.parent / cfg).read_text()
            assert f'name: "{name}"' in text and f"dims: [ {len(CLASSES[cls_set])} ]" in text
    # a freshly rendered scene (a seed never trained on): when the CNN names a class, it is the true one
    from PIL import Image

    from semforge.classification import COVERED_BELOW, SHAPE_TO_CLASS
    from semforge.training.scenes import SceneSpec, ShapeComponent, render_batch
    from semforge.storage import LocalStore

    comps = [ShapeComponent("sphere", 1, 190, 30, "lognormal"), ShapeComponent("cube", 1, 170, 30),
             ShapeComponent("long_rod", 1, 90, 12, "normal", 4.5)]
    spec = SceneSpec(particles=45, size_px=256, pixel_size_nm=7.344, seed=424242, components=comps, frames=60)
    out = Path(tempfile.mkdtemp())
    render_batch(spec, 1, LocalStore(out), "t", workers=1)
    d = out / "datasets" / "t" / "scene_00000"
    info = json.loads((d / "scene.json").read_text())
    truth = tifffile.imread(d / "instances.tif").astype(np.int64)
    gray = np.asarray(Image.open(d / "se.png").convert("L"), np.float32) / 255
    present = set(np.unique(truth).tolist())
    rows = [p for p in info["particles"] if not p["cut_by_border"] and p["id"] in present and p["visible_px"] >= 20]
    got = create_classifier("cnn", threads=1).classify(gray, truth, rows, modality="se")
    want = ["covered" if p["visible_fraction"] < COVERED_BELOW else SHAPE_TO_CLASS["se"][p["shape"]] for p in rows]
    named = [(g, w) for (g, _), w in zip(got, want) if g != "unknown"]
    assert len(named) >= 0.4 * len(rows)
    assert sum(g == w for g, w in named) >= 0.85 * len(named)


# ---------------------------------------------------------------- Triton and the classify service


def _triton_env() -> Path:
    env = REPO / ".venv-triton"
    if not (env / "bin" / "python").exists():
        pytest.fail("the Triton model environment .venv-triton is missing: run `make setup`", pytrace=False)
    return env


def test_triton_serves_the_classifiers_and_matches_in_process(tiny_repo, tmp_path):
    from semforge.inference.triton_repo import TritonProcess, local_repository

    repo = local_repository(tiny_repo / "repo", tmp_path / "repo", _triton_env())
    tp = TritonProcess(repo, tmp_path).start()
    try:
        tri = create_classifier("cnn-triton", url=tp.grpc_url, repo=tiny_repo / "repo", batch=32)
        assert tri.ready()
        local = create_classifier("cnn", repo=tiny_repo / "repo", threads=1)
        gray, lab, parts = _scene(seed=7, n=120)
        ids = [p["id"] for p in parts]
        assert len(ids) > 64  # several batches
        for modality in ("se", "tem"):
            a, _ = local.probabilities(gray, lab, ids, modality=modality)
            b, _ = tri.probabilities(gray, lab, ids, modality=modality)
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-5
    finally:
        tp.stop()
    assert not create_classifier("cnn-triton", url=tp.grpc_url, repo=tiny_repo / "repo").ready()


@shipped
def test_classify_service_reads_image_and_labels_by_reference(tmp_path):
    import io

    from semforge.analysis import MeasureOptions, measure_mask
    from semforge.classify.v1 import classify_pb2, classify_pb2_grpc
    from semforge.common.v1 import common_pb2
    from semforge.rpc import ServiceConfig, build_server
    from semforge.rpc.convert import get_table, put_labels, put_table
    from semforge.storage import LocalStore
    from semforge_classify.server import register

    store = LocalStore(tmp_path / "store")
    img, lab = synthetic_sem(seed=3, size=(300, 400), n_particles=40, databar_rows=0)
    res = measure_mask(lab > 0, options=MeasureOptions(classify=False))
    buf = io.BytesIO()
    tifffile.imwrite(buf, img)
    image, _ = store.put_content([buf.getvalue()])
    labels = put_labels(store, res.labels)
    parts = put_table(store, res.table)
    add = register(store, "cnn")
    assert add.ready()
    srv = build_server("classify", add, ServiceConfig(port=0, host="127.0.0.1"))
    ch = grpc.insecure_channel(srv.address)
    stub = classify_pb2_grpc.ClassifyServiceStub(ch)
    try:
        r = stub.Classify(classify_pb2.ClassifyRequest(particles=common_pb2.ObjectRef(key=parts.key),
                                                       image=common_pb2.ObjectRef(key=image.key),
                                                       labels=common_pb2.ObjectRef(key=labels.key)), timeout=60)
        assert r.model == "cnn" and sum(r.counts.values()) == len(res.particles)
        table = get_table(store, r.particles.key)
        assert table.classifier == "cnn"
        want = create_classifier("cnn").classify(img / 255.0, res.labels, res.particles, unit=res.unit)
        assert [(p["shape"], p["shape_confidence"]) for p in table.particles] == [(s, c) for s, c in want]
        for p in table.particles:
            if p["shape"] in ("covered", "agglomerate"):
                assert p["excluded"]
        with pytest.raises(grpc.RpcError) as e:
            stub.Classify(classify_pb2.ClassifyRequest(particles=common_pb2.ObjectRef(key=parts.key)), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image and labels" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Classify(classify_pb2.ClassifyRequest(particles=common_pb2.ObjectRef(key=parts.key),
                                                       image=common_pb2.ObjectRef(key=parts.key),
                                                       labels=common_pb2.ObjectRef(key=labels.key)), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        ch.close()
        srv.stop(0)


def test_in_process_analysis_classifies_from_crops(tiny_repo):
    from semforge.analysis import Calibration
    from semforge.pipeline import AnalysisOptions, LocalStages, Prepared

    img, _ = synthetic_sem(seed=8, size=(256, 320), n_particles=30, databar_rows=0)
    gray = img.astype(np.float32) / 255
    cnn = create_classifier("cnn", repo=tiny_repo / "repo", threads=1)
    opts = AnalysisOptions()

    def run(classifier):
        st = LocalStages("classical", classifier=classifier)
        prep = Prepared("x", Calibration(2.0, "user"), 256, 256, 320, gray=gray)
        return st.classify(prep, st.measure(prep, st.segment(prep, opts), opts), opts)

    res, plain = run(cnn), run("rules-v1")
    assert res.table.classifier == "cnn" and plain.table.classifier == "rules-v1"
    want = cnn.classify(gray, res.labels, plain.table.particles, unit=res.table.unit)
    assert [(p["shape"], p["shape_confidence"]) for p in res.table.particles] == want
    for p, q in zip(res.table.particles, plain.table.particles):
        if p["shape"] in ("covered", "agglomerate") and not q["excluded"]:
            assert p["excluded"] and p["exclude_reason"] == p["shape"]
        else:
            assert p["excluded"] == q["excluded"]
    assert res.included == len(res.table.included())
    st = LocalStages("classical", classifier=cnn)
    with pytest.raises(ValueError, match="needs the gray image"):
        st.classify(Prepared("x", Calibration(2.0, "user"), 256, 256, 320), res, opts)
