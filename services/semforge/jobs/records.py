"""Job records in the object store, shared by every replica.

``jobs/<id>/job.json``  the record (``semforge.common.v1.Job`` as JSON), written by the replica running it;
``jobs/<id>/cancel``    cancel marker: created by any replica's CancelJob. It wins over the record: a
                        job with a marker reads as CANCELLED and its runner stops at the next stage;
``jobs/<id>/heartbeat`` the running replica's last sign of life (written while it works on the job);
``jobs/<id>/lease/<t>`` resume lease, created only-if-absent: of the replicas that find a job stale in
                        the same state ``t``, exactly one resumes it.
``index/<tenant>/<r>-<id>`` and ``index/_all/<r>-<id>``  the listing index (#15): one empty object per job,
                        ``r`` = 10^13-1 minus its creation time in ms, so the keys sort newest first and a page
                        is one ``list_after`` (its cost does not grow with the number of stored jobs). Written
                        before the record, removed after it; entries without a record are skipped.
``active/<id>``         the job is not finished (the resume scan reads only these).
``busy/<tenant>/<id>``  the same, per tenant: admission control counts a tenant's queued/running jobs with one
                        bounded listing (``MAX_ACTIVE_JOBS_PER_TENANT``).
``released/<id>``       a replica that stopped (SIGTERM) gave the job up: resumable at once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import time

from google.protobuf import json_format

from ..errors import NotFound, UserInputError
from ..storage import InvalidKey, ObjectNotFound, ObjectStore, StorageUnavailable, validate_key

from .tenancy import ALL, check_job, sees_all, tenant_of, tenant_segment

__all__ = ["JobStore", "TERMINAL", "now", "age_s", "MAX_PAGE"]

MAX_PAGE = 1000
_REV = 10**13 - 1
_TORN_READS = 5  # reads of a job record that does not parse before it counts as unavailable
_TOKEN = re.compile(r"\d{13}-[A-Za-z0-9._\-]{1,128}")


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
        key = self.record_key(job_id)
        for attempt in range(_TORN_READS):
            try:
                data = self.store.get_bytes(key)
            except ObjectNotFound:
                raise NotFound(f"no job {job_id!r}; list jobs with ListJobs", field="job_id") from None
            try:
                job = json_format.Parse(data, _state().Job())
                break
            except json_format.ParseError:
                # a store whose overwrite is not atomic (seen with the S3 test server) can serve a record
                # while it is being rewritten: read again; still unreadable -> UNAVAILABLE (retryable), never
                # INTERNAL
                if attempt == _TORN_READS - 1:
                    raise StorageUnavailable(f"the record of job {job_id} could not be read ({len(data)} bytes, "
                                             "not a complete record); try again") from None
                time.sleep(0.05 * (attempt + 1))
        if not raw:
            self._overlay_cancel(job)
        return job

    def get(self, job_id: str, viewer=None, *, raw: bool = False):
        """The record if ``viewer`` may see it; a foreign job reads exactly like an unknown id (NOT_FOUND)."""
        return check_job(viewer, self.load(job_id, raw=raw), job_id)

    # -- index ------------------------------------------------------------------------------
    @staticmethod
    def index_name(job) -> str:
        try:
            ms = int(_dt.datetime.fromisoformat(job.created_at).timestamp() * 1000)
        except (TypeError, ValueError):
            ms = 0
        return f"{_REV - max(0, min(ms, _REV)):013d}-{job.job_id}"

    def index_keys(self, job) -> list[str]:
        name = self.index_name(job)
        return [f"index/{tenant_segment(job.tenant)}/{name}", f"index/{ALL}/{name}"]

    def create(self, job) -> None:
        """Save a new job: its index entries and active marker first, then the record."""
        for k in self.index_keys(job):
            self.store.put_bytes(k, b"")
        self.store.put_bytes(f"active/{validate_key(job.job_id)}", b"")
        self.store.put_bytes(self._busy_key(job.tenant, job.job_id), b"")
        self.save(job)

    @staticmethod
    def _busy_key(tenant: str, job_id: str) -> str:
        return f"busy/{tenant_segment(tenant)}/{job_id}"

    def finished(self, job_id: str, tenant: str | None = None) -> None:
        """The job reached a final state: off the resume scan (and, ``tenant`` given, off its tenant's count)."""
        self.store.delete(f"active/{job_id}")
        self.store.delete(f"released/{job_id}")
        if tenant is not None:
            self.store.delete(self._busy_key(tenant, job_id))

    def active_count(self, tenant: str, limit: int) -> int:
        """The tenant's unfinished jobs, counted up to ``limit`` (one listing of at most ``limit`` keys). At the
        limit, entries whose job is no longer active (a replica died between the final save and the clean-up)
        are dropped and not counted."""
        prefix = f"busy/{tenant_segment(tenant)}/"
        keys = self.store.list_after(prefix, "", limit)
        if len(keys) < limit:
            return len(keys)
        n = 0
        for k in keys:
            if self.store.exists(f"active/{k[len(prefix):]}"):
                n += 1
            else:
                self.store.delete(k)
        return n

    def active_ids(self) -> list[str]:
        return [k.split("/", 1)[1] for k in self.store.list_after("active/")]

    def release(self, job_id: str, replica: str) -> None:
        """This replica stops: another may resume the job now instead of after the resume timer."""
        self.store.put_bytes(f"released/{job_id}", replica.encode())

    def released_ids(self) -> list[str]:
        return [k.split("/", 1)[1] for k in self.store.list_after("released/")]

    def unrelease(self, job_id: str) -> None:
        self.store.delete(f"released/{job_id}")

    def page(self, viewer=None, page_size: int = 100, page_token: str = "") -> tuple[list, str]:
        """One page of the jobs ``viewer`` may see, newest first, and the token of the next page ("" at the end).
        Cost: one ``list_after`` of at most ``page_size`` index keys and ``page_size`` record reads."""
        if page_size < 0:
            raise UserInputError(f"page_size must be >= 0, got {page_size}", field="page_size")
        size = min(page_size or 100, MAX_PAGE)
        if page_token and not _TOKEN.fullmatch(page_token):
            raise UserInputError("page_token is not one this server gave out; pass next_page_token of the "
                                 "previous page, or nothing for the first page", field="page_token")
        prefix = f"index/{ALL}/" if sees_all(viewer) else f"index/{tenant_segment(tenant_of(viewer))}/"
        after = prefix + page_token if page_token else ""
        jobs: list = []
        more = True
        while len(jobs) < size and more:
            keys = self.store.list_after(prefix, after, size - len(jobs))
            more = len(keys) == size - len(jobs)
            for k in keys:
                after = k
                job_id = k.rsplit("/", 1)[1].split("-", 1)[1]
                try:
                    jobs.append(self.get(job_id, viewer))
                except (NotFound, ObjectNotFound, json_format.ParseError):
                    continue  # deleted between the index and the record (or being created): skipped
        token = after[len(prefix):] if more and jobs else ""
        if token and not self.store.list_after(prefix, after, 1):
            token = ""
        return jobs, token

    def list(self, limit: int = 100, viewer=None) -> list:
        return self.page(viewer, limit)[0]

    def ensure_index(self) -> int:
        """Index the records written before the index existed (once per store); returns how many."""
        if self.store.exists("index/v1"):
            return 0
        n = 0
        for k in self.store.list("jobs/"):
            if not k.endswith("/job.json"):
                continue
            try:
                job = json_format.Parse(self.store.get_bytes(k), _state().Job())
            except (ObjectNotFound, json_format.ParseError):
                continue
            for ik in self.index_keys(job):
                self.store.put_bytes(ik, b"")
            if job.state not in TERMINAL:
                self.store.put_bytes(f"active/{job.job_id}", b"")
            n += 1
        self.store.put_bytes("index/v1", b"")
        return n

    # -- delete -----------------------------------------------------------------------------
    def delete(self, job_id: str, viewer=None) -> int:
        """Remove a finished job's objects (record, markers, leases, report files) and its index entries."""
        job = self.get(job_id, viewer)
        if job.state not in TERMINAL:
            raise UserInputError(f"job {job_id} is {_state().JobState.Name(job.state)}: cancel it first "
                                 "(CancelJob), then delete it", field="job_id")
        return self._remove(job)

    def _remove(self, job) -> int:
        """The job's own objects, then the blobs only it used (``refs``: uploads of its tenant no other job of
        the tenant uses, masks, label images, tables); returns the number of objects removed."""
        from . import refs

        blobs = refs.job_blob_keys(self.store, job)
        d = self._dir(job.job_id)
        keys = [k for k in self.store.list(d + "/") if k != f"{d}/job.json"]
        for k in keys:
            self.store.delete(k)
        self.store.delete(f"{d}/job.json")
        for k in self.index_keys(job):
            self.store.delete(k)
        self.finished(job.job_id, job.tenant)
        return len(keys) + 1 + refs.release_job_blobs(self.store, job, blobs)

    def apply_retention(self, *, max_age_days: float = 0.0, max_per_tenant: int = 0) -> list[str]:
        """Delete finished jobs older than ``max_age_days`` and beyond the newest ``max_per_tenant`` of each
        tenant (0 = no limit). Unfinished jobs are never deleted. Safe on several replicas at once."""
        if not (max_age_days > 0 or max_per_tenant > 0):
            return []
        per_tenant: dict[str, list[str]] = {}
        for k in self.store.list("index/"):
            parts = k.split("/")
            if len(parts) == 3 and parts[1] != ALL and _TOKEN.fullmatch(parts[2]):
                per_tenant.setdefault(parts[1], []).append(parts[2])
        cutoff_rev = None
        if max_age_days > 0:
            cutoff = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=max_age_days)
            cutoff_rev = _REV - int(cutoff.timestamp() * 1000)
        deleted = []
        for names in per_tenant.values():
            names.sort()  # newest first
            for rank, name in enumerate(names):
                too_old = cutoff_rev is not None and int(name[:13]) > cutoff_rev
                too_many = max_per_tenant > 0 and rank >= max_per_tenant
                if not (too_old or too_many):
                    continue
                job_id = name.split("-", 1)[1]
                try:
                    job = self.load(job_id)
                except (NotFound, ObjectNotFound, json_format.ParseError):
                    continue
                if job.state in TERMINAL:
                    self._remove(job)
                    deleted.append(job_id)
        return deleted

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

    def leases(self, job_id: str) -> set[str]:
        """The resume leases ever taken on a job (one per resumed state)."""
        return set(self.store.list_after(f"{self._dir(job_id)}/lease/"))

    def take_resume_lease(self, job, replica: str) -> bool:
        """Create-only lease on the stale state the caller saw: exactly one caller per state gets True."""
        token = hashlib.sha256(f"{job.updated_at}|{self.last_alive(job)}".encode()).hexdigest()[:24]
        return self.store.put_if_absent(f"{self._dir(job.job_id)}/lease/{token}", replica.encode())
