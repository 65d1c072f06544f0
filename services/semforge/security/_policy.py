"""Who may see what: the tenant rule every job/object lookup applies (used by the job runner)."""

from __future__ import annotations

from ._tokens import Identity, Role

__all__ = ["DEFAULT_TENANT", "can_access", "owner_tenant"]

DEFAULT_TENANT = "default"


def owner_tenant(identity: Identity | None) -> str:
    """The tenant a new job/upload/report of this caller belongs to (``default`` with authentication off)."""
    return identity.tenant if identity is not None and identity.role is not Role.SERVICE else DEFAULT_TENANT


def can_access(identity: Identity | None, tenant: str) -> bool:
    """Whether the caller may see or act on something owned by ``tenant``.

    Facility admins, the local admin of the embedded mode and the gateway's
    service identity see every tenant; users and instruments only their own;
    with authentication off (``identity`` None) everything is visible. A
    caller who may not access something must get the same NOT_FOUND as for an
    id that does not exist (no existence oracle).
    """
    if identity is None or identity.role in (Role.ADMIN, Role.SERVICE):
        return True
    return bool(tenant) and identity.tenant == tenant
