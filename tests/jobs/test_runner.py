"""The job runner over a real local object store: cross-replica cancel, exactly-one resume, create-only writes.

Two or three ``JobRunner`` instances on one store are the replicas. The stages
are a small real implementation that writes its results into the store as
object references (like the services do) and counts its calls; a gate lets a
test hold a job inside a stage.
"""

import threading
import time

import pytest
from google.protobuf import json_format

from semforge.analysis import MeasureOptions
from semforge.common.v1 import common_pb2
from semforge.jobs import JobRunner, JobStore
from semforge.pipeline import AnalysisOptions, Measured, prepare_facts
from semforge.pipeline.types import ImageFacts
from semforge.analysis import Calibration
from semforge.rpc.convert import ref_pb
from semforge.storage import LocalStore

S = common_pb2


class StoreStages:
    """Stages whose handles are object references in the store; ``gate`` (if set) holds the segment stage."""

    def __init__(self, store, calls, gate=None):
        self.store, self.calls, self.gate = store, calls, gate

    def _put(self, data: bytes):
        info, _ = self.store.put_content([data])
        return ref_pb(info)

    def prepare(self, ref, name, options):
        self.calls.append(("load", name))
        facts = ImageFacts(8, 8, "raw", Calibration(1.0, "user"), 8)
        return prepare_facts(facts, name, options, image=ref)

    def segment(self, prep, options):
        self.calls.append(("segment", prep.name))
        if self.gate is not None:
            self.gate(prep.name)
        return self._put(b"mask " + prep.name.encode())

    def measure(self, prep, mask, options):
        self.calls.append(("measure", prep.name))
        return Measured(self._put(b"table " + prep.name.encode()), self._put(b"labels " + prep.name.encode()), 3, 2)

    def classify(self, prep, measured, options):
        self.calls.append(("classify", prep.name))
        return measured

    def report(self, outcomes, options, *, title, warn=None):
        self.calls.append(("report", ",".join(o.prepared.name for o in outcomes)))
        return {"report.html": self._put(title.encode())}


def runner(store, calls, gate=None, **kw):
    return JobRunner(store, lambda job: StoreStages(store, calls, gate),
                     options_of=lambda pb: AnalysisOptions(MeasureOptions()), **kw)


def submit(r, store, n):
    info, _ = store.put_content([b"image bytes"])
    return r.create([ref_pb(info)] * n, [f"img{i}" for i in range(n)], S.AnalysisOptions(), "s")


