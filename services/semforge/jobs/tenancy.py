"""Tenants of jobs and uploads (#15): who owns what, and the one rule for who may see it.

Uploads are content addressed (``blobs/sha256/<hex>``, one copy whatever the
number of tenants); each tenant that uploaded a blob has an *ownership record*
``owners/<tenant>/<hex>`` (with the file name that tenant gave it). A blob is
served, analysed or reported as deduplicated to a tenant only through its own
record, so the shared copy never tells one tenant what another uploaded. Jobs
carry their tenant in the record (``Job.tenant``); every lookup goes through
:func:`visible`, and a foreign id reads exactly like an unknown one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

from ..errors import NotFound
from ..security._policy import DEFAULT_TENANT, can_access, owner_tenant
from ..security._tokens import Role
from ..storage import BLOB_PREFIX, ObjectNotFound, ObjectStore

__all__ = ["ALL", "DEFAULT_TENANT", "tenant_of", "tenant_segment", "visible", "sees_all", "owner_of",
           "record_upload", "owns_upload", "upload_name", "no_object"]

ALL = "_all"  # index of every tenant's jobs (facility admins)
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")


def tenant_of(identity) -> str:
    """The tenant a new job/upload of this caller belongs to."""
    return owner_tenant(identity)


def owner_of(identity) -> str:
    return identity.user if identity is not None else ""


def sees_all(identity) -> bool:
    """Facility admins, the embedded local admin, the gateway's own identity, and authentication off."""
    return identity is None or identity.role in (Role.ADMIN, Role.SERVICE)


def visible(identity, tenant: str) -> bool:
    return can_access(identity, tenant)


def tenant_segment(tenant: str) -> str:
    """The tenant as one key segment: itself when safe, else a stable hash (never colliding with a safe name)."""
    if _SAFE.fullmatch(tenant or "") and tenant != ALL:
        return tenant
    return "=" + hashlib.sha256((tenant or "").encode()).hexdigest()[:24]


def no_object(key: str) -> ObjectNotFound:
    """The one answer for an object the caller may not see and for one that does not exist."""
    return ObjectNotFound(f"no object {key!r}; upload it first (Upload returns its reference)")


def _owner_key(tenant: str, blob_key: str) -> str | None:
    if not blob_key.startswith(BLOB_PREFIX):
        return None
    return f"owners/{tenant_segment(tenant)}/{blob_key[len(BLOB_PREFIX):]}"


def record_upload(store: ObjectStore, tenant: str, blob_key: str, name: str) -> bool:
    """Record that ``tenant`` uploaded ``blob_key`` as ``name``; True if it already had (its own dedup)."""
    k = _owner_key(tenant, blob_key)
    if k is None:
        return False
    from .refs import OWNER, _ref, blob_hex

    store.put_bytes(_ref(blob_hex(blob_key) or "", tenant, OWNER), b"")  # the upload keeps the blob (refs)
    try:
        json.loads(store.get_bytes(k))
        had = True
    except (ObjectNotFound, ValueError):
        had = False
    # "uploaded": a job deleted later frees this record only if it was created after the last upload (refs)
    store.put_bytes(k, json.dumps({"name": name, "uploaded": time.time()}).encode())
    return had


def owns_upload(store: ObjectStore, identity, blob_key: str) -> bool:
    if sees_all(identity):
        return True
    k = _owner_key(tenant_of(identity), blob_key)
    return k is not None and store.exists(k)


def uploaded_at(store: ObjectStore, tenant: str, blob_key: str) -> float | None:
    """When ``tenant`` last uploaded the blob (epoch s; 0 for records older than this field; None: never)."""
    k = _owner_key(tenant, blob_key)
    if k is None:
        return None
    try:
        return float(json.loads(store.get_bytes(k)).get("uploaded") or 0.0)
    except (ObjectNotFound, ValueError, TypeError, AttributeError):
        return None


def upload_name(store: ObjectStore, tenant: str, blob_key: str) -> str:
    """The file name ``tenant`` gave the blob ("" if it never uploaded it)."""
    k = _owner_key(tenant, blob_key)
    if k is None:
        return ""
    try:
        return str(json.loads(store.get_bytes(k)).get("name") or "")
    except (ObjectNotFound, ValueError):
        return ""


def check_job(identity, job, job_id: str):
    if not visible(identity, job.tenant):
        raise NotFound(f"no job {job_id!r}; list jobs with ListJobs", field="job_id")
    return job
