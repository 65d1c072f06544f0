"""Runs analysis jobs on the pipeline's stages: queue, progress, cancel, retry, resume after a replica died.

The runner owns everything around the stages (they stay pure): the cancel check
and the progress event before each stage, retrying a stage while the store or a
service is unavailable, saving per-image results so a resumed job skips finished
images, the heartbeat that keeps a live job from looking stale, and the resume
scan that takes a create-only lease so one replica resumes a stale job.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ..analysis import Calibration, ImageDecodeError
from ..errors import Busy, Cancelled, UserInputError
from ..pipeline import AnalysisOptions, ImageOutcome, Measured, Prepared, Stages, analyze_image, unique_names
from ..storage import ObjectNotFound, ObjectStore, StorageUnavailable, key_segment, validate_key
from . import refs
from .events import EventHub
from .records import CANCEL_MESSAGE, TERMINAL, JobStore, age_s, now
from .tenancy import no_object, owner_of, owns_upload, sees_all, tenant_of, upload_name

__all__ = ["JobRunner"]

log = logging.getLogger("semforge.jobs")

_PER_IMAGE = ("load", "segment", "measure", "classify")


class FairQueue:
    """Job ids queued per tenant, served round robin: a tenant with 20 queued jobs delays another tenant's
    single job by at most one job per worker, not by its 20."""

    def __init__(self):
        self._queues: dict[str, collections.deque] = {}
        self._order: collections.deque = collections.deque()  # tenants with queued jobs, next first
        self._cond = threading.Condition()

    def put(self, job_id: str, tenant: str = "") -> None:
        with self._cond:
            q = self._queues.get(tenant)
            if q is None:
                q = self._queues[tenant] = collections.deque()
                self._order.append(tenant)
            q.append(job_id)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> str:
        with self._cond:
            if not self._order and not self._cond.wait_for(lambda: bool(self._order), timeout):
                raise queue.Empty
            tenant = self._order.popleft()
            q = self._queues[tenant]
            job_id = q.popleft()
            if q:
                self._order.append(tenant)  # back of the line
            else:
                del self._queues[tenant]
            return job_id

    def qsize(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())


class _Stopping(Exception):
    """The runner is closing: leave the job as it is for another replica to resume."""


def _pb():
    from semforge.common.v1 import common_pb2

    return common_pb2


class JobRunner:
    """Analysis jobs over an object store.

    Parameters
    ----------
    store : ObjectStore
        Holds the job records (shared by every replica).
    stages_for : callable
        ``stages_for(job)`` -> the :class:`~semforge.pipeline.Stages` that run a job (their handles must be
        ``ObjectRef`` messages: per-image results are kept in the job record).
    options_of : callable
        ``options_of(job.options)`` -> validated :class:`~semforge.pipeline.AnalysisOptions`.
    name_of : callable
        ``name_of(ref)`` -> the image's upload name ("" if unknown), for requests without names.
    transient : callable
        ``transient(exc)`` -> True when a stage failed because a service is unavailable (retried).
    describe : callable
        ``describe(exc)`` -> the job message for an exception the library does not know (or None).
    missing : callable
        ``missing(exc)`` -> True when a stage failed because an object it reads is not (or no longer) stored;
        if the image itself is still stored, the image is redone (an intermediate result was lost).
    max_active_per_tenant : int
        Admission control (``MAX_ACTIVE_JOBS_PER_TENANT``): a tenant with this many jobs queued or running gets
        :class:`~semforge.errors.Busy` (RESOURCE_EXHAUSTED, retry after ``busy_retry_s``) for a new one; other
        tenants are still admitted. 0 = no limit.
    """

    def __init__(self, store: ObjectStore, stages_for: Callable[[Any], Stages], *,
                 options_of: Callable[[Any], AnalysisOptions], name_of: Callable[[Any], str] = lambda ref: "",
                 transient: Callable[[BaseException], bool] = lambda exc: False,
                 describe: Callable[[BaseException], str | None] = lambda exc: None,
                 workers: int = 2, resume_after_s: float = 60.0, retry_s: float = 300.0,
                 retention_days: float = 0.0, retention_max_jobs: int = 0, retention_every_s: float = 600.0,
                 missing: Callable[[BaseException], bool] = lambda exc: False,
                 max_active_per_tenant: int = 0, busy_retry_s: float = 5.0):
        self.store = store
        self.jobs = JobStore(store)
        self.events = EventHub(self.jobs)
        self.stages_for, self.options_of, self.name_of = stages_for, options_of, name_of
        self.transient, self.describe, self.missing = transient, describe, missing
        self.n_workers, self.resume_after_s, self.retry_s = workers, resume_after_s, retry_s
        self.retention_days, self.retention_max_jobs = retention_days, retention_max_jobs
        self.retention_every_s = retention_every_s
        self.max_active_per_tenant, self.busy_retry_s = max_active_per_tenant, busy_retry_s
        self._admit = threading.Lock()  # count + create, atomic on this replica
        self.replica = uuid.uuid4().hex[:8]
        self._queue = FairQueue()
        self._indexed = False
        self._leases: dict[str, set] = {}  # job id -> resume leases when this replica started running it
        self._mine: set[str] = set()  # queued or running here (kept alive by the heartbeat)
        self._produced: dict[str, set] = {}  # job id -> blob keys its stages returned (recorded at its end)
        self._cancelled_here: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "JobRunner":
        if self._threads:
            return self
        try:
            self.jobs.ensure_index()
            refs.ensure_refs(self.store)
            self._indexed = True
        except Exception:  # noqa: BLE001 - the store may be down now; the resume scan indexes them
            log.exception("indexing older job records failed")
        for i in range(self.n_workers):
            self._threads.append(threading.Thread(target=self._worker, name=f"jobs-{i}", daemon=True))
        self._threads.append(threading.Thread(target=self._resumer, name="jobs-resume", daemon=True))
        self._threads.append(threading.Thread(target=self._heartbeat, name="jobs-heartbeat", daemon=True))
        if self.retention_days > 0 or self.retention_max_jobs > 0:
            self._threads.append(threading.Thread(target=self._retention, name="jobs-retention", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop: :meth:`release`, then wait up to ``timeout`` for the threads."""
        self.release()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def release(self) -> None:
        """Stop taking work (SIGTERM), at once: every job queued or running here is released, so another
        replica resumes it on its next scan (about a second) instead of after ``resume_after_s``; a running
        job stops at its next stage and this replica writes nothing more to it. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            mine = list(self._mine)
        for job_id in mine:
            try:
                self.jobs.release(job_id, self.replica)
            except Exception:  # noqa: BLE001 - store down: the resume timer still covers it
                log.warning("could not release job %s; another replica resumes it after %.0f s", job_id,
                            self.resume_after_s, extra={"job_id": job_id})
        if mine:
            log.info("released %d job(s) to the other replicas", len(mine))

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # -- requests ---------------------------------------------------------------------------
    def create(self, images, names, options, sample: str = "", identity=None):
        """Validate a request, save the job record (QUEUED, owned by the caller's tenant) and queue it here.
        Every image must be an upload of that tenant (a facility admin: any stored object)."""
        tenant = tenant_of(identity)
        if not images:
            raise UserInputError("no images given: upload images first and pass their references", field="images")
        self.options_of(options)  # validates modality, separation, pixel size, data bar
        if names and len(names) != len(images):
            raise UserInputError(f"{len(names)} names for {len(images)} images", field="names")
        job_id = uuid.uuid4().hex
        pinned: list[str] = []
        try:
            return self._create(job_id, pinned, images, names, options, sample, identity, tenant)
        except BaseException:  # refused: the reference records this request wrote go too
            for key in pinned:
                refs.remove(self.store, key, tenant, job_id)
            raise

    def _create(self, job_id, pinned, images, names, options, sample, identity, tenant):
        chosen = []
        for i, ref in enumerate(images):
            if not ref.key:
                raise UserInputError(f"image {i}: empty object reference", field=f"images[{i}].key")
            validate_key(ref.key)
            if not owns_upload(self.store, identity, ref.key):
                raise ObjectNotFound(f"image {i}: {no_object(ref.key)}")
            pinned.append(ref.key)  # the reference first, then the check: a concurrent DeleteJob keeps the blob
            if not refs.add(self.store, ref.key, tenant, job_id):
                raise ObjectNotFound(f"image {i}: {no_object(ref.key)}")
            given = names[i] if names else ""
            name = (given or upload_name(self.store, tenant, ref.key)
                    or (self.name_of(ref) if sees_all(identity) else "") or f"image{i + 1}")
            name = Path(name).name
            name = name.rsplit(".", 1)[0] if "." in name else name
            if not given:  # a stored file name (spaces, accents): as a key segment
                name = key_segment(name)
            validate_key(name)
            if name in chosen:
                name = f"{name}_{i + 1}"
            chosen.append(name)
        unique_names(chosen)
        pb = _pb()
        job = pb.Job(job_id=job_id, state=pb.JOB_STATE_QUEUED, created_at=now(),
                     images_total=len(images), sample=sample or "sample", tenant=tenant, owner=owner_of(identity))
        job.inputs.extend(images)
        job.input_names.extend(chosen)
        job.options.CopyFrom(options)
        with self._admit:
            self._admission(tenant)
            self.jobs.create(job)
        pinned.clear()  # the job holds them now
        self.events.open(job.job_id)
        self.events.emit(job, -1, "", "queued", 0.0, "queued")
        self._enqueue(job.job_id, tenant)
        return job

    def _admission(self, tenant: str) -> None:
        """Refuse a new job of a tenant already at its limit of queued/running jobs. Exact on one replica (the
        caller holds ``_admit``); with several replicas, submissions racing on different replicas can each be
        admitted at the limit (over by at most one per replica), never refused below it."""
        limit = self.max_active_per_tenant
        if limit <= 0:
            return
        n = self.jobs.active_count(tenant, limit)
        if n >= limit:
            raise Busy(f"tenant {tenant!r} already has {n} jobs queued or running, its limit "
                       f"(MAX_ACTIVE_JOBS_PER_TENANT={limit}); retry in {self.busy_retry_s:g} s, when one has "
                       "finished", retry_after_ms=int(self.busy_retry_s * 1000))

    def get(self, job_id: str, identity=None):
        return self.jobs.get(job_id, identity)

    def delete(self, job_id: str, identity=None) -> int:
        """Remove a finished job the caller may see; returns the number of objects removed."""
        return self.jobs.delete(job_id, identity)

    def cancel(self, job_id: str, identity=None):
        self.jobs.get(job_id, identity, raw=True)
        job = self.jobs.request_cancel(job_id)
        with self._lock:
            if job_id in self._mine:
                self._cancelled_here.add(job_id)
        return job

    def _enqueue(self, job_id: str, tenant: str = "") -> None:
        with self._lock:
            self._mine.add(job_id)
        self.events.open(job_id)
        self._queue.put(job_id, tenant)

    # -- threads ----------------------------------------------------------------------------
    def _worker(self) -> None:
        while not self._stopping.is_set():
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.run(job_id)
            except Exception:  # noqa: BLE001 - a job failure must never kill the worker
                log.exception("job %s crashed", job_id)
            finally:
                with self._lock:
                    self._mine.discard(job_id)
                    self._cancelled_here.discard(job_id)
                    self._leases.pop(job_id, None)
                    self._produced.pop(job_id, None)
                self.events.close(job_id)

    def _heartbeat(self) -> None:
        while not self._stopping.wait(max(0.5, self.resume_after_s / 4)):
            with self._lock:
                ids = list(self._mine)
            for job_id in ids:
                try:
                    self.jobs.heartbeat(job_id)
                except StorageUnavailable:
                    pass
                except Exception:  # noqa: BLE001
                    log.exception("heartbeat of job %s failed", job_id)

    def _resumer(self) -> None:
        every = max(1.0, self.resume_after_s / 4)
        last_full = time.monotonic()
        while not self._stopping.wait(1.0):
            full = time.monotonic() - last_full >= every
            try:
                self.resume_stale(released_only=not full)
            except StorageUnavailable:
                continue
            except Exception:  # noqa: BLE001
                log.exception("resume scan failed")
            if full:
                last_full = time.monotonic()

    def _retention(self) -> None:
        while not self._stopping.wait(self.retention_every_s):
            try:
                self.apply_retention()
            except StorageUnavailable:
                continue
            except Exception:  # noqa: BLE001
                log.exception("retention pass failed")

    def apply_retention(self) -> list[str]:
        """Delete finished jobs beyond the retention policy (``retention_days``, ``retention_max_jobs``)."""
        gone = self.jobs.apply_retention(max_age_days=self.retention_days, max_per_tenant=self.retention_max_jobs)
        if gone:
            log.info("retention removed %d finished job(s)", len(gone))
        return gone

    def resume_stale(self, *, released_only: bool = False) -> list[str]:
        """Take over unfinished jobs whose replica went silent or released them (stopped); returns the ids this
        replica took. Reads only the ``active/`` and ``released/`` markers, never the whole job history."""
        if not self._indexed:
            self.jobs.ensure_index()  # records older than the index (once per store)
            refs.ensure_refs(self.store)
            self._indexed = True
        taken = []
        released = set(self.jobs.released_ids())
        for job_id in sorted(released) if released_only else self.jobs.active_ids():
            with self._lock:
                if job_id in self._mine:
                    continue
            try:
                job = self.jobs.load(job_id, raw=True)
            except (ObjectNotFound, UserInputError):
                continue
            if job.state in TERMINAL:
                self.jobs.finished(job_id, job.tenant)
                continue
            if job_id not in released and age_s(self.jobs.last_alive(job)) < self.resume_after_s:
                continue
            if not self.jobs.take_resume_lease(job, self.replica):
                continue  # another replica won this state
            self.jobs.unrelease(job_id)
            log.info("resuming %s job %s", "released" if job_id in released else "stale", job_id,
                     extra={"job_id": job_id})
            taken.append(job_id)
            self._enqueue(job_id, job.tenant)
        return taken

    # -- one job ----------------------------------------------------------------------------
    def _check(self, job) -> None:
        if self._stopping.is_set():
            raise _Stopping()
        with self._lock:
            here = job.job_id in self._cancelled_here
        if here:
            raise Cancelled()
        try:
            requested = self.jobs.cancel_requested(job.job_id)
        except StorageUnavailable:  # the store is away: cannot tell now, the next check will (never fail the job)
            requested = False
        if requested:
            raise Cancelled()
        if self._taken_over(job.job_id):
            log.warning("job %s was resumed by another replica (this one looked dead, e.g. during a store outage); "
                        "leaving it to that replica", job.job_id, extra={"job_id": job.job_id})
            raise _Stopping()

    def _taken_over(self, job_id: str) -> bool:
        """Another replica took a resume lease after this one started running the job."""
        with self._lock:
            seen = self._leases.get(job_id)
        if seen is None:
            return False
        try:
            return bool(self.jobs.leases(job_id) - seen)
        except StorageUnavailable:
            return False

    def _retry(self, job, what: str, call: Callable[[], Any], fraction: float = 0.0) -> Any:
        """``call()``; while it fails transiently (store or service unavailable), wait and retry up to retry_s.
        With a ``job``: a ``waiting`` event once, and the cancel check between tries."""
        deadline = time.monotonic() + self.retry_s
        delay, warned = 0.2, False
        while True:
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - filtered just below
                if not (isinstance(exc, StorageUnavailable) or self.transient(exc)) or time.monotonic() > deadline:
                    raise
                if job is None and self._stopping.is_set():
                    raise
                if job is not None and not warned:
                    self.events.emit(job, -1, "", "waiting", fraction, f"{what}: {self.describe(exc) or exc}; retrying")
                    warned = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            if job is not None:
                self._check(job)

    def _save(self, job) -> None:
        self._retry(job, "save job", lambda: self.jobs.save(job))

    def run(self, job_id: str) -> None:
        """Run (or resume) a job to its end on this thread."""
        pb = _pb()
        job = self._retry(None, "read job", lambda: self.jobs.load(job_id, raw=True))
        if job.state in TERMINAL:
            self.jobs.finished(job_id, job.tenant)
            return
        leases = self._retry(None, "read leases", lambda: self.jobs.leases(job_id))
        with self._lock:
            self._leases[job_id] = leases
        try:
            self._check(job)
            job.state = pb.JOB_STATE_RUNNING
            self._save(job)
            self._execute(job)
            job.state = pb.JOB_STATE_SUCCEEDED
            job.message = f"{len(job.inputs)} image(s) analysed"
        except _Stopping:
            return  # left RUNNING: its heartbeat stops, another replica (or this one restarted) resumes it
        except Cancelled:
            job.state, job.message = pb.JOB_STATE_CANCELLED, CANCEL_MESSAGE
        except (UserInputError, ImageDecodeError, ObjectNotFound) as exc:
            job.state, job.message = pb.JOB_STATE_FAILED, str(exc)
        except StorageUnavailable as exc:
            job.state = pb.JOB_STATE_FAILED
            job.message = f"object store unavailable for longer than {self.retry_s:.0f} s: {exc}"
        except Exception as exc:  # noqa: BLE001
            described = self.describe(exc)
            if described is None:
                log.exception("job %s failed", job.job_id, extra={"job_id": job.job_id})
            job.state = pb.JOB_STATE_FAILED
            job.message = described or f"internal error: {type(exc).__name__}"
        try:
            with self._lock:
                produced = self._produced.pop(job.job_id, set())
            # before the final state: once it is saved the job can be deleted, and deleting frees these
            self._retry(None, "record blobs", lambda: refs.record_job_blobs(self.store, job, produced))
        except Exception:  # noqa: BLE001 - a leak at worst, never a failed job
            log.exception("could not record the blobs of job %s", job.job_id)
        try:
            self._retry(None, "save job", lambda: self.jobs.save(job))
            self.jobs.finished(job.job_id, job.tenant)
        except Exception:  # noqa: BLE001
            log.exception("could not save the final state of job %s", job.job_id)
        self.events.emit(job, len(job.inputs) - 1, "", "done", 1.0, job.message)

    def _intact(self, ref) -> bool:
        """The stored object of ``ref`` is there with its recorded size (a store that lost writes in an outage
        can leave 0-byte or missing objects; the full sha256 check happens when a service reads it)."""
        try:
            size = self._retry(None, "stat", lambda: self.store.stat(ref.key).size)
        except ObjectNotFound:
            return False
        return not ref.size_bytes or size == ref.size_bytes

    def _verified(self, ref) -> bool:
        """Read the object back whole: content-addressed objects are checked against their sha256 (and removed
        when corrupt)."""
        try:
            self._retry(None, "verify", lambda: sum(len(b) for b in self.store.iter_chunks(ref.key)))
            return True
        except ObjectNotFound:
            return False

    def _lost_result(self, exc: BaseException, ref) -> bool:
        """A stage failed with NOT_FOUND while the image itself is still stored: an intermediate result (mask,
        labels, table) was lost or found corrupt (and removed): redoing the image regenerates it."""
        return (isinstance(exc, ObjectNotFound) or self.missing(exc)) and self._intact(ref)

    def _execute(self, job) -> None:
        options = self.options_of(job.options)
        stages = self.stages_for(job)
        with self._lock:
            produced = self._produced.setdefault(job.job_id, set())
        n = len(job.inputs)
        span = 0.95 / max(n, 1)  # per-image share of the progress (the report takes the last 5 %)

        def one(i, ref, name):
            def around(stage, call):
                frac = i * span + _PER_IMAGE.index(stage) * span / len(_PER_IMAGE)
                self._check(job)
                self.events.emit(job, i, name, stage, frac, _MESSAGES[stage])
                out = self._retry(job, stage, call, frac)
                produced.update(_blob_keys(out))  # masks, tables, label images: freed with the job
                return out

            for attempt in range(3):
                try:
                    out = analyze_image(stages, ref, name, options, around=around)
                    break
                except Exception as exc:  # noqa: BLE001 - filtered just below
                    if attempt == 2 or not self._lost_result(exc, ref):
                        raise
                    log.warning("job %s, image %s: an intermediate result was lost (%s); redoing the image",
                                job.job_id, name, exc, extra={"job_id": job.job_id})
                    self.events.emit(job, i, name, "redo", i * span, "an intermediate result was lost; redoing")
            job.outputs[f"_state/{name}/particles.json"].CopyFrom(out.measured.table)
            job.outputs[f"_state/{name}/labels.tif"].CopyFrom(out.measured.labels)
            return out

        outcomes = []
        for i, (ref, name) in enumerate(zip(job.inputs, job.input_names)):
            done = job.outputs.get(f"_state/{name}/particles.json")
            labels = job.outputs.get(f"_state/{name}/labels.tif")
            if done is not None and labels is not None and self._intact(done) and self._intact(labels):
                prep = Prepared(name=name, calibration=Calibration(None, "none"), specimen_rows=0, height=0,
                                width=0, image=ref)
                outcomes.append(ImageOutcome(prep, Measured(done, labels, 0, 0)))  # finished before a restart
                continue
            out = one(i, ref, name)
            job.images_done = max(job.images_done, i + 1)
            self._check(job)
            self._save(job)
            self.events.emit(job, i, name, "image_done", (i + 1) * span,
                             f"{out.measured.included} of {out.measured.count} particles measured")
            outcomes.append(out)
        def redo_lost(check) -> None:
            """Redo the images whose stored results ``check`` finds lost (a store outage that dropped writes)."""
            for k, out in enumerate(outcomes):
                m = out.measured
                if not (check(m.table) and check(m.labels)):
                    ref, name = job.inputs[k], job.input_names[k]
                    log.warning("job %s, image %s: its stored results were lost; redoing the image", job.job_id,
                                name, extra={"job_id": job.job_id})
                    outcomes[k] = one(k, ref, name)
                    self._check(job)
                    self._save(job)

        redo_lost(self._intact)
        job.images_done = n
        self._check(job)
        self.events.emit(job, n - 1, "", "report", 0.95, "writing the sample report")
        warned: set = set()

        def warn(w):  # plausibility warnings into the progress stream (#13); once each, even over retries
            if w not in warned:
                warned.add(w)
                self.events.emit(job, n - 1, w.image, "warning", 0.95, str(w), warning=w)

        for attempt in range(3):
            try:
                outputs = self._retry(job, "report", lambda: stages.report(
                    outcomes, options, title=f"semforge report: {job.sample}", warn=warn), 0.95)
                break
            except Exception as exc:  # noqa: BLE001 - filtered just below
                if attempt == 2 or not self._lost_result(exc, job.inputs[0]):
                    raise
                redo_lost(self._verified)  # read back and check every result (a corrupt one is removed)
        for k, v in outputs.items():
            job.outputs[k].CopyFrom(v)


def _blob_keys(out) -> list[str]:
    """The object keys a stage returned (an ObjectRef, the mask and probability map of a Segmented, or the refs
    of a Measured)."""
    keys = []
    for x in (out, getattr(out, "mask", None), getattr(out, "probability", None), getattr(out, "table", None),
              getattr(out, "labels", None)):
        k = getattr(x, "key", None)
        if isinstance(k, str) and k:
            keys.append(k)
    return keys


_MESSAGES = {"load": "reading calibration and data bar", "segment": "segmenting",
             "measure": "separating and measuring particles", "classify": "classifying shapes"}
