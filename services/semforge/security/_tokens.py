"""Identities and bearer tokens, hashed at rest.

A token is ``sft_<id>.<secret>``: ``id`` (12 hex digits) names the record,
``secret`` is 32 random bytes (urlsafe base64). The registry keeps, per id,
the owner (user, tenant, role, kind) and ``sha256(salt || secret)`` with a
per-token random salt; the secret itself is shown once, at issue time, and is
never stored. A salted SHA-256 (not scrypt) is enough here because the secret
has 256 bits of entropy: there is no dictionary to attack, and a slow hash
would cost tens of milliseconds on every RPC.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["AuthError", "Identity", "Role", "TokenRecord", "TokenRegistry", "new_secret", "parse_token",
           "semforge_home"]

_TOKEN_RE = re.compile(r"^sft_([0-9a-f]{12})\.([A-Za-z0-9_\-]{32,128})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}$")


class AuthError(Exception):
    """A missing, malformed, unknown or revoked credential (maps to UNAUTHENTICATED)."""


class Role(str, enum.Enum):
    """What an identity may do.

    ``user``: its own tenant's jobs and objects. ``admin``: facility admin,
    every tenant, token management. ``service``: the gateway calling the
    services behind it (accepted only by those services).
    """

    USER = "user"
    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True)
class Identity:
    """Who is calling: set by the server interceptor, read with :func:`current_identity`."""

    user: str
    tenant: str
    role: Role
    token_id: str = ""
    kind: str = "user"  # user | instrument | service | local

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def audit_fields(self) -> dict:
        return {"user": self.user, "tenant": self.tenant, "role": self.role.value}


@dataclass
class TokenRecord:
    id: str
    user: str
    tenant: str
    role: str
    kind: str
    created: str
    salt: str
    sha256: str
    revoked: str = ""
    note: str = ""

    def identity(self) -> Identity:
        return Identity(self.user, self.tenant, Role(self.role), self.id, self.kind)

    def public(self) -> dict:
        d = asdict(self)
        d.pop("salt")
        d.pop("sha256")
        return d


def semforge_home() -> Path:
    """Per-user settings folder: ``$SEMFORGE_HOME`` or ``~/.config/semforge``."""
    return Path(os.environ.get("SEMFORGE_HOME") or Path.home() / ".config" / "semforge")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def parse_token(token: str) -> tuple[str, str]:
    """Split ``sft_<id>.<secret>`` into (id, secret); :class:`AuthError` if malformed."""
    m = _TOKEN_RE.match(token or "")
    if not m:
        raise AuthError("malformed token: expected sft_<id>.<secret> as issued by `semforge admin token issue`")
    return m.group(1), m.group(2)


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _check_name(what: str, value: str) -> str:
    if not _NAME_RE.match(value or ""):
        raise ValueError(f"{what} {value!r}: use 1-64 letters, digits and ._@- (starting with a letter or digit)")
    return value


class TokenRegistry:
    """Token records in one JSON file (mode 0600), re-read when it changes on disk.

    Revoking a token takes effect on every server that reads the same file
    (a mounted Secret or volume) within one call, without a restart.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._mtime: tuple | None = None
        self._records: dict[str, TokenRecord] = {}

    # -- reading ---------------------------------------------------------------------
    def _load(self) -> dict[str, TokenRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._mtime = {}, None
            return self._records
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._mtime:
            try:
                doc = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError) as exc:
                raise AuthError(f"token registry {self.path} is unreadable: {exc}") from None
            self._records = {r["id"]: TokenRecord(**r) for r in doc.get("tokens", [])}
            self._mtime = stamp
        return self._records

    def records(self) -> list[TokenRecord]:
        with self._lock:
            return sorted(self._load().values(), key=lambda r: r.created)

    def verify(self, token: str) -> Identity:
        """The identity a token stands for; :class:`AuthError` if unknown, revoked or wrong."""
        tid, secret = parse_token(token)
        with self._lock:
            rec = self._load().get(tid)
        if rec is None or not hmac.compare_digest(rec.sha256, _digest(rec.salt, secret)):
            raise AuthError("unknown token (wrong, or issued by another facility)")
        if rec.revoked:
            raise AuthError(f"token {tid} was revoked at {rec.revoked}; ask the facility admin for a new one")
        return rec.identity()

    # -- writing ---------------------------------------------------------------------
    def _save(self, records: dict[str, TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": 1, "tokens": [asdict(r) for r in sorted(records.values(), key=lambda r: r.created)]}
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._mtime = None

    def issue(self, user: str, tenant: str, *, role: Role | str = Role.USER, kind: str = "user",
              note: str = "") -> tuple[str, TokenRecord]:
        """Create a token; returns (the token, shown only now; its record)."""
        role = Role(role)
        if role is Role.SERVICE:
            raise ValueError("service identities use the shared service secret (SEMFORGE_SERVICE_TOKEN), not tokens")
        if kind not in ("user", "instrument", "local"):
            raise ValueError(f"kind must be user, instrument or local, got {kind!r}")
        _check_name("user", user)
        _check_name("tenant", tenant)
        secret = new_secret()
        salt = secrets.token_hex(16)
        with self._lock:
            records = dict(self._load())
            tid = secrets.token_hex(6)
            while tid in records:
                tid = secrets.token_hex(6)
            rec = TokenRecord(tid, user, tenant, role.value, kind,
                              _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), salt,
                              _digest(salt, secret), note=note)
            records[tid] = rec
            self._save(records)
        return f"sft_{tid}.{secret}", rec

    def revoke(self, token_id: str) -> TokenRecord:
        with self._lock:
            records = dict(self._load())
            if token_id not in records:
                raise KeyError(f"no token with id {token_id!r}; list them with `semforge admin token list`")
            rec = records[token_id]
            if not rec.revoked:
                rec.revoked = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
                self._save(records)
            return rec
