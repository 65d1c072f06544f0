"""Client side: a bearer token (from the environment or a file) and optional TLS on every call."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Sequence

import grpc

from ._tokens import semforge_home

__all__ = ["BearerToken", "client_token", "open_channel", "read_pem", "service_channel"]

_PROCESS_SERVICE_TOKEN: list[str] = []


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                   "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call of a channel.

    Metadata rather than call credentials, so that it also works on the
    plaintext loopback channels of the embedded mode.
    """

    def __init__(self, token: str):
        self._md = ("authorization", f"Bearer {token}")

    def _add(self, d):
        md = list(d.metadata or ()) + [self._md]
        return _Details(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
                        getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._add(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._add(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._add(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._add(client_call_details), request_iterator)


def client_token(explicit: str | None = None) -> str | None:
    """The token a client sends: ``explicit``, else ``$SEMFORGE_TOKEN``, else the file named by
    ``$SEMFORGE_TOKEN_FILE``, else ``$SEMFORGE_HOME/token`` when it exists; None for none."""
    if explicit:
        return explicit.strip()
    if os.environ.get("SEMFORGE_TOKEN"):
        return os.environ["SEMFORGE_TOKEN"].strip()
    path = os.environ.get("SEMFORGE_TOKEN_FILE")
    if path:
        try:
            return Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ValueError(f"SEMFORGE_TOKEN_FILE={path}: {exc.strerror}") from None
    p = semforge_home() / "token"
    if p.is_file():
        return p.read_text().strip() or None
    return None


def read_pem(path: str | os.PathLike | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def open_channel(address: str, *, token: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, options: Sequence = ()) -> grpc.Channel:
    """A channel that sends ``token`` on every call; TLS when ``tls_ca`` is given (mTLS with cert + key).

    ``tls_ca``/``tls_cert``/``tls_key`` default to ``$SEMFORGE_TLS_CA``,
    ``$SEMFORGE_TLS_CERT``, ``$SEMFORGE_TLS_KEY``.
    """
    tls_ca = tls_ca or os.environ.get("SEMFORGE_TLS_CA")
    tls_cert = tls_cert or os.environ.get("SEMFORGE_TLS_CERT")
    tls_key = tls_key or os.environ.get("SEMFORGE_TLS_KEY")
    if tls_ca:
        creds = grpc.ssl_channel_credentials(read_pem(tls_ca), read_pem(tls_key), read_pem(tls_cert))
        ch = grpc.secure_channel(address, creds, options=list(options))
    else:
        ch = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(ch, BearerToken(token)) if token else ch


def set_process_service_token(token: str) -> None:
    """The service secret this process's gateways send when their config names none (embedded mode)."""
    _PROCESS_SERVICE_TOKEN[:] = [token]


def service_channel(address: str, cfg=None, *, options: Sequence = ()) -> grpc.Channel:
    """Channel from the gateway to a service behind it, carrying the service identity.

    ``cfg`` is the gateway's :class:`~semforge.rpc.ServiceConfig`: its
    ``service_token`` (or the embedded process's) is sent; its ``tls_ca`` /
    ``tls_cert`` / ``tls_key`` make it an mTLS channel.
    """
    token = getattr(cfg, "service_token", "") or (_PROCESS_SERVICE_TOKEN[0] if _PROCESS_SERVICE_TOKEN else None)
    ca = getattr(cfg, "tls_ca", "") or None
    if ca:
        return open_channel(address, token=token, tls_ca=ca, tls_cert=getattr(cfg, "tls_cert", "") or None,
                            tls_key=getattr(cfg, "tls_key", "") or None, options=options)
    ch = grpc.insecure_channel(address, options=list(options))
    return grpc.intercept_channel(ch, BearerToken(token)) if token else ch
