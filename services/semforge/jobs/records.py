"""Job records in the object store, shared by every replica.

``jobs/<id>/job.json``  the record (``semforge.common.v1.Job`` as JSON), written by the replica running it;
``jobs/<id>/cancel``    cancel marker: created by any replica's CancelJob. It wins over the record: a
                        job with a marker reads as CANCELLED and its runner stops at the next stage;
``jobs/<id>/heartbeat`` the running replica's last sign of life (written while it works on the job);
``jobs/<id>/lease/<t>`` resume lease, created only-if-absent: of the replicas that find a job stale in
                        the same state ``t``, exactly one resumes it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib

from google.protobuf import json_format

from ..errors import NotFound, UserInputError
from ..storage import InvalidKey, ObjectNotFound, ObjectStore, validate_key

__all__ = ["JobStore", "TERMINAL", "now", "age_s"]


def _state():
    from semforge.common.v1 import common_pb2

    return common_pb2


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def age_s(ts: str) -> float:
    try:
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(ts)).total_seconds()
    except (TypeError, ValueError):
        return 1e9


def _terminal():
    S = _state().JobState
    return (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)


TERMINAL = _terminal()
CANCEL_MESSAGE = "cancelled by request"


class JobStore:
    """Load, save, list, cancel and lease job records."""

    def __init__(self, store: ObjectStore):
        self.store = store

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def _dir(job_id: str) -> str:
        try:
            return f"jobs/{validate_key(job_id)}"
        except InvalidKey:
            raise NotFound(f"no job {job_id!r}", field="job_id") from None

    def record_key(self, job_id: str) -> str:
        return f"{self._dir(job_id)}/job.json"

    # -- records ----------------------------------------------------------------------------
    def save(self, job) -> None:
        job.updated_at = now()
        self.store.put_bytes(self.record_key(job.job_id), json_format.MessageToJson(job).encode())

    def load(self, job_id: str, *, raw: bool = False):
        """The record; a job with a cancel marker reads as CANCELLED (unless ``raw``)."""
        if not job_id:
            raise UserInputError("job_id is empty", field="job_id")
        try:
            data = self.store.get_bytes(self.record_key(job_id))
        except ObjectNotFound:
            raise NotFound(f"no job {job_id!r}; list jobs with ListJobs", field="job_id") from None
        job = json_format.Parse(data, _state().Job())
        if not raw:
            self._overlay_cancel(job)
        return job

    def list(self, limit: int = 100) -> list:
        jobs = []
        for k in self.store.list("jobs/"):
            if not k.endswith("/job.json"):
                continue
            try:
                job = json_format.Parse(self.store.get_bytes(k), _state().Job())
            except (ObjectNotFound, json_format.ParseError):
                continue
            self._overlay_cancel(job)
            jobs.append(job)
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs[: limit or 100]

    # -- cancel -----------------------------------------------------------------------------
    def cancel_requested(self, job_id: str) -> bool:
        return self.store.exists(f"{self._dir(job_id)}/cancel")

    def request_cancel(self, job_id: str):
        """Mark a job cancelled (any replica); the runner stops at its next stage. Idempotent."""
        job = self.load(job_id, raw=True)
        if job.state in TERMINAL:
            return job
        self.store.put_bytes(f"{self._dir(job_id)}/cancel", now().encode())
        job.state = _state().JOB_STATE_CANCELLED
        job.message = CANCEL_MESSAGE
        return job

    def _overlay_cancel(self, job) -> None:
        if job.state not in TERMINAL and self.cancel_requested(job.job_id):
            job.state = _state().JOB_STATE_CANCELLED
            job.message = CANCEL_MESSAGE

    # -- liveness and resume ----------------------------------------------------------------
    def heartbeat(self, job_id: str) -> None:
        self.store.put_bytes(f"{self._dir(job_id)}/heartbeat", now().encode())

    def last_alive(self, job) -> str:
        """The later of the record's update time and the runner's heartbeat."""
        try:
            beat = self.store.get_bytes(f"{self._dir(job.job_id)}/heartbeat").decode()
        except ObjectNotFound:
            return job.updated_at
        return max(job.updated_at, beat, key=lambda ts: -age_s(ts))

    def take_resume_lease(self, job, replica: str) -> bool:
        """Create-only lease on the stale state the caller saw: exactly one caller per state gets True."""
        token = hashlib.sha256(f"{job.updated_at}|{self.last_alive(job)}".encode()).hexdigest()[:24]
        return self.store.put_if_absent(f"{self._dir(job.job_id)}/lease/{token}", replica.encode())
