"""Job history at scale (#15): the per-tenant index, pages, delete and retention, on a real local store and a
real S3 server; listing reads only the index page asked for, whatever else is stored."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from semforge.common.v1 import common_pb2 as S
from semforge.errors import NotFound, UserInputError
from semforge.jobs import JobStore
from semforge.security import Identity, Role
from semforge.storage import LocalStore

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
ALICE = Identity("alice", "group-a", Role.USER, "", "user")
BOB = Identity("bob", "group-b", Role.USER, "", "user")
ROOT = Identity("root", "facility", Role.ADMIN, "", "user")


def make(jobs: JobStore, i: int, tenant: str, *, state=S.JOB_STATE_SUCCEEDED, when=None, job_id=None):
    created = when or (T0 + dt.timedelta(seconds=i))
    job = S.Job(job_id=job_id or f"{tenant}-{i:05d}", state=state, tenant=tenant, sample=f"s{i}",
                created_at=created.isoformat(timespec="milliseconds"))
    jobs.create(job)
    jobs.store.put_bytes(f"jobs/{job.job_id}/report/report.html", b"r")
    return job


def all_pages(jobs, viewer, size):
    out, token, pages = [], "", 0
    while True:
        page, token = jobs.page(viewer, size, token)
        out += [j.job_id for j in page]
        pages += 1
        if not token:
            return out, pages


def test_pages_newest_first_per_tenant(tmp_path):
    jobs = JobStore(LocalStore(tmp_path / "s"))
    for i in range(250):
        make(jobs, i, "group-a")
    for i in range(30):
        make(jobs, i, "group-b")
    ids, pages = all_pages(jobs, ALICE, 100)
    assert pages == 3 and len(ids) == 250 == len(set(ids))
    assert ids == [f"group-a-{i:05d}" for i in reversed(range(250))]  # newest first
    assert all_pages(jobs, BOB, 7)[0] == [f"group-b-{i:05d}" for i in reversed(range(30))]
    assert len(all_pages(jobs, ROOT, 1000)[0]) == 280  # the facility admin: every tenant
    assert len(all_pages(jobs, None, 1000)[0]) == 280  # authentication off: one local installation
    page, token = jobs.page(ALICE, 250)
    assert len(page) == 250 and token == ""  # an exact last page gives no token
    with pytest.raises(UserInputError):
        jobs.page(ALICE, 10, "not-a-token/../x")
    with pytest.raises(UserInputError):
        jobs.page(ALICE, -1)
    assert len(jobs.page(ALICE, 5000)[0]) == 250  # capped at 1000, no error


def test_delete_and_foreign_ids(tmp_path):
    store = LocalStore(tmp_path / "s")
    jobs = JobStore(store)
    a = make(jobs, 1, "group-a")
    running = make(jobs, 2, "group-a", state=S.JOB_STATE_RUNNING)
    with pytest.raises(NotFound) as foreign:
        jobs.delete(a.job_id, BOB)
    with pytest.raises(NotFound) as unknown:
        jobs.delete("group-a-99999", BOB)
    assert str(foreign.value).replace(a.job_id, "X") == str(unknown.value).replace("group-a-99999", "X")
    with pytest.raises(UserInputError, match="cancel it first"):
        jobs.delete(running.job_id, ALICE)
    assert jobs.delete(a.job_id, ALICE) == 2  # record + report
    assert not store.list(f"jobs/{a.job_id}/")
    assert [j.job_id for j in jobs.page(ALICE)[0]] == [running.job_id]
    assert not [k for k in store.list("index/") if a.job_id in k]
    # an index entry whose record is gone (a crash between the two) is skipped, not an error
    store.delete(f"jobs/{running.job_id}/job.json")
    assert jobs.page(ALICE)[0] == []


def test_retention_keeps_unfinished_and_the_newest(tmp_path):
    jobs = JobStore(LocalStore(tmp_path / "s"))
    now = dt.datetime.now(dt.timezone.utc)
    for i in range(5):
        make(jobs, i, "group-a", when=now - dt.timedelta(days=10 - i))  # 10..6 days old
    old_running = make(jobs, 9, "group-a", state=S.JOB_STATE_RUNNING, when=now - dt.timedelta(days=30))
    for i in range(3):
        make(jobs, i, "group-b", when=now - dt.timedelta(hours=i))
    gone = jobs.apply_retention(max_age_days=7.5)
    assert sorted(gone) == ["group-a-00000", "group-a-00001", "group-a-00002"]  # 10, 9, 8 days old
    gone = jobs.apply_retention(max_per_tenant=2)
    assert sorted(gone) == ["group-b-00002"]  # group-a: 2 finished + 1 running left (never deleted)
    assert {j.job_id for j in jobs.page(ALICE)[0]} == {"group-a-00003", "group-a-00004", old_running.job_id}
    assert jobs.apply_retention() == []  # no policy: nothing


def test_concurrent_replicas_keep_the_index_consistent(tmp_path):
    store = LocalStore(tmp_path / "s")
    replicas = [JobStore(store) for _ in range(4)]

    def work(k):
        for i in range(50):
            make(replicas[k], i, "group-a", job_id=f"r{k}-{i:03d}")
            if i % 5 == 0:
                replicas[k].delete(f"r{k}-{i:03d}", ALICE)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids, _ = all_pages(replicas[0], ALICE, 17)
    assert len(ids) == len(set(ids)) == 4 * 40
    assert len(store.list_after("index/group-a/")) == 160


def test_index_pages_on_a_real_s3_server(s3_server):
    store = s3_server.store()
    jobs = JobStore(store)
    for i in range(25):
        make(jobs, i, "group-a")
    make(jobs, 0, "group-b")
    ids, pages = all_pages(jobs, ALICE, 10)
    assert pages == 3 and ids == [f"group-a-{i:05d}" for i in reversed(range(25))]
    first = store.list_after("index/group-a/", "", 5)
    second = store.list_after("index/group-a/", first[-1], 5)
    assert len(first) == len(second) == 5 and first[-1] < second[0]  # start-after done by the server
    assert [k.rsplit("/", 1)[1].split("-", 1)[1] for k in first + second] == ids[:10]
    assert jobs.delete("group-b-00000", BOB) == 2
    assert jobs.page(BOB)[0] == []


def test_legacy_records_are_indexed_once(tmp_path):
    from google.protobuf import json_format

    store = LocalStore(tmp_path / "s")
    old = S.Job(job_id="0ld", state=S.JOB_STATE_RUNNING, created_at=T0.isoformat())
    store.put_bytes("jobs/0ld/job.json", json_format.MessageToJson(old).encode())  # written before #15
    jobs = JobStore(store)
    assert jobs.page(ROOT)[0] == []
    assert jobs.ensure_index() == 1 and jobs.ensure_index() == 0
    assert [j.job_id for j in jobs.page(ROOT)[0]] == ["0ld"]
    assert jobs.page(ALICE)[0] == []  # no tenant recorded: facility admins only
    assert jobs.active_ids() == ["0ld"]


def test_a_torn_job_record_reads_as_unavailable_not_internal(tmp_path):
    """A store whose overwrite is not atomic (the S3 test server) can serve a job record half-written: the
    record is read again, and one that stays unreadable is StorageUnavailable (gRPC UNAVAILABLE, which clients
    retry), never an internal error; once the record is whole again it reads normally."""
    import grpc

    from semforge.rpc._errors import status_for
    from semforge.storage import StorageUnavailable

    jobs = JobStore(LocalStore(tmp_path / "s"))
    job = make(jobs, 1, "group-a")
    key = jobs.record_key(job.job_id)
    whole = jobs.store.get_bytes(key)
    jobs.store.put_bytes(key, whole[: len(whole) // 2])
    with pytest.raises(StorageUnavailable, match="could not be read") as e:
        jobs.get(job.job_id, ALICE)
    assert status_for(e.value)[0] == grpc.StatusCode.UNAVAILABLE
    jobs.store.put_bytes(key, whole)
    assert jobs.get(job.job_id, ALICE).job_id == job.job_id


def test_unavailable_and_failed_precondition_map_to_their_statuses_with_the_message_unchanged():
    import grpc

    from semforge.errors import FailedPrecondition, Unavailable
    from semforge.rpc._errors import status_for

    assert status_for(Unavailable("gateway is shutting down; submit again")) == (
        grpc.StatusCode.UNAVAILABLE, "gateway is shutting down; submit again", "")
    assert status_for(FailedPrecondition("set BATCH_WORKER_IMAGE")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "set BATCH_WORKER_IMAGE", "")
