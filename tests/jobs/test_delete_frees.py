"""DeleteJob and retention free the storage only the deleted job used (#15, ``semforge.jobs.refs``): its
uploads (the tenant's record, and the blob when no tenant has it any more), masks, tables and label images,
never a blob another job or tenant still uses, and never one that a concurrent upload or submission of the
same content is about to use. Real runner on a real local store and on a real S3 server."""

from __future__ import annotations

import threading
import time

import pytest
from google.protobuf import json_format

from semforge.analysis import Calibration, MeasureOptions
from semforge.common.v1 import common_pb2 as S
from semforge.errors import Busy
from semforge.jobs import JobRunner, refs
from semforge.jobs.tenancy import record_upload
from semforge.pipeline import AnalysisOptions, Measured, Segmented, prepare_facts
from semforge.pipeline.types import ImageFacts
from semforge.rpc.convert import facts_key, ref_pb
from semforge.security import Identity, Role
from semforge.storage import BLOB_PREFIX, LocalStore, ObjectNotFound, StorageUnavailable

ALICE = Identity("alice", "group-a", Role.USER, "", "user")
BOB = Identity("bob", "group-b", Role.USER, "", "user")
DONE = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


class ContentStages:
    """Results are content addressed and depend only on the image's bytes (as the real services' do), so two
    jobs on the same image share their mask, table and label image."""

    def __init__(self, store):
        self.store = store

    def _put(self, data: bytes):
        return ref_pb(self.store.put_content([data])[0])

    def prepare(self, ref, name, options):
        return prepare_facts(ImageFacts(8, 8, "raw", Calibration(1.0, "user"), 8), name, options, image=ref)

    def segment(self, prep, options):  # as RemoteStages: a Segmented with the mask and the probability map by reference
        data = self.store.get_bytes(prep.image.key)
        return Segmented(self._put(b"mask of " + data), "unetpp", 0.5,
                         probability=self._put(b"probability of " + data))

    def measure(self, prep, segmented, options):
        data = self.store.get_bytes(segmented.mask.key)
        return Measured(self._put(b"table of " + data), self._put(b"labels of " + data), 3, 2)

    def classify(self, prep, measured, options):  # a new table, as the classify service writes
        return Measured(self._put(b"classified " + self.store.get_bytes(measured.table.key)), measured.labels, 3, 2)

    def report(self, outcomes, options, *, title, warn=None):
        return {}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        srv = request.getfixturevalue("s3_server")
        yield srv.store()


@pytest.fixture
def runner(store):
    r = JobRunner(store, lambda job: ContentStages(store), options_of=lambda pb: AnalysisOptions(MeasureOptions()),
                  workers=1).start()
    yield r
    r.close(1.0)


def upload(store, identity, data: bytes, name: str):
    """What the gateway's Upload does around the store (server.py): bytes, pin, facts, owner record, unpin."""
    info, _ = store.put_content([data])
    pin = refs.upload_pin(store, identity.tenant, info.key)
    try:
        store.put_bytes(facts_key(info.key), b"{}")
        record_upload(store, identity.tenant, info.key, name)
    finally:
        refs.drop_upload(store, identity.tenant, info.key, pin)
    return ref_pb(info)


def run(r, identity, refs_, timeout=30):
    job = r.create(refs_, [], S.AnalysisOptions(), "s", identity=identity)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            j = r.jobs.load(job.job_id)
        except (StorageUnavailable, json_format.ParseError):  # the test S3 server, read mid-rewrite of the record
            time.sleep(0.05)
            continue
        if j.state in DONE:
            assert j.state == S.JOB_STATE_SUCCEEDED, j.message
            return j
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def blobs(store) -> set[str]:
    return set(store.list(BLOB_PREFIX))


def derived(store, data: bytes) -> set[str]:
    """The keys of the mask, probability map, tables and label image that ContentStages makes from an image's bytes."""
    mask = b"mask of " + data
    table = b"table of " + mask
    return {ref_pb(store.put_content([x])[0]).key
            for x in (mask, b"probability of " + data, table, b"labels of " + mask, b"classified " + table)}


