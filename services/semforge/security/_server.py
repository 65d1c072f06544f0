"""Server side: authenticate every RPC (except health and reflection), put the identity in the context, audit."""

from __future__ import annotations

import contextvars
import hmac
import logging
import time
from dataclasses import dataclass, field

import grpc

from ..rpc._handlers import rewrap
from ._tokens import AuthError, Identity, Role, TokenRegistry, semforge_home

__all__ = ["AUTH_MODES", "AuthInterceptor", "AuthSettings", "Authenticator", "OPEN_METHOD_PREFIXES",
           "current_identity", "is_loopback_peer"]

AUTH_MODES = ("none", "loopback", "tokens", "service")
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
audit_log = logging.getLogger("semforge.audit")
_CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("semforge_identity", default=None)

LOCAL_IDENTITY = Identity("local", "local", Role.ADMIN, "", "local")
SERVICE_IDENTITY = Identity("gateway", "*", Role.SERVICE, "", "service")


def current_identity() -> Identity | None:
    """The identity of the RPC being served on this thread (None when authentication is off)."""
    return _CURRENT.get()


def is_loopback_peer(peer: str) -> bool:
    """``context.peer()`` of a caller on this host: ``ipv4:127.x``, ``ipv6:[::1]`` or a unix socket."""
    return peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:", "ipv6:%5B::1%5D"))


@dataclass
class AuthSettings:
    """How a server authenticates its callers.

    mode : ``none`` (no check; tests and trusted one-process use), ``loopback``
        (the embedded default: a caller on 127.0.0.1 without a token is the
        local admin; a token, when sent, must be valid; other hosts need a
        token), ``tokens`` (a valid bearer token on every call) or ``service``
        (the services behind the gateway: only the shared service secret, or
        an mTLS client certificate whose common name is in ``service_peers``).
    """

    mode: str = "none"
    tokens_file: str = ""
    service_token: str = ""
    service_peers: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.mode not in AUTH_MODES:
            raise ValueError(f"SEMFORGE_AUTH={self.mode!r}: use one of {', '.join(AUTH_MODES)}")
        if self.mode == "service" and not (self.service_token or self.service_peers):
            raise ValueError("SEMFORGE_AUTH=service needs SEMFORGE_SERVICE_TOKEN (the secret the gateway sends) "
                             "or SEMFORGE_SERVICE_PEERS with mTLS (TLS_CA)")

    def registry(self) -> TokenRegistry:
        return TokenRegistry(self.tokens_file or semforge_home() / "tokens.json")


def _bearer(metadata) -> str | None:
    for k, v in metadata or ():
        if k == "authorization":
            if isinstance(v, bytes):
                v = v.decode("latin-1")
            scheme, _, tok = v.strip().partition(" ")
            if scheme.lower() != "bearer" or not tok.strip():
                raise AuthError("authorization metadata must be 'Bearer <token>'")
            return tok.strip()
    return None


class Authenticator:
    """Turns a call's metadata and peer into an :class:`Identity`, or raises :class:`AuthError`."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self.registry = settings.registry() if settings.mode in ("loopback", "tokens") else None

    def authenticate(self, metadata, context) -> Identity:
        s = self.settings
        token = _bearer(metadata)
        if s.mode == "service":
            if token and s.service_token and hmac.compare_digest(token.encode(), s.service_token.encode()):
                return SERVICE_IDENTITY
            if s.service_peers:
                try:
                    cns = {c.decode() for c in (context.auth_context() or {}).get("x509_common_name", [])}
                except Exception:  # noqa: BLE001 - no TLS: no peer certificate
                    cns = set()
                if cns & set(s.service_peers):
                    return Identity(sorted(cns & set(s.service_peers))[0], "*", Role.SERVICE, "", "service")
            raise AuthError("this service accepts calls from the gateway only; send requests to the gateway")
        if token:
            return self.registry.verify(token)
        if s.mode == "loopback" and is_loopback_peer(context.peer()):
            return LOCAL_IDENTITY
        raise AuthError("no credentials: send 'authorization: Bearer <token>' (set SEMFORGE_TOKEN or "
                        "SEMFORGE_TOKEN_FILE; a facility admin issues tokens with `semforge admin token issue`)")


def _reset(tok) -> None:
    try:
        _CURRENT.reset(tok)
    except ValueError:  # a generator closed from another context: that context never saw the identity
        pass


def _object_of(msg) -> str:
    """The object a request names by reference (``Download(ref=...)``), for the audit line."""
    try:
        key = msg.ref.key
    except AttributeError:
        return ""
    return key if isinstance(key, str) else ""


def _job_id_of(msg) -> str:
    for path in (("job_id",), ("job", "job_id"), ("event", "job_id")):
        obj = msg
        try:
            for p in path:
                obj = getattr(obj, p)
        except AttributeError:
            continue
        if isinstance(obj, str) and obj:
            return obj
    return ""


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every call but health/reflection; the identity is :func:`current_identity` in servicers.

    Each authenticated call, and each refused one, ends with one audit line on
    the ``semforge.audit`` logger: who (user, tenant, role, peer), what
    (service/method, status code) and which job (from the request or the first
    response that names one).
    """

    def __init__(self, service: str, settings: AuthSettings):
        self.service = service
        self.auth = Authenticator(settings)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        method = handler_call_details.method.rsplit("/", 1)[-1]
        auth, service = self.auth, self.service

        def audit(ident: Identity | None, context, code: str, job_id: str, t0: float, why: str = "",
                  obj: str = "") -> None:
            extra = {"audit": True, "service": service, "method": method, "code": code,
                     "ms": round((time.perf_counter() - t0) * 1e3, 1), "peer": context.peer()}
            if obj:
                extra["object"] = obj
            if ident is not None:
                extra.update(ident.audit_fields())
            if job_id:
                extra["job_id"] = job_id
            who = f"{ident.user}@{ident.tenant}" if ident else "unauthenticated"
            audit_log.info("%s %s/%s %s%s%s", who, service, method, code, f" job {job_id}" if job_id else "",
                           f": {why}" if why else "", extra=extra)

        def login(request, context, t0):
            try:
                return auth.authenticate(metadata, context)
            except AuthError as exc:
                audit(None, context, "UNAUTHENTICATED", "", t0, str(exc))
                context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

        def code_of(context) -> str:
            code = context.code() if hasattr(context, "code") else None
            return code.name if isinstance(code, grpc.StatusCode) else "OK"

        def wrap_unary(fn):
            def inner(request, context):
                t0 = time.perf_counter()
                ident = login(request, context, t0)
                tok = _CURRENT.set(ident)
                job_id = _job_id_of(request)
                try:
                    resp = fn(request, context)
                    job_id = job_id or _job_id_of(resp)
                    return resp
                finally:
                    _reset(tok)
                    audit(ident, context, code_of(context), job_id, t0, obj=_object_of(request))
            return inner

        def wrap_stream(fn):
            def inner(request, context):
                t0 = time.perf_counter()
                ident = login(request, context, t0)
                tok = _CURRENT.set(ident)  # the sync server drains a stream on one worker thread
                job_id = _job_id_of(request)
                try:
                    for msg in fn(request, context):
                        if not job_id:
                            job_id = _job_id_of(msg)
                        yield msg
                finally:
                    _reset(tok)
                    audit(ident, context, code_of(context), job_id, t0, obj=_object_of(request))
            return inner

        return rewrap(handler, unary=wrap_unary, stream=wrap_stream)
