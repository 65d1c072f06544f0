"""The gateway's batch driver as library code (:class:`semforge.batch.BatchService`), driven without gRPC: plain
arguments in, batches as dicts out, the library's typed errors. A local directory store and the real local worker
back end (worker processes running the real analysis on small synthetic images)."""

from __future__ import annotations

import threading
import time

import pytest

from semforge.batch import BatchConfig, BatchService, batch_status, load_manifest
from semforge.errors import FailedPrecondition, NotFound, Unavailable, UserInputError
from semforge.jobs.tenancy import record_upload
from semforge.security import Identity, Role
from semforge.storage import LocalStore, ObjectNotFound

ALICE = Identity(user="alice", tenant="lab-a", role=Role.USER)
BOB = Identity(user="bob", tenant="lab-b", role=Role.USER)


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory):
    from semforge.training.synth import synthetic_sem, write_zeiss_tiff

    d = tmp_path_factory.mktemp("batch-service-images")
    for i in range(2):
        img, _ = synthetic_sem(seed=70 + i, n_particles=6, size=(256, 384), databar_rows=32)
        write_zeiss_tiff(d / f"img_{i}.tif", img, 2.5)
    return sorted(d.glob("*.tif"))


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def _upload(store, tiffs, tenant="lab-a"):
    """What the gateway's Upload leaves in the store: the content-addressed blob and the tenant's record."""
    keys = []
    for p in tiffs:
        info, _ = store.put_content([p.read_bytes()])
        record_upload(store, tenant, info.key, p.name)
        keys.append(info.key)
    return keys


def _service(store, tmp_path, **cfg):
    stopping = threading.Event()
    svc = BatchService(store, BatchConfig(store_url=str(tmp_path / "store"), workers=1, threads=1, **cfg), stopping)
    return svc, stopping