def test_delete_frees_what_only_that_job_used(store, runner):
    x = upload(store, ALICE, b"image X", "x.tif")
    y = upload(store, ALICE, b"image Y", "y.tif")
    z = upload(store, ALICE, b"image Z (uploaded, never analysed)", "z.tif")
    j1 = run(runner, ALICE, [x, y])
    j2 = run(runner, ALICE, [y])
    from_x, from_y = derived(store, b"image X"), derived(store, b"image Y")
    assert {x.key, y.key, z.key} | from_x | from_y == blobs(store)

    n = runner.delete(j1.job_id, ALICE)
    assert n >= 1 + 1 + 5  # record, blob list, X and its 5 results
    assert blobs(store) == {y.key, z.key} | from_y  # X and what was made from it: gone
    assert not store.exists(facts_key(x.key)) and not store.exists(f"owners/group-a/{x.key.rsplit('/', 1)[1]}")
    assert store.exists(f"owners/group-a/{y.key.rsplit('/', 1)[1]}")  # job 2 still uses Y
    assert run(runner, ALICE, [y]).state == S.JOB_STATE_SUCCEEDED  # and Y can be analysed again

    for j in runner.jobs.list(100, ALICE):
        runner.delete(j.job_id, ALICE)
    assert blobs(store) == {z.key}  # only the upload no job ever used
    assert store.list("refs/") == [f"refs/{z.key.rsplit('/', 1)[1]}/group-a/_owner"]
    assert not store.list("gc/") and not store.list("jobs/")
    with pytest.raises(ObjectNotFound):  # a deleted upload must be uploaded again
        runner.create([x], [], S.AnalysisOptions(), "s", identity=ALICE)
    assert j2.job_id


def test_another_tenant_keeps_its_copy(store, runner):
    a = upload(store, ALICE, b"same bytes", "a.tif")
    b = upload(store, BOB, b"same bytes", "b.tif")
    assert a.key == b.key
    ja = run(runner, ALICE, [a])
    runner.delete(ja.job_id, ALICE)
    h = a.key.rsplit("/", 1)[1]
    assert not store.exists(f"owners/group-a/{h}") and store.exists(f"owners/group-b/{h}")
    assert store.exists(a.key) and store.exists(facts_key(a.key))  # B's upload is intact
    with pytest.raises(ObjectNotFound):  # A no longer owns it
        runner.create([a], [], S.AnalysisOptions(), "s", identity=ALICE)
    assert run(runner, BOB, [b]).state == S.JOB_STATE_SUCCEEDED


def test_retention_frees_too(store):
    r = JobRunner(store, lambda job: ContentStages(store), options_of=lambda pb: AnalysisOptions(MeasureOptions()),
                  workers=1, retention_max_jobs=1, retention_every_s=3600).start()
    try:
        old = upload(store, ALICE, b"old image", "old.tif")
        new = upload(store, ALICE, b"new image", "new.tif")
        run(r, ALICE, [old])
        time.sleep(0.01)
        run(r, ALICE, [new])
        assert len(r.apply_retention()) == 1
        assert blobs(store) == {new.key} | derived(store, b"new image")
    finally:
        r.close(1.0)


def test_an_upload_racing_with_the_freer_waits_and_is_told_to_upload_again(store):
    """The protocol, step by step: a freer holds the tombstone; an upload of the same bytes writes its pin,
    waits, finds the blob gone and answers Busy (RESOURCE_EXHAUSTED + hint: the client sends the file again);
    the next try stores the bytes anew."""
    refs.ensure_refs(store)
    info, _ = store.put_content([b"racy"])
    h = info.key.rsplit("/", 1)[1]
    store.put_bytes(f"gc/{h}", str(time.time()).encode())  # a freer decided: nobody uses it
    out = {}

    def uploader():
        try:
            upload(store, ALICE, b"racy", "r.tif")
            out["ok"] = True
        except Busy as exc:
            out["busy"] = exc

    t = threading.Thread(target=uploader)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # waiting for the freer
    store.delete(info.key)
    store.delete(f"gc/{h}")
    t.join(10)
    assert "busy" in out and "upload it again" in str(out["busy"]) and out["busy"].retry_after_ms > 0
    assert not store.list(f"refs/{h}/")  # the failed pin is gone
    ref = upload(store, ALICE, b"racy", "r.tif")  # the client's retry
    assert store.get_bytes(ref.key) == b"racy" and store.exists(f"owners/group-a/{h}")


