"""CycleGAN machinery on generated data (a tiny model, a few iterations), resume, translate, content check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from semforge.training.synth import synthetic_sem
from semforge.training.translation.content_check import CheckThresholds, content_check, rejection_by_shape
from semforge.training.translation.train import TranslatorConfig, load_generator, train_translator, translate


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    d = tmp_path_factory.mktemp("gan")
    for k in range(2):
        img, lab = synthetic_sem(seed=k, size=(96, 96), n_particles=5, databar_rows=0)
        scene = d / "heights" / f"scene_{k:05d}"
        scene.mkdir(parents=True)
        tifffile.imwrite(scene / "height_noisy.tif", ((lab > 0) * 0.8).astype(np.float32))
        (d / "real").mkdir(exist_ok=True)
        tifffile.imwrite(d / "real" / f"r{k}.tif", img)
    return d


def cfg(d, **kw):
    base = dict(heightmaps=[str(d / "heights")], real=str(d / "real"), size=32, ngf=4, n_blocks=1, ndf=8,
                iterations=4, checkpoint_every=2, seed=5, threads=1)
    base.update(kw)
    return TranslatorConfig(**base)


def test_tiny_cyclegan_trains_seeded_and_resumes(domains, tmp_path):
    r = train_translator(cfg(domains, snapshot_every=2), tmp_path / "a")
    assert r["iterations_done"] == 4 and (tmp_path / "a" / "generator.pt").exists()
    snaps = sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir())
    assert snaps == ["generator_000002.pt", "generator_000004.pt"]
    assert load_generator(tmp_path / "a" / "snapshots" / snaps[0])[1]["iteration"] == 2
    curve_a = json.loads((tmp_path / "a" / "curve.json").read_text())
    # the same run in two halves: stop after 2, resume to 4
    train_translator(cfg(domains, iterations=2), tmp_path / "b")
    r2 = train_translator(cfg(domains, iterations=4), tmp_path / "b")
    assert r2["resumed_from"] == 2
    curve_b = json.loads((tmp_path / "b" / "curve.json").read_text())
    assert [c["iteration"] for c in curve_b] == [1, 2, 3, 4]
    assert curve_b[0]["g"] == curve_a[0]["g"]  # seeded
    with pytest.raises(ValueError, match="another configuration"):
        train_translator(cfg(domains, ngf=8), tmp_path / "b")
    g, state = load_generator(tmp_path / "a")
    out = translate(g, np.zeros((70, 90), np.float32))
    assert out.shape == (70, 90) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(FileNotFoundError, match="train one"):
        load_generator(tmp_path / "missing")


def _scene():
    ids = np.zeros((120, 160), np.int32)
    ids[20:50, 20:50] = 1
    ids[20:50, 50:80] = 2  # touches 1
    ids[80:90, 20:140] = 3  # a long rod
    return ids, {1: "sphere", 2: "sphere", 3: "long_rod"}


def test_content_check_accepts_a_faithful_image_and_names_each_failure():
    ids, shapes = _scene()
    faithful = (ids > 0).astype(float)
    faithful[20:50, 50] = 0  # the contact line between the two touching particles
    ok = content_check(faithful, ids, shapes=shapes)
    assert ok["accepted"] and ok["foreground_iou"] > 0.95 and ok["particle_recall"] == 1.0, ok
    invented = faithful.copy()
    invented[95:118, 100:150] = 1  # a hallucinated blob in the background
    r = content_check(invented, ids)
    assert not r["accepted"] and any("invented" in x for x in r["reasons"])
    chain = faithful.copy()
    chain[80:90, 60:64] = 0
    chain[80:90, 100:104] = 0  # the rod became three pieces
    r = content_check(chain, ids, shapes=shapes)
    assert r["split"] == 1 and r["split_ids"] == [3] and not r["accepted"]
    assert r["by_shape"]["long_rod"]["split"] == 1
    vanished = faithful.copy()
    vanished[20:50, 20:50] = 0
    r = content_check(vanished, ids, CheckThresholds(min_particle_recall=0.9))
    assert r["lost_ids"] == [1] and any("vanished" in x for x in r["reasons"])
    merged = (ids > 0).astype(float)  # no line between 1 and 2
    assert content_check(merged, ids)["merged"] == 1
    stats = rejection_by_shape([r, content_check(chain, ids, shapes=shapes)])
    assert list(stats)[0] == "long_rod"
    # a rod both mostly lost and split counts once as failed
    lost_and_split = faithful.copy()
    lost_and_split[80:90, 45:115] = 0  # two 25 px stubs remain (21 % each): split in two, < half found
    r = content_check(lost_and_split, ids, shapes=shapes)
    assert 3 in r["lost_ids"] and 3 in r["split_ids"]
    assert r["by_shape"]["long_rod"]["failed"] == 1
    assert rejection_by_shape([r])["long_rod"]["failed_fraction"] == 1.0
    with pytest.raises(ValueError, match="unknown separation"):
        content_check(faithful, ids, CheckThresholds(separation="magic"))


def test_content_check_counts_merges_after_the_analysis_separation():
    # two round particles touching at a narrow neck: the segmenter's foreground is one blob, as on real images
    yy, xx = np.mgrid[:80, :120]
    a = (yy - 40) ** 2 + (xx - 38) ** 2 <= 22 ** 2
    b = (yy - 40) ** 2 + (xx - 82) ** 2 <= 22 ** 2
    ids = np.zeros((80, 120), np.int32)
    ids[a] = 1
    ids[b & ~a] = 2
    blob = (ids > 0).astype(float)
    assert content_check(blob, ids, CheckThresholds(separation="none"))["merged"] == 1
    r = content_check(blob, ids)  # watershed, as the analysis: cut at the neck
    assert r["merged"] == 0 and r["split"] == 0 and r["accepted"]
    # a boundary sliver of a neighbour inside a piece is neither a split nor a merge
    ids2 = np.zeros((60, 100), np.int32)
    ids2[20:50, 20:50], ids2[20:50, 50:80] = 1, 2
    pred = np.zeros((60, 100))
    pred[20:50, 20:53] = 1  # particle 1 + 3 columns (10 %) of particle 2
    pred[20:50, 54:80] = 1  # the rest of particle 2
    assert content_check(pred, ids2, CheckThresholds(min_piece_share=0, merge_share=0))["merged"] == 1  # old rule
    r = content_check(pred, ids2, CheckThresholds(separation="none"))
    assert r["merged"] == 0 and r["split"] == 0, r
    with pytest.raises(ValueError, match="differ in size"):
        content_check(np.zeros((10, 10)), ids)


def _put_scenes(store, dataset, n=2):
    """A rendered-like dataset in the object store: height map, instances, scene.json with shapes."""
    import io

    for k in range(n):
        _, lab = synthetic_sem(seed=10 + k, size=(64, 80), n_particles=4, databar_rows=0)
        lab = lab.astype(np.uint16)
        pre = f"datasets/{dataset}/scene_{k:05d}/"
        h, i = io.BytesIO(), io.BytesIO()
        tifffile.imwrite(h, ((lab > 0) * 0.8).astype(np.float32))
        tifffile.imwrite(i, lab)
        store.put_bytes(pre + "height_noisy.tif", h.getvalue())
        store.put_bytes(pre + "instances.tif", i.getvalue())
        parts = [{"id": int(j), "shape": "sphere"} for j in np.unique(lab) if j]
        store.put_bytes(pre + "scene.json", json.dumps({"particles": parts, "pixel_size_nm": 2.0}).encode())


def test_translate_dataset_in_the_store_resumes_and_is_a_training_dataset(domains, tmp_path):
    from semforge.training.segmentation.data import fetch_dataset, load_pairs
    from semforge.storage import LocalStore, ObjectNotFound
    from semforge.training.translation.apply import translate_dataset

    train_translator(cfg(domains, iterations=2), tmp_path / "t")
    gen, _ = load_generator(tmp_path / "t")
    store = LocalStore(tmp_path / "store")
    _put_scenes(store, "rendered", 3)
    keep_all = CheckThresholds(min_foreground_iou=0, min_particle_recall=0, max_invented_fraction=1e9,
                               max_split_fraction=1e9, max_merged_fraction=1e9)
    seen = []
    s = translate_dataset(gen, store, "rendered", "trans", thresholds=keep_all,
                          progress=lambda d, n, c: seen.append((d, n, c["skipped"])), cancelled=lambda: len(seen) >= 2)
    assert seen == [(1, 3, False), (2, 3, False)] and not s["complete"]  # cancelled after two scenes
    s = translate_dataset(gen, store, "rendered", "trans", thresholds=keep_all,
                          progress=lambda d, n, c: seen.append((d, n, c["skipped"])))
    assert seen[2:] == [(1, 3, True), (2, 3, True), (3, 3, False)] and s["complete"] and s["accepted"] == 3
    assert json.loads(store.get_bytes("datasets/trans/content_check.json"))["scenes"] == 3
    local = fetch_dataset(store, "datasets/trans", tmp_path / "fetched",
                          files=("translated.png", "instances.tif", "scene.json"))
    pairs = load_pairs(local, image_file="translated.png")
    assert len(pairs) == 3 and pairs[0].image.shape == (64, 80)
    strict = translate_dataset(gen, store, "rendered", "strict")  # a 2-iteration GAN fails the default check
    assert strict["accepted"] == 0 and store.exists("datasets/strict/rejected/scene_00000/check.json")
    assert not store.exists("datasets/strict/rejected/scene_00000/scene.json")  # kept out of training data
    with pytest.raises(ObjectNotFound, match="render the dataset first"):
        translate_dataset(gen, store, "nothing", "x")
    with pytest.raises(ValueError, match="differ"):
        translate_dataset(gen, store, "rendered", "rendered")
    store.put_bytes("datasets/broken/scene_00000/height_noisy.tif", b"not a tiff")
    store.put_bytes("datasets/broken/scene_00000/instances.tif", b"not a tiff")
    store.put_bytes("datasets/broken/scene_00000/scene.json", b"{}")
    with pytest.raises(ValueError, match="not a readable rendered scene"):
        translate_dataset(gen, store, "broken", "x")


def test_translate_service_over_grpc(domains, tmp_path, monkeypatch):
    import grpc

    from semforge.common.v1 import common_pb2
    from semforge.rpc import ServiceConfig, build_server
    from semforge.storage import LocalStore
    from semforge.translate.v1 import translate_pb2, translate_pb2_grpc
    from semforge_translate.server import ready, register

    monkeypatch.setenv("SEMFORGE_TRANSLATORS", str(tmp_path / "translators"))
    assert not ready()
    train_translator(cfg(domains, iterations=2), tmp_path / "translators" / "default")
    assert ready()
    store = LocalStore(tmp_path / "store")
    srv = build_server("translate", register(store), ServiceConfig(port=0, host="127.0.0.1"))
    ch = grpc.insecure_channel(srv.address)
    stub = translate_pb2_grpc.TranslateServiceStub(ch)
    try:
        ids = np.zeros((64, 96), np.uint16)
        ids[10:30, 10:30] = 1
        import io

        h, i = io.BytesIO(), io.BytesIO()
        tifffile.imwrite(h, (ids > 0).astype(np.float32) * 0.8)
        tifffile.imwrite(i, ids)
        href, _ = store.put_content([h.getvalue()])
        iref, _ = store.put_content([i.getvalue()])
        r = stub.Translate(translate_pb2.TranslateRequest(height_map=common_pb2.ObjectRef(key=href.key),
                                                          instances=common_pb2.ObjectRef(key=iref.key)), timeout=60)
        assert r.image.content_type == "image/png" and store.exists(r.image.key)
        assert 0 <= r.foreground_iou <= 1 and (r.accepted or r.reasons)  # a 2-iteration GAN is rejected, with reasons
        with pytest.raises(grpc.RpcError) as e:
            stub.Translate(translate_pb2.TranslateRequest(height_map=common_pb2.ObjectRef(key=href.key), model="nope"))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "train one" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Translate(translate_pb2.TranslateRequest(height_map=common_pb2.ObjectRef(key=iref.key + "x")))
        assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        # streamed batch over a dataset in the store
        _put_scenes(store, "rendered", 2)
        msgs = list(stub.TranslateBatch(translate_pb2.TranslateBatchRequest(dataset="rendered", out_dataset="tr"),
                                        timeout=120))
        assert [(m.scenes_done, m.scenes_total, m.skipped) for m in msgs] == [(1, 2, False), (2, 2, False)]
        assert all(store.exists(m.image.key) for m in msgs) and all(m.accepted or m.reasons for m in msgs)
        assert msgs[-1].summary.key == "datasets/tr/content_check.json" and not msgs[0].summary.key
        assert msgs[-1].rejection_rate == 1 - msgs[-1].accepted_so_far / 2
        again = list(stub.TranslateBatch(translate_pb2.TranslateBatchRequest(dataset="rendered", out_dataset="tr"),
                                         timeout=120))
        assert [m.skipped for m in again] == [True, True]  # resumed: nothing translated twice
        for req, code in ((translate_pb2.TranslateBatchRequest(dataset="none", out_dataset="tr2"),
                           grpc.StatusCode.NOT_FOUND),
                          (translate_pb2.TranslateBatchRequest(dataset="rendered"), grpc.StatusCode.INVALID_ARGUMENT),
                          (translate_pb2.TranslateBatchRequest(dataset="rendered", out_dataset="tr3",
                                                               min_particle_recall=1.5),
                           grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.TranslateBatch(req, timeout=60))
            assert e.value.code() == code, (req, e.value.details())
    finally:
        ch.close()
        srv.stop(0)
