"""Runs analysis jobs on the pipeline's stages: queue, progress, cancel, retry, resume after a replica died.

The runner owns everything around the stages (they stay pure): the cancel check
and the progress event before each stage, retrying a stage while the store or a
service is unavailable, saving per-image results so a resumed job skips finished
images, the heartbeat that keeps a live job from looking stale, and the resume
scan that takes a create-only lease so one replica resumes a stale job.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ..analysis import Calibration, ImageDecodeError
from ..errors import Cancelled, UserInputError
from ..pipeline import AnalysisOptions, ImageOutcome, Measured, Prepared, Stages, analyze_image, unique_names
from ..storage import ObjectNotFound, ObjectStore, StorageUnavailable, validate_key
from .events import EventHub
from .records import CANCEL_MESSAGE, TERMINAL, JobStore, age_s, now

__all__ = ["JobRunner"]

log = logging.getLogger("semforge.jobs")

_PER_IMAGE = ("load", "segment", "measure", "classify")


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
    """

    def __init__(self, store: ObjectStore, stages_for: Callable[[Any], Stages], *,
                 options_of: Callable[[Any], AnalysisOptions], name_of: Callable[[Any], str] = lambda ref: "",
                 transient: Callable[[BaseException], bool] = lambda exc: False,
                 describe: Callable[[BaseException], str | None] = lambda exc: None,
                 workers: int = 2, resume_after_s: float = 60.0, retry_s: float = 300.0):
        self.store = store
        self.jobs = JobStore(store)
        self.events = EventHub(self.jobs)
        self.stages_for, self.options_of, self.name_of = stages_for, options_of, name_of
        self.transient, self.describe = transient, describe
        self.n_workers, self.resume_after_s, self.retry_s = workers, resume_after_s, retry_s
        self.replica = uuid.uuid4().hex[:8]
        self._queue: queue.Queue = queue.Queue()
        self._mine: set[str] = set()  # queued or running here (kept alive by the heartbeat)
        self._cancelled_here: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "JobRunner":
        if self._threads:
            return self
        for i in range(self.n_workers):
            self._threads.append(threading.Thread(target=self._worker, name=f"jobs-{i}", daemon=True))
        self._threads.append(threading.Thread(target=self._resumer, name="jobs-resume", daemon=True))
        self._threads.append(threading.Thread(target=self._heartbeat, name="jobs-heartbeat", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; a running job stops at its next stage and stays resumable."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # -- requests ---------------------------------------------------------------------------
    def create(self, images, names, options, sample: str = ""):
        """Validate a request, save the job record (QUEUED) and queue it here."""
        if not images:
            raise UserInputError("no images given: upload images first and pass their references", field="images")
        self.options_of(options)  # validates modality, separation, pixel size, data bar
        if names and len(names) != len(images):
            raise UserInputError(f"{len(names)} names for {len(images)} images", field="names")
        chosen = []
        for i, ref in enumerate(images):
            if not ref.key:
                raise UserInputError(f"image {i}: empty object reference", field=f"images[{i}].key")
            validate_key(ref.key)
            if not self.store.exists(ref.key):
                raise ObjectNotFound(f"image {i}: no object {ref.key!r}; upload it first")
            name = (names[i] if names else "") or self.name_of(ref) or f"image{i + 1}"
            name = Path(name).name
            name = name.rsplit(".", 1)[0] if "." in name else name
            validate_key(name)
            if name in chosen:
                name = f"{name}_{i + 1}"
            chosen.append(name)
        unique_names(chosen)
        pb = _pb()
        job = pb.Job(job_id=uuid.uuid4().hex, state=pb.JOB_STATE_QUEUED, created_at=now(),
                     images_total=len(images), sample=sample or "sample")
        job.inputs.extend(images)
        job.input_names.extend(chosen)
        job.options.CopyFrom(options)
        self.jobs.save(job)
        self.events.open(job.job_id)
        self.events.emit(job, -1, "", "queued", 0.0, "queued")
        self._enqueue(job.job_id)
        return job

    def cancel(self, job_id: str):
        job = self.jobs.request_cancel(job_id)
        with self._lock:
            if job_id in self._mine:
                self._cancelled_here.add(job_id)
        return job

    def _enqueue(self, job_id: str) -> None:
        with self._lock:
            self._mine.add(job_id)
        self.events.open(job_id)
        self._queue.put(job_id)

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
        while not self._stopping.wait(max(1.0, self.resume_after_s / 4)):
            try:
                self.resume_stale()
            except StorageUnavailable:
                continue
            except Exception:  # noqa: BLE001
                log.exception("resume scan failed")

    def resume_stale(self) -> list[str]:
        """Take over unfinished jobs whose replica went silent; returns the ids this replica took."""
        taken = []
        for key in self.store.list("jobs/"):
            if not key.endswith("/job.json"):
                continue
            job_id = key.split("/")[1]
            with self._lock:
                if job_id in self._mine:
                    continue
            try:
                job = self.jobs.load(job_id, raw=True)
            except (ObjectNotFound, UserInputError):
                continue
            if job.state in TERMINAL or age_s(self.jobs.last_alive(job)) < self.resume_after_s:
                continue
            if not self.jobs.take_resume_lease(job, self.replica):
                continue  # another replica won this state
            log.info("resuming stale job %s", job_id, extra={"job_id": job_id})
            taken.append(job_id)
            self._enqueue(job_id)
        return taken

    # -- one job ----------------------------------------------------------------------------
    def _check(self, job) -> None:
        if self._stopping.is_set():
            raise _Stopping()
        with self._lock:
            here = job.job_id in self._cancelled_here
        if here or self.jobs.cancel_requested(job.job_id):
            raise Cancelled()

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
            return
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
            self._retry(None, "save job", lambda: self.jobs.save(job))
        except Exception:  # noqa: BLE001
            log.exception("could not save the final state of job %s", job.job_id)
        self.events.emit(job, len(job.inputs) - 1, "", "done", 1.0, job.message)

    def _execute(self, job) -> None:
        options = self.options_of(job.options)
        stages = self.stages_for(job)
        n = len(job.inputs)
        span = 0.95 / n  # per-image share of the progress (the report takes the last 5 %)
        outcomes = []
        for i, (ref, name) in enumerate(zip(job.inputs, job.input_names)):
            done = job.outputs.get(f"_state/{name}/particles.json")
            if done is not None:  # finished before a restart
                prep = Prepared(name=name, calibration=Calibration(None, "none"), specimen_rows=0, height=0,
                                width=0, image=ref)
                outcomes.append(ImageOutcome(prep, Measured(done, job.outputs[f"_state/{name}/labels.tif"], 0, 0)))
                continue

            def around(stage, call, i=i, name=name):
                frac = i * span + _PER_IMAGE.index(stage) * span / len(_PER_IMAGE)
                self._check(job)
                self.events.emit(job, i, name, stage, frac, _MESSAGES[stage])
                return self._retry(job, stage, call, frac)

            out = analyze_image(stages, ref, name, options, around=around)
            job.outputs[f"_state/{name}/particles.json"].CopyFrom(out.measured.table)
            job.outputs[f"_state/{name}/labels.tif"].CopyFrom(out.measured.labels)
            job.images_done = i + 1
            self._check(job)
            self._save(job)
            self.events.emit(job, i, name, "image_done", (i + 1) * span,
                             f"{out.measured.included} of {out.measured.count} particles measured")
            outcomes.append(out)
        job.images_done = n
        self._check(job)
        self.events.emit(job, n - 1, "", "report", 0.95, "writing the sample report")
        warned: set = set()

        def warn(w):  # plausibility warnings into the progress stream (#13); once each, even over retries
            if w not in warned:
                warned.add(w)
                self.events.emit(job, n - 1, w.image, "warning", 0.95, str(w), warning=w)

        outputs = self._retry(job, "report", lambda: stages.report(outcomes, options,
                                                                    title=f"semforge report: {job.sample}",
                                                                    warn=warn), 0.95)
        for k, v in outputs.items():
            job.outputs[k].CopyFrom(v)


_MESSAGES = {"load": "reading calibration and data bar", "segment": "segmenting",
             "measure": "separating and measuring particles", "classify": "classifying shapes"}
