"""Per-tenant fair share of the job workers, and SIGTERM: a stopping replica releases its jobs and another one
resumes them at once (not after the resume timer). Real local store; the runners are real; the stages are the
small store-backed ones of test_runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import queue as _queue

import pytest

from semforge.common.v1 import common_pb2 as S
from semforge.jobs import FairQueue, JobStore
from semforge.jobs.tenancy import record_upload
from semforge.rpc.convert import ref_pb
from semforge.security import Identity, Role
from semforge.storage import LocalStore

from test_runner import runner, wait_state  # noqa: E402 - tests/jobs is on sys.path (rootdir-relative import)

ALICE = Identity("alice", "group-a", Role.USER, "", "user")
BOB = Identity("bob", "group-b", Role.USER, "", "user")
DONE = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


def own_upload(store, who, data=b"image bytes"):
    info, _ = store.put_content([data])
    record_upload(store, who.tenant, info.key, "x.png")
    return ref_pb(info)


def test_fair_queue_round_robin():
    q = FairQueue()
    for i in range(5):
        q.put(f"a{i}", "A")
    q.put("b0", "B")
    q.put("c0", "C")
    q.put("b1", "B")
    assert [q.get(0.1) for _ in range(8)] == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    with pytest.raises(_queue.Empty):
        q.get(0.05)


def test_a_tenant_with_20_queued_jobs_does_not_block_another(tmp_path):
    store = LocalStore(tmp_path / "s")
    finished: list[str] = []
    lock = threading.Lock()

    all_queued = threading.Event()

    def slow(name):
        assert all_queued.wait(60)  # the worker holds A's first job until all 21 are queued
        time.sleep(0.05)

    r = runner(store, [], slow, workers=1).start()
    try:
        ref_a, ref_b = own_upload(store, ALICE, b"a"), own_upload(store, BOB, b"b")
        a_jobs = [r.create([ref_a], ["img"], S.AnalysisOptions(), "a", identity=ALICE) for _ in range(20)]
        b_job = r.create([ref_b], ["img"], S.AnalysisOptions(), "b", identity=BOB)
        all_queued.set()

        def watch(job_id):
            wait_state(r.jobs, job_id, DONE, timeout=60)
            with lock:
                finished.append(job_id)

        ts = [threading.Thread(target=watch, args=(j.job_id,)) for j in a_jobs + [b_job]]
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
        ends = {j: r.jobs.load(j).updated_at for j in [x.job_id for x in a_jobs] + [b_job.job_id]}
        order = sorted(ends, key=ends.get)
        # FIFO would run B's job 21st; round robin per tenant: after at most 2 of A's (the running one and one more)
        assert order.index(b_job.job_id) <= 2, order.index(b_job.job_id)
        assert all(r.jobs.load(j.job_id).state == S.JOB_STATE_SUCCEEDED for j in a_jobs + [b_job])
    finally:
        all_queued.set()
        r.close()


def test_stopping_replica_releases_its_job_and_another_resumes_it_at_once(tmp_path):
    store = LocalStore(tmp_path / "s")
    calls_a, calls_b = [], []
    entered, hold = threading.Event(), threading.Event()

    def gate(name):
        if name == "img2":
            entered.set()
            hold.wait(20)

    a = runner(store, calls_a, gate, resume_after_s=60.0).start()
    b = runner(store, calls_b, resume_after_s=60.0).start()
    try:
        job = a.create([own_upload(store, ALICE)] * 5, [f"img{i}" for i in range(5)], S.AnalysisOptions(), "s",
                       identity=ALICE)
        assert entered.wait(20)  # A is inside image 3 of 5
        t0 = time.monotonic()
        a.release()  # what SIGTERM does, before the server's grace period
        hold.set()
        final = wait_state(b.jobs, job.job_id, DONE, timeout=20)
        took = time.monotonic() - t0
        assert final.state == S.JOB_STATE_SUCCEEDED and final.images_done == 5
        assert took < 10, took  # not the 60 s resume timer
        # every image measured exactly once in the final record; B did not redo A's finished images
        seg_b = [n for s, n in calls_b if s == "segment"]
        assert seg_b == ["img2", "img3", "img4"], seg_b
        assert [n for s, n in calls_a if s == "measure"] == ["img0", "img1"]
        deadline = time.monotonic() + 5
        while store.list("active/") and time.monotonic() < deadline:
            time.sleep(0.05)  # the markers go right after the final save
        assert not store.list("released/") and not store.list("active/")
    finally:
        hold.set()
        a.close(1.0)
        b.close(1.0)


CHILD = textwrap.dedent('''
    import sys, threading, time
    sys.path.insert(0, {tests!r})
    from test_runner import runner
    from semforge.common.v1 import common_pb2 as S
    from semforge.rpc import build_server, serve_forever, ServiceConfig
    from semforge.storage import LocalStore
    store = LocalStore({store!r})
    r = runner(store, [], lambda name: time.sleep(30) if name == "img1" else None, resume_after_s=60.0).start()
    r.resume_stale()
    srv = build_server("gateway", lambda s: [], ServiceConfig())
    job = r.create(
        [__import__("semforge.rpc.convert", fromlist=["ref_pb"]).ref_pb(store.put_content([b"x"])[0])] * 3,
        ["img0", "img1", "img2"], S.AnalysisOptions(), "s")
    print(job.job_id, flush=True)
    serve_forever([srv], 1.0, on_stop=r.release)
    r.close(0.5)
''')


def test_sigterm_of_a_process_releases_its_job(tmp_path):
    """A real process serving until SIGTERM (the gateway's main loop): its job is resumed elsewhere at once."""
    store = LocalStore(tmp_path / "s")
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=tests, store=str(tmp_path / "s"))],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        job_id = proc.stdout.readline().strip()
        assert job_id, "the child did not start"
        deadline = time.monotonic() + 20
        while JobStore(store).load(job_id).images_done < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # image 1 done, image 2 held for 30 s
        time.sleep(0.3)
        calls: list = []
        b = runner(store, calls, resume_after_s=60.0).start()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        final = wait_state(b.jobs, job_id, DONE, timeout=20)
        assert final.state == S.JOB_STATE_SUCCEEDED and time.monotonic() - t0 < 10
        assert [n for s, n in calls if s == "segment"] == ["img1", "img2"]
        assert proc.wait(15) == 0
        b.close(1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_replica_that_was_taken_over_stops(tmp_path):
    """A replica that looked dead (its heartbeats could not be written during a store outage) and was resumed
    elsewhere stops at its next stage instead of running the job twice."""
    store = LocalStore(tmp_path / "s")
    calls = []
    entered, hold = threading.Event(), threading.Event()

    def gate(name):
        if name == "img1":
            entered.set()
            hold.wait(20)

    a = runner(store, calls, gate, resume_after_s=60.0).start()
    try:
        job = a.create([own_upload(store, ALICE)] * 4, [f"img{i}" for i in range(4)], S.AnalysisOptions(), "s",
                       identity=ALICE)
        assert entered.wait(20)
        assert a.jobs.take_resume_lease(a.jobs.load(job.job_id, raw=True), "other-replica")  # B resumed it
        hold.set()
        deadline = time.monotonic() + 10
        while job.job_id in a._mine and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.05)
        assert [n for s, n in calls if s == "segment"] == ["img0", "img1"]  # stopped: nothing after img1
        assert a.jobs.load(job.job_id, raw=True).state == S.JOB_STATE_RUNNING  # left to the other replica
    finally:
        hold.set()
        a.close(1.0)
