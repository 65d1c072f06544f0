"""Mapping library exceptions to gRPC statuses with messages a person can act on."""

from __future__ import annotations

import functools
import inspect
import logging
import uuid

import grpc

from ..analysis import ImageDecodeError
from ..storage import InvalidKey, ObjectNotFound, StorageFull, StorageUnavailable

__all__ = ["ERROR_DETAIL_KEY", "map_exceptions", "error_detail_from", "abort"]

ERROR_DETAIL_KEY = "semforge-error-bin"
log = logging.getLogger("semforge.rpc")


class RpcAbort(Exception):
    """Raise inside a servicer to end the call with this status and message."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str = ""):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def abort(code: grpc.StatusCode, message: str, field: str = "") -> None:
    raise RpcAbort(code, message, field)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    if isinstance(exc, RpcAbort):
        return exc.code, exc.message, exc.field
    if isinstance(exc, StorageFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}", ""
    if isinstance(exc, StorageUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; retry when the object store is back", ""
    if isinstance(exc, ObjectNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc), "ref"
    if isinstance(exc, (InvalidKey, ImageDecodeError, ValueError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), ""
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "not enough memory for this request; send a smaller image", ""
    if isinstance(exc, grpc.RpcError):  # a downstream service failed: pass its status on
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNAVAILABLE
        return code, f"downstream service: {exc.details() if hasattr(exc, 'details') else exc}", ""
    ref = uuid.uuid4().hex[:8]
    log.exception("internal error %s", ref)
    return grpc.StatusCode.INTERNAL, f"internal error (reference {ref}); the service logs have the details", ""


def _finish(context, exc: BaseException):
    from semforge.common.v1 import common_pb2

    code, message, field = _status_for(exc)
    detail = common_pb2.ErrorDetail(code=code.name, message=message, field=field)
    try:
        context.set_trailing_metadata(((ERROR_DETAIL_KEY, detail.SerializeToString()),))
    except Exception:
        pass
    context.abort(code, message)


def map_exceptions(fn):
    """Decorator for servicer methods (unary or streaming) that turns exceptions into statuses."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(self, request, context):
            try:
                yield from fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                if _is_abort(exc):
                    raise
                _finish(context, exc)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                raise
            _finish(context, exc)
    return wrapper


def _is_abort(exc: BaseException) -> bool:
    # context.abort raises a bare Exception subclass; let it through
    return type(exc).__name__ == "_Abort" or (type(exc) is Exception and not exc.args)


def error_detail_from(err: grpc.RpcError):
    """The ErrorDetail attached to a failed call, or None."""
    from semforge.common.v1 import common_pb2

    try:
        for k, v in err.trailing_metadata() or ():
            if k == ERROR_DETAIL_KEY:
                return common_pb2.ErrorDetail.FromString(v)
    except Exception:
        return None
    return None
