"""One helper for the server interceptors (metrics, auth, stream caps): wrap a method handler's behaviour."""

from __future__ import annotations

from typing import Callable

__all__ = ["rewrap"]


def rewrap(handler, *, unary: Callable, stream: Callable):
    """``handler`` with its function wrapped: ``unary(fn)`` for the methods that return one response
    (unary_unary, stream_unary), ``stream(fn)`` for those that yield responses (unary_stream, stream_stream;
    the wrapper must be a generator). ``None`` stays ``None``."""
    if handler is None:
        return None
    if handler.unary_unary:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.stream_unary:
        return handler._replace(stream_unary=unary(handler.stream_unary))
    if handler.unary_stream:
        return handler._replace(unary_stream=stream(handler.unary_stream))
    if handler.stream_stream:
        return handler._replace(stream_stream=stream(handler.stream_stream))
    return handler