def _until(pred, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_submit_drives_the_batch_to_a_report_that_only_its_tenant_sees(store, tiffs, tmp_path):
    svc, stopping = _service(store, tmp_path)
    try:
        keys = _upload(store, tiffs)
        b = svc.submit(keys, sample="s", identity=ALICE)
        assert b["state"] in ("QUEUED", "RUNNING") and b["images_total"] == 2 and b["shards"] == 1
        assert (b["tenant"], b["owner"], b["backend"], b["sample"]) == ("lab-a", "alice", "local", "s")
        assert [e["name"] for e in load_manifest(store, b["batch_id"])["shards"][0]] == ["img_0", "img_1"]
        items = list(svc.watch(b["batch_id"], identity=ALICE))
        events, (last,) = [i["event"] for i in items[:-1]], [items[-1]["batch"]]
        assert events and all(e["stage"] == "batch" and e["job_id"] == b["batch_id"] for e in events)
        assert events[-1]["fraction"] == 1.0 and events[-1]["state"] == "SUCCEEDED"
        assert last["state"] == "SUCCEEDED", last["message"]
        assert last["images_done"] == 2 and last["finished_at"] and last["message"] == ""
        assert {"report.html", "report.json", "summary.csv", "img_0/particles.csv"} <= set(last["outputs"])
        key = svc.output_key(b["batch_id"], "summary.csv", identity=ALICE)
        assert key == f"batches/{b['batch_id']}/report/summary.csv" and store.get_bytes(key)
        with pytest.raises(ObjectNotFound, match="no output 'nope'"):
            svc.output_key(b["batch_id"], "nope", identity=ALICE)
        assert not store.exists(f"active-batches/{b['batch_id']}")  # finished: out of the stale scan
        assert svc.cancel(b["batch_id"], identity=ALICE)["state"] == "SUCCEEDED"  # too late: nothing changes
        # another tenant: an unknown id, for every call; nor may it batch lab-a's uploads
        for call in (lambda: svc.get(b["batch_id"], identity=BOB), lambda: svc.cancel(b["batch_id"], identity=BOB),
                     lambda: next(svc.watch(b["batch_id"], identity=BOB)),
                     lambda: svc.output_key(b["batch_id"], "summary.csv", identity=BOB)):
            with pytest.raises(NotFound, match="no batch"):
                call()
        with pytest.raises(ObjectNotFound, match="image 0: no object"):
            svc.submit(keys, identity=BOB)
    finally:
        stopping.set()


def test_cancel_stops_the_workers_and_the_batch_ends_cancelled(store, tiffs, tmp_path):
    svc, stopping = _service(store, tmp_path)
    try:
        keys = _upload(store, tiffs)
        b = svc.submit(keys * 3, [f"i{k}" for k in range(6)], sample="c", identity=ALICE)
        c = svc.cancel(b["batch_id"], identity=ALICE)
        assert c["state"] == "CANCELLED"  # the marker wins at once, whatever the driver writes later
        *_, end = svc.watch(b["batch_id"], identity=ALICE)
        assert end["batch"]["state"] == "CANCELLED"
        _until(lambda: "cancelled after" in svc.get(b["batch_id"], identity=ALICE)["message"])  # the driver saw it
        done = svc.get(b["batch_id"], identity=ALICE)
        assert done["images_done"] < 6 and not done["outputs"] and done["finished_at"]
        assert batch_status(store, b["batch_id"])["cancelled"]
        with pytest.raises(ObjectNotFound, match=r"no report yet \(state JOB_STATE_CANCELLED\)"):
            svc.output_key(b["batch_id"], "report.html", identity=ALICE)
    finally:
        stopping.set()


def test_a_stopping_replica_releases_its_batch_and_another_finishes_it(store, tiffs, tmp_path):
    first, stop_first = _service(store, tmp_path)
    keys = _upload(store, tiffs)
    b = first.submit(keys, identity=ALICE)
    stop_first.set()  # SIGTERM: its driver stops the workers and releases the batch
    _until(lambda: store.exists(f"batch-released/{b['batch_id']}"))
    released = first.get(b["batch_id"], identity=ALICE)
    assert released["state"] == "RUNNING" and "released by a stopping gateway replica" in released["message"]
    with pytest.raises(Unavailable, match="shutting down; submit again"):
        first.submit(keys, identity=ALICE)
    with pytest.raises(Unavailable, match=f"batch {b['batch_id']} goes on: watch it again"):
        list(first.watch(b["batch_id"], identity=ALICE))
    second, stop_second = _service(store, tmp_path)
    try:
        *_, end = second.watch(b["batch_id"], identity=ALICE)
        assert end["batch"]["state"] == "SUCCEEDED" and end["batch"]["images_done"] == 2
        assert store.exists(f"batches/{b['batch_id']}/lease/1")  # the second replica drove generation 1
        assert not store.exists(f"batch-released/{b['batch_id']}")
    finally:
        stop_second.set()


def test_bad_requests_and_settings_are_typed_errors(store, tiffs, tmp_path):
    svc, stopping = _service(store, tmp_path)
    try:
        keys = _upload(store, tiffs)
        for kwargs, err, what in (({"images": []}, UserInputError, "no images given"),
                                  ({"images": keys, "names": ["a"]}, UserInputError, "1 names for 2 images"),
                                  ({"images": keys, "names": ["a", "a"]}, UserInputError, "share a name"),
                                  ({"images": keys, "shards": -1}, UserInputError, "shards must be >= 0"),
                                  ({"images": [""]}, UserInputError, "image 0: empty object reference")):
            with pytest.raises(err, match=what):
                svc.submit(identity=ALICE, **kwargs)
        with pytest.raises(NotFound, match="no batch 'nope'"):
            svc.get("nope", identity=ALICE)
        assert not list(store.list_after("batches/"))  # nothing was submitted
    finally:
        stopping.set()
    for cfg, what in (({"store_url": ""}, "needs a store its worker processes can open"),
                      ({"backend": "kubernetes"}, "BATCH_BACKEND=kubernetes needs BATCH_IMAGE")):
        stopping = threading.Event()
        svc = BatchService(store, BatchConfig(**cfg), stopping)
        try:
            with pytest.raises(FailedPrecondition, match=what):
                svc.submit(keys, identity=ALICE)
        finally:
            stopping.set()
