"""Who still needs a content-addressed blob: reference records, so that deleting a job frees its storage (#15).

Blobs (``blobs/sha256/<hex>``: uploads, masks, label images, particle tables) are stored once whatever the
number of jobs and tenants that use them. Each use is an empty *reference record*
``refs/<hex>/<tenant>/<holder>``:

- ``<job id>``: a job uses the blob (its inputs from creation; at its end every blob it produced or read);
- ``_owner``: the tenant uploaded it (beside its ownership record ``owners/<tenant>/<hex>``);
- ``_up-<random>``: an upload of these bytes is in flight (removed when the upload has answered).

Deleting a job (``DeleteJob``, retention) removes its own records; a tenant's upload record goes when no job of
that tenant uses the blob any more and the tenant has not uploaded it again since the deleted job was created
(an upload after that is a new wish to keep the file); the blob (with its facts record) goes when nobody at all
uses it.

**The rule against races with a concurrent upload or submission of the same content.** Both sides write
their mark first and read the other's second, so at least one of them sees the other:

- the *freer* creates the tombstone ``gc/<hex>``, then lists ``refs/<hex>/``: any record -> keep the blob;
  none -> delete it; then removes the tombstone;
- a *user* (upload, new job) writes its reference record, then waits while a tombstone exists, then checks
  that the blob is still there: if the freer deleted it meanwhile, an upload answers "upload it again"
  (RESOURCE_EXHAUSTED with a retry hint: the client re-sends the file by itself) and a submission NOT_FOUND
  "upload it first". Never does a blob that a record points to disappear after its user went on.

Blobs produced by a *running* job are recorded only at its end; one that a concurrent deletion of another job
frees meanwhile is found missing by the runner, which redoes the image (as after a store that lost writes).
A tombstone left by a crashed freer is ignored after :data:`STALE_TOMBSTONE_S`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from ..errors import Busy
from ..storage import BLOB_PREFIX, ObjectNotFound, ObjectStore

__all__ = ["add", "remove", "used_by_tenant", "used", "free", "await_not_freed", "blob_hex", "MIGRATED",
           "job_blobs_key", "upload_pin", "drop_upload", "ensure_refs", "record_job_blobs", "job_blob_keys",
           "release_job_blobs"]

log = logging.getLogger("semforge.jobs")

STALE_TOMBSTONE_S = 30.0
OWNER = "_owner"
MIGRATED = "index/refs-v1"  # written once the records of older uploads and jobs exist (ensure_refs)


def blob_hex(key: str) -> str | None:
    if not key.startswith(BLOB_PREFIX):
        return None
    h = key[len(BLOB_PREFIX):]
    return h if len(h) == 64 and all(c in "0123456789abcdef" for c in h) else None


def _seg(tenant: str) -> str:
    from .tenancy import tenant_segment

    return tenant_segment(tenant)


def _ref(h: str, tenant: str, holder: str) -> str:
    return f"refs/{h}/{_seg(tenant)}/{holder}"


def job_blobs_key(job_id: str) -> str:
    return f"jobs/{job_id}/blobs.json"


def add(store: ObjectStore, key: str, tenant: str, holder: str) -> bool:
    """Record that ``holder`` of ``tenant`` uses blob ``key`` (no-op for other keys); then wait out a freer
    working on it. Returns True if the blob is still stored afterwards."""
    h = blob_hex(key)
    if h is None:
        return store.exists(key)
    store.put_bytes(_ref(h, tenant, holder), b"")
    await_not_freed(store, h)
    return store.exists(key)


def remove(store: ObjectStore, key: str, tenant: str, holder: str) -> None:
    h = blob_hex(key)
    if h is not None:
        store.delete(_ref(h, tenant, holder))


def used_by_tenant(store: ObjectStore, key: str, tenant: str, *, besides_owner: bool = True) -> bool:
    """Some job (or in-flight upload) of ``tenant`` uses the blob (its ownership record aside)."""
    h = blob_hex(key)
    if h is None:
        return True
    holders = [k.rsplit("/", 1)[1] for k in store.list_after(f"refs/{h}/{_seg(tenant)}/", "", 2)]
    return any(x != OWNER for x in holders) if besides_owner else bool(holders)


def used(store: ObjectStore, key: str) -> bool:
    """Anybody (any tenant's job, upload record or in-flight upload) uses the blob."""
    h = blob_hex(key)
    return h is None or bool(store.list(f"refs/{h}/"))


def await_not_freed(store: ObjectStore, h: str, timeout_s: float = STALE_TOMBSTONE_S) -> None:
    """Wait while a freer holds the tombstone of blob ``h`` (one that outlived ``STALE_TOMBSTONE_S`` is a crashed
    freer's: ignored)."""
    tomb = f"gc/{h}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            written = float(store.get_bytes(tomb) or b"0")
        except ObjectNotFound:
            return
        except ValueError:
            written = 0.0
        if time.time() - written > STALE_TOMBSTONE_S or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def free(store: ObjectStore, key: str, owner_of: str | None = None, created: float = 0.0) -> bool:
    """Delete blob ``key`` (and its facts record) if nobody uses it; True if it was deleted. With ``owner_of``
    (a tenant), first drop that tenant's upload record of it if no job or upload of the tenant uses it any more
    and it was last uploaded before ``created`` (epoch s: the deleted job's creation; an upload after that is a
    new wish to keep the file), under the same tombstone: an upload racing with it either is seen, or waits and
    then finds the blob gone. Does nothing before the records of older data exist (:data:`MIGRATED`)."""
    from ..rpc.convert import facts_key
    from .tenancy import _owner_key, uploaded_at

    h = blob_hex(key)
    if h is None or not store.exists(MIGRATED):
        return False
    tomb = f"gc/{h}"
    store.put_bytes(tomb, str(time.time()).encode())
    try:
        if owner_of is not None and not used_by_tenant(store, key, owner_of) and \
                (uploaded_at(store, owner_of, key) or 0.0) <= created + 0.001:  # created_at: whole ms
            ok = _owner_key(owner_of, key)
            if ok is not None:
                store.delete(ok)
            remove(store, key, owner_of, OWNER)
        if used(store, key):
            return False
        store.delete(key)
        store.delete(facts_key(key))
        return True
    finally:
        store.delete(tomb)


# -- uploads -------------------------------------------------------------------------------------------------
def upload_pin(store: ObjectStore, tenant: str, key: str) -> str:
    """Mark an upload of blob ``key`` in flight (right after its bytes are stored); returns the pin's holder.
    Raises :class:`~semforge.errors.Busy` when a concurrent deletion removed the blob just before (the client
    sends the file again by itself)."""
    holder = f"_up-{uuid.uuid4().hex[:12]}"
    if not add(store, key, tenant, holder):
        remove(store, key, tenant, holder)
        raise Busy("the same file was being deleted from the store while it was uploaded; upload it again",
                   retry_after_ms=200)
    return holder


def drop_upload(store: ObjectStore, tenant: str, key: str, holder: str) -> None:
    remove(store, key, tenant, holder)


# -- one-time records of data written before this module -------------------------------------------------------
def ensure_refs(store: ObjectStore) -> int:
    """Write the reference records of uploads and jobs stored before they existed (once per store: until then
    :func:`free` deletes nothing). Returns the number of records written."""
    from google.protobuf import json_format

    from semforge.common.v1 import common_pb2

    if store.exists(MIGRATED):
        return 0
    n = 0
    for k in store.list("owners/"):
        parts = k.split("/")
        if len(parts) == 3 and blob_hex(BLOB_PREFIX + parts[2]):
            store.put_bytes(f"refs/{parts[2]}/{parts[1]}/{OWNER}", b"")
            n += 1
    for k in store.list("jobs/"):
        if not k.endswith("/job.json"):
            continue
        try:
            job = json_format.Parse(store.get_bytes(k), common_pb2.Job())
        except (ObjectNotFound, json_format.ParseError):
            continue
        for key in {r.key for r in job.inputs} | {r.key for r in job.outputs.values()}:
            if blob_hex(key):
                store.put_bytes(_ref(blob_hex(key), job.tenant, job.job_id), b"")
                n += 1
    store.put_bytes(MIGRATED, b"")
    return n


def record_job_blobs(store: ObjectStore, job, produced: set[str]) -> None:
    """At a job's end: reference records for every blob it used, and the list of them beside its record."""
    keys = sorted(k for k in {r.key for r in job.inputs} | {r.key for r in job.outputs.values()} | set(produced)
                  if blob_hex(k))
    for k in keys:
        store.put_bytes(_ref(blob_hex(k), job.tenant, job.job_id), b"")
    store.put_bytes(job_blobs_key(job.job_id), json.dumps(keys).encode())


def job_blob_keys(store: ObjectStore, job) -> set[str]:
    """Every blob a job used: the list written at its end, plus its record's inputs and outputs."""
    try:
        keys = set(json.loads(store.get_bytes(job_blobs_key(job.job_id))))
    except (ObjectNotFound, ValueError):
        keys = set()
    keys |= {r.key for r in job.inputs} | {r.key for r in job.outputs.values()}
    return {k for k in keys if blob_hex(k)}


def release_job_blobs(store: ObjectStore, job, keys: set[str]) -> int:
    """A job was deleted: drop its references, its tenant's upload records that no other job or upload of the
    tenant uses, and every blob nobody uses any more. Returns the number of blobs deleted."""
    import datetime as _dt

    try:
        created = _dt.datetime.fromisoformat(job.created_at).timestamp()
    except (TypeError, ValueError):
        created = 0.0
    inputs = {r.key for r in job.inputs}
    for k in keys:
        remove(store, k, job.tenant, job.job_id)
    return sum(free(store, k, job.tenant if k in inputs else None, created) for k in sorted(keys))