def test_a_pinned_blob_is_not_freed(store):
    refs.ensure_refs(store)
    info, _ = store.put_content([b"pinned"])
    pin = refs.upload_pin(store, ALICE.tenant, info.key)
    assert not refs.free(store, info.key, ALICE.tenant) and store.exists(info.key)
    refs.drop_upload(store, ALICE.tenant, info.key, pin)
    assert refs.free(store, info.key) and not store.exists(info.key)


def test_concurrent_delete_and_reupload_never_leave_a_dangling_upload(tmp_path):
    """Many rounds of: delete the only job on X while the same tenant uploads X again and submits it. Whatever
    the interleaving, an upload that answered OK can be analysed (its blob and record exist)."""
    store = LocalStore(tmp_path / "store")
    r = JobRunner(store, lambda job: ContentStages(store), options_of=lambda pb: AnalysisOptions(MeasureOptions()),
                  workers=1).start()
    try:
        busy = 0
        for i in range(15):
            x = upload(store, ALICE, b"X", "x.tif")
            j = run(r, ALICE, [x])
            got = {}

            def reupload():
                for _ in range(20):
                    try:
                        got["ref"] = upload(store, ALICE, b"X", "x.tif")
                        return
                    except Busy:
                        got["busy"] = got.get("busy", 0) + 1
                        time.sleep(0.01)

            t = threading.Thread(target=reupload)
            t.start()
            r.delete(j.job_id, ALICE)
            t.join(30)
            busy += got.get("busy", 0)
            assert store.get_bytes(got["ref"].key) == b"X", i
            assert run(r, ALICE, [got["ref"]]).state == S.JOB_STATE_SUCCEEDED
            for jj in r.jobs.list(100, ALICE):
                r.delete(jj.job_id, ALICE)
            assert not blobs(store) or blobs(store) == {x.key}  # X stays only as the re-upload's own
    finally:
        r.close(1.0)


def test_older_stores_are_migrated_once_and_nothing_is_freed_before(tmp_path):
    """A store written before reference records existed: B's upload record and an old job of A on the same
    bytes have none. Until the one-time migration nothing is freed; after it (on the runner's start), deleting
    A's new job on those bytes leaves B's upload and A's old job's input alone."""
    import json

    from semforge.jobs import JobStore

    store = LocalStore(tmp_path / "store")
    info, _ = store.put_content([b"legacy bytes"])
    h = info.key.rsplit("/", 1)[1]
    store.put_bytes(f"owners/group-b/{h}", json.dumps({"name": "b.tif"}).encode())  # the old record format
    old = S.Job(job_id="old1", state=S.JOB_STATE_SUCCEEDED, tenant="group-a", created_at="2026-01-01T00:00:00.000+00:00")
    old.inputs.append(ref_pb(info))
    JobStore(store).create(old)
    assert not refs.free(store, info.key) and store.exists(info.key)  # not migrated: never frees
    r = JobRunner(store, lambda job: ContentStages(store), options_of=lambda pb: AnalysisOptions(MeasureOptions()),
                  workers=1).start()
    try:
        assert store.exists(refs.MIGRATED)
        assert set(store.list(f"refs/{h}/")) == {f"refs/{h}/group-b/_owner", f"refs/{h}/group-a/old1"}
        mine = upload(store, ALICE, b"legacy bytes", "a.tif")
        r.delete(run(r, ALICE, [mine]).job_id, ALICE)
        assert store.exists(info.key) and store.exists(f"owners/group-b/{h}")
        r.delete("old1", ALICE)  # the old job goes too; A uploaded the bytes after it was created: kept
        assert store.list(f"refs/{h}/group-a/") == [f"refs/{h}/group-a/_owner"]
        assert store.exists(info.key) and store.exists(f"owners/group-a/{h}")
    finally:
        r.close(1.0)
