"""A store that loses recent writes (an S3 outage left 0-byte objects, #15): the runner redoes the images whose
intermediate or finished results were lost instead of failing the job. Real local store, real runner."""

from __future__ import annotations

from semforge.common.v1 import common_pb2 as S
from semforge.storage import LocalStore, ObjectNotFound

from test_runner import StoreStages, runner, submit, wait_state  # noqa: E402 - tests/jobs is on sys.path

DONE = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


class Lossy(StoreStages):
    """The mask of img1 disappears once between segment and measure; img0's labels are emptied (0 bytes, as
    the outage left them) right after img2 is measured."""

    def __init__(self, store, calls):
        super().__init__(store, calls)
        self.lost = set()

    def measure(self, prep, mask, options):
        if prep.name == "img1" and "mask" not in self.lost:
            self.lost.add("mask")
            self.store.delete(mask.key)
        if not self.store.exists(mask.key):
            raise ObjectNotFound(f"no object {mask.key!r}")
        out = super().measure(prep, mask, options)
        if prep.name == "img2" and "labels" not in self.lost:
            self.lost.add("labels")
            path = self.store.root / self.first_labels
            path.write_bytes(b"")
        if prep.name == "img0":
            self.first_labels = out.labels.key
        return out


def test_lost_intermediate_and_finished_results_are_redone(tmp_path):
    store = LocalStore(tmp_path / "s")
    calls = []
    r = runner(store, calls)
    lossy = Lossy(store, calls)
    r.stages_for = lambda job: lossy
    r.start()
    try:
        job = submit(r, store, 3)
        final = wait_state(r.jobs, job.job_id, DONE)
        assert final.state == S.JOB_STATE_SUCCEEDED, final.message
        segs = [n for s, n in calls if s == "segment"]
        assert sorted(segs) == ["img0", "img0", "img1", "img1", "img2"], segs  # img1 redone, img0 redone
        for k in ("img0", "img1", "img2"):
            ref = final.outputs[f"_state/{k}/labels.tif"]
            assert store.stat(ref.key).size == ref.size_bytes > 0
    finally:
        r.close()


def test_a_lost_input_still_fails_clearly(tmp_path):
    store = LocalStore(tmp_path / "s")
    calls = []
    r = runner(store, calls)
    info, _ = store.put_content([b"image bytes"])
    store.delete(info.key)
    store.put_bytes(info.key.replace("blobs/sha256/", "x/"), b"")
    from semforge.rpc.convert import ref_pb

    stages = StoreStages(store, calls)
    orig = stages.prepare

    def prepare(ref, name, options):
        if not store.exists(ref.key):
            raise ObjectNotFound(f"no object {ref.key!r}; upload it first")
        return orig(ref, name, options)

    stages.prepare = prepare
    r.stages_for = lambda job: stages
    pb = S.Job(job_id="f" * 32, state=S.JOB_STATE_QUEUED, created_at="2026-01-01T00:00:00+00:00", images_total=1)
    pb.inputs.append(ref_pb(info))
    pb.input_names.append("img0")
    r.jobs.create(pb)
    r.run(pb.job_id)
    final = r.jobs.load(pb.job_id)
    assert final.state == S.JOB_STATE_FAILED and "upload it first" in final.message
    assert [c for c in calls if c[0] == "segment"] == []


class SameSizeCorruption(StoreStages):
    """img0's label image is overwritten with same-size garbage after img1 (a stat cannot see it); the report
    reads every label image back (as the measure service does), which finds it corrupt."""

    def measure(self, prep, mask, options):
        out = super().measure(prep, mask, options)
        if prep.name == "img0":
            self.first = out.labels.key
        if prep.name == "img1" and not getattr(self, "done", False):
            self.done = True
            p = self.store.root / self.first
            p.write_bytes(b"x" * p.stat().st_size)
        return out

    def report(self, outcomes, options, *, title, warn=None):
        for o in outcomes:
            self.store.get_bytes(o.measured.labels.key)  # ObjectCorrupt (NOT_FOUND) for a damaged one
        return super().report(outcomes, options, title=title)


def test_a_corrupt_result_found_by_the_report_is_redone(tmp_path):
    store = LocalStore(tmp_path / "s")
    calls = []
    r = runner(store, calls)
    stages = SameSizeCorruption(store, calls)
    r.stages_for = lambda job: stages
    r.start()
    try:
        job = submit(r, store, 2)
        final = wait_state(r.jobs, job.job_id, DONE)
        assert final.state == S.JOB_STATE_SUCCEEDED, final.message
        assert sorted(n for s, n in calls if s == "segment") == ["img0", "img0", "img1"]
        assert [c for c in calls if c[0] == "report"] == [("report", "img0,img1")]  # the second try succeeded
        assert store.get_bytes(final.outputs["_state/img0/labels.tif"].key) == b"labels img0"
    finally:
        r.close()