def wait_state(jobs, job_id, states, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = jobs.load(job_id)
        if j.state in states:
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {S.JobState.Name(j.state)}")


def test_cancel_on_another_replica_wins(tmp_path):
    store = LocalStore(tmp_path / "store")
    calls = []
    entered, release = threading.Event(), threading.Event()

    def gate(name):
        if name == "img1":
            entered.set()
            assert release.wait(20)

    a = runner(store, calls, gate).start()
    b = runner(store, [])  # another replica: not running the job, never started
    try:
        job = submit(a, store, 5)
        assert entered.wait(20)  # replica A is inside image 2 of 5
        got = b.cancel(job.job_id)
        assert got.state == S.JOB_STATE_CANCELLED
        # every replica reads the job as cancelled at once, although A has not noticed yet
        assert b.jobs.load(job.job_id).state == S.JOB_STATE_CANCELLED
        assert [j.state for j in b.jobs.list() if j.job_id == job.job_id] == [S.JOB_STATE_CANCELLED]
        release.set()
        final = wait_state(b.jobs, job.job_id, (S.JOB_STATE_CANCELLED,))
        time.sleep(0.3)
        raw = b.jobs.load(job.job_id, raw=True)  # A's own last save says so too
        assert raw.state == S.JOB_STATE_CANCELLED and raw.message == "cancelled by request"
        assert final.images_done < 5
        # A stopped at the next stage boundary: nothing of images 3-5 ran, no report
        assert not [c for c in calls if c[1] in ("img2", "img3", "img4")]
        assert not [c for c in calls if c[0] == "report"]
        # a save by the running replica after the cancel cannot resurrect the job
        raw.state = S.JOB_STATE_RUNNING
        a.jobs.save(raw)
        assert b.jobs.load(job.job_id).state == S.JOB_STATE_CANCELLED
    finally:
        release.set()
        a.close()


def _stale_job(store, n):
    info, _ = store.put_content([b"image bytes"])
    job = S.Job(job_id="feedface" * 4, state=S.JOB_STATE_RUNNING, created_at="2026-01-01T00:00:00+00:00",
                updated_at="2026-01-01T00:00:00+00:00", images_total=n, sample="orphan")
    for i in range(n):
        job.inputs.append(ref_pb(info))
        job.input_names.append(f"img{i}")
    store.put_bytes(f"jobs/{job.job_id}/job.json", json_format.MessageToJson(job).encode())
    return job


def test_exactly_one_replica_resumes_a_stale_job(tmp_path):
    store = LocalStore(tmp_path / "store")
    job = _stale_job(store, 6)
    calls = [[], [], []]
    replicas = [runner(store, calls[k], resume_after_s=1.0) for k in range(3)]
    barrier = threading.Barrier(3)
    taken = [None] * 3

    def scan(k):
        barrier.wait()
        taken[k] = replicas[k].resume_stale()

    threads = [threading.Thread(target=scan, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(len(t) for t in taken) == [0, 0, 1], taken
    for r in replicas:
        r.start()
    try:
        final = wait_state(replicas[0].jobs, job.job_id, (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED), timeout=30)
        assert final.state == S.JOB_STATE_SUCCEEDED, final.message
        time.sleep(1.5)  # more resume scans: a live (heartbeating) or finished job is never taken again
        segments = [c for cs in calls for c in cs if c[0] == "segment"]
        assert len(segments) == 6, segments
        assert sum(1 for cs in calls if cs) == 1
        assert "report.html" in final.outputs
    finally:
        for r in replicas:
            r.close()


def test_a_resumed_job_skips_the_images_finished_before(tmp_path):
    store = LocalStore(tmp_path / "store")
    calls = []
    stop_after = {"n": 0}

    def gate(name):
        if name == "img2":
            stop_after["n"] += 1
            a.stopping.set()  # the replica shuts down inside image 3: the job stays RUNNING, resumable

    a = runner(store, calls, gate, resume_after_s=1.0).start()
    job = submit(a, store, 4)
    deadline = time.monotonic() + 20
    while stop_after["n"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    rec = a.jobs.load(job.job_id, raw=True)
    assert rec.state == S.JOB_STATE_RUNNING and rec.images_done == 2
    calls2 = []
    b = runner(store, calls2, resume_after_s=1.0).start()
    try:
        final = wait_state(b.jobs, job.job_id, (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED), timeout=30)
        assert final.state == S.JOB_STATE_SUCCEEDED, final.message
        assert [c[1] for c in calls2 if c[0] == "segment"] == ["img2", "img3"]
        assert ("report", "img0,img1,img2,img3") in calls2
    finally:
        b.close()
        a.close()


def test_put_if_absent_has_exactly_one_winner(tmp_path):
    store = LocalStore(tmp_path / "store")
    barrier = threading.Barrier(8)
    wins = []

    def race(k):
        barrier.wait()
        wins.append((k, store.put_if_absent("jobs/x/lease/t", f"replica {k}".encode())))

    threads = [threading.Thread(target=race, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [k for k, ok in wins if ok]
    assert len(winners) == 1
    assert store.get_bytes("jobs/x/lease/t") == f"replica {winners[0]}".encode()
    assert not list((store.root / ".tmp").iterdir())


def test_job_records_reject_bad_ids(tmp_path):
    from semforge.errors import NotFound, UserInputError

    jobs = JobStore(LocalStore(tmp_path / "store"))
    with pytest.raises(NotFound, match="no job"):
        jobs.load("../etc")
    with pytest.raises(NotFound, match="no job"):
        jobs.load("nope")
    with pytest.raises(UserInputError, match="empty"):
        jobs.load("")


def test_put_if_absent_on_a_real_s3_server(s3_server):
    store = s3_server.store()
    assert store.put_if_absent("jobs/y/lease/t", b"first") is True
    assert store.put_if_absent("jobs/y/lease/t", b"second") is False
    assert store.get_bytes("jobs/y/lease/t") == b"first"
