"""Admission control for streaming RPCs, so that long streams never starve unary calls or health.

The synchronous gRPC server runs every call, streams included, on one
thread of a fixed pool; a ``WatchJob`` or ``Analyze`` stream holds its thread
for minutes. With as many open streams as threads, health checks and
``GetJob`` queue behind them and time out (measured: 8 watchers on the
8-thread gateway, health DEADLINE_EXCEEDED). :class:`StreamLimiter` admits at
most ``max_streams`` concurrent streaming calls in total (fewer than the pool's
threads, so some always stay free for unary calls) and at most
``max_per_client`` per client; beyond that a stream is refused at once with
RESOURCE_EXHAUSTED, a ``retry-after-ms`` trailer and a message saying when to
retry, before it does any work (no job is created by a refused ``Analyze``).
"""

from __future__ import annotations

import collections
import threading

import grpc

from ._handlers import rewrap

__all__ = ["RETRY_AFTER_KEY", "StreamLimiter", "retry_after_ms"]

RETRY_AFTER_KEY = "retry-after-ms"


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


def refusal_status(message: str, retry_ms: int) -> grpc.Status:
    """RESOURCE_EXHAUSTED in the rich error model (ErrorDetail + ``google.rpc.RetryInfo``) plus the
    ``retry-after-ms`` trailer (readable without the protos)."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    from semforge.common.v1 import common_pb2

    details = []
    for msg in (common_pb2.ErrorDetail(code="RESOURCE_EXHAUSTED", message=message),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                    seconds=retry_ms // 1000, nanos=(retry_ms % 1000) * 1_000_000))):
        a = any_pb2.Any()
        a.Pack(msg)
        details.append(a)
    st = rpc_status.to_status(status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=message,
                                                details=details))
    return _Status(st.code, st.details, tuple(st.trailing_metadata) + ((RETRY_AFTER_KEY, str(retry_ms)),))


def retry_after_ms(err: grpc.RpcError) -> int | None:
    """The server's retry hint of a refused call, in milliseconds (None when absent)."""
    try:
        for k, v in err.trailing_metadata() or ():
            if k == RETRY_AFTER_KEY:
                return int(v)
    except Exception:  # noqa: BLE001
        return None
    return None


def _client_key(context) -> str:
    from ..security import current_identity

    ident = current_identity()
    if ident is not None and ident.token_id:
        return f"token:{ident.token_id}"
    if ident is not None and ident.kind != "local":
        return f"user:{ident.user}@{ident.tenant}"
    peer = context.peer()  # ipv4:1.2.3.4:port -> the host
    return "peer:" + peer.rsplit(":", 1)[0]


class StreamLimiter(grpc.ServerInterceptor):
    """Caps concurrent streaming calls (server-, client- or bidi-streaming), in total and per client.

    Parameters
    ----------
    max_streams : int
        Concurrent streams admitted in total (0 = no cap).
    max_per_client : int
        Concurrent streams per client (token, user, or peer host; 0 = no cap).
    retry_after_ms : int
        Hint sent with a refusal.
    """

    def __init__(self, service: str, *, max_streams: int, max_per_client: int = 0, retry_after_ms: int = 1000):
        self.service = service
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.retry_ms = retry_after_ms
        self._lock = threading.Lock()
        self._open = 0
        self._per: dict[str, int] = {}
        self.refused = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def _acquire(self, key: str) -> str | None:
        with self._lock:
            if self.max_streams and self._open >= self.max_streams:
                self.refused += 1
                return f"{self.service} is serving its maximum of {self.max_streams} concurrent streams"
            if self.max_per_client and self._per.get(key, 0) >= self.max_per_client:
                self.refused += 1
                return f"this client already has {self.max_per_client} open streams on {self.service}"
            self._open += 1
            self._per[key] = self._per.get(key, 0) + 1
            return None

    def _release(self, key: str) -> None:
        with self._lock:
            self._open -= 1
            n = self._per.get(key, 0) - 1
            if n > 0:
                self._per[key] = n
            else:
                self._per.pop(key, None)

    def _refuse(self, context, why: str):
        context.abort_with_status(refusal_status(f"{why}; retry in {self.retry_ms / 1e3:g} s", self.retry_ms))

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary or handler_call_details.method.startswith("/grpc."):
            return handler
        limiter = self

        def wrap_stream_out(fn):  # unary_stream / stream_stream: a generator
            def inner(request, context):
                key = _client_key(context)
                why = limiter._acquire(key)
                if why:
                    limiter._refuse(context, why)
                try:
                    yield from fn(request, context)
                finally:
                    limiter._release(key)
            return inner

        def wrap_stream_in(fn):  # stream_unary (uploads)
            def inner(request_iterator, context):
                key = _client_key(context)
                why = limiter._acquire(key)
                if why:
                    limiter._refuse(context, why)
                try:
                    return fn(request_iterator, context)
                finally:
                    limiter._release(key)
            return inner

        return rewrap(handler, unary=wrap_stream_in, stream=wrap_stream_out)  # unary_unary returned above
