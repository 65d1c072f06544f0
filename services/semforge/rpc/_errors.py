"""Exceptions -> gRPC statuses, mapped once, with the standard rich error model.

Every failed call carries a ``google.rpc.Status`` (``grpc-status-details-bin``)
whose details hold a ``google.rpc.BadRequest`` with the offending field (for
user errors that name one) and a ``semforge.common.v1.ErrorDetail``. Servicers
raise typed exceptions (or :func:`abort`) and never call ``context.abort``
themselves, so nothing has to recognise grpc's internal abort exception.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..analysis import ImageDecodeError
from ..errors import Busy, FailedPrecondition, NotFound, ObjectTooLarge, Unavailable, UserInputError
from ..storage import InvalidKey, ObjectNotFound, StorageFull, StorageUnavailable

__all__ = ["RpcAbort", "abort", "status_for", "map_exceptions", "error_detail_from", "bad_request_from"]

log = logging.getLogger("semforge.rpc")


class RpcAbort(Exception):
    """Raise inside a servicer to end the call with this status and message."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str = ""):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def abort(code: grpc.StatusCode, message: str, field: str = "") -> None:
    raise RpcAbort(code, message, field)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, field) of an exception: the one mapping of library errors to gRPC."""
    if isinstance(exc, RpcAbort):
        return exc.code, exc.message, exc.field
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc), ""
    if isinstance(exc, FailedPrecondition):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc), ""
    if isinstance(exc, (StorageFull, Busy)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}", ""
    if isinstance(exc, StorageUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; retry when the object store is back", ""
    if isinstance(exc, (ObjectNotFound, NotFound)):
        return grpc.StatusCode.NOT_FOUND, str(exc), getattr(exc, "field", "") or "ref"
    if isinstance(exc, ObjectTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), exc.field
    if isinstance(exc, UserInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field
    if isinstance(exc, InvalidKey):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), "ref.key"
    if isinstance(exc, ImageDecodeError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), "image"
    if isinstance(exc, ValueError):
        # legacy: library code outside the analysis pipeline (scene specs, translation) still validates its
        # request with plain ValueError; the analysis path raises UserInputError
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), ""
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "not enough memory for this request; send a smaller image", ""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):  # a downstream service failed: pass its status on
        return exc.code(), f"downstream service: {exc.details()}", ""
    ref = uuid.uuid4().hex[:8]
    log.exception("internal error %s", ref)
    return grpc.StatusCode.INTERNAL, f"internal error (reference {ref}); the service logs have the details", ""


def _pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def rich_status(code: grpc.StatusCode, message: str, field: str = "") -> grpc.Status:
    from semforge.common.v1 import common_pb2

    details = []
    if field and code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                          grpc.StatusCode.RESOURCE_EXHAUSTED):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)])))
    details.append(_pack(common_pb2.ErrorDetail(code=code.name, message=message, field=field)))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))


def map_exceptions(fn):
    """Decorator for servicer methods (unary or streaming) that turns exceptions into rich statuses."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(self, request, context):
            try:
                yield from fn(self, request, context)
                return
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                status = _status_of(exc)
            context.abort_with_status(status)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            status = _status_of(exc)
        context.abort_with_status(status)
    return wrapper


STORAGE_FULL_RETRY_MS = 5000


def _status_of(exc: BaseException) -> grpc.Status:
    if isinstance(exc, StorageFull):  # transient: RESOURCE_EXHAUSTED with a retry hint (RetryInfo + retry-after-ms)
        from ._limits import refusal_status

        return refusal_status(status_for(exc)[1], STORAGE_FULL_RETRY_MS)
    if isinstance(exc, Busy):  # load, e.g. a tenant at MAX_ACTIVE_JOBS_PER_TENANT: the same hint as the stream cap
        from ._limits import refusal_status

        return refusal_status(str(exc), exc.retry_after_ms)
    return rich_status(*status_for(exc))


def _detail(err: grpc.RpcError, cls):
    """The first detail of type ``cls`` in a failed call's ``google.rpc.Status``, or None."""
    try:
        st = rpc_status.from_call(err)
    except Exception:  # noqa: BLE001 - a malformed status is "no details"
        return None
    for d in st.details if st is not None else ():
        if d.Is(cls.DESCRIPTOR):
            out = cls()
            d.Unpack(out)
            return out
    return None


def error_detail_from(err: grpc.RpcError):
    """The ``semforge.common.v1.ErrorDetail`` of a failed call, or None."""
    from semforge.common.v1 import common_pb2

    return _detail(err, common_pb2.ErrorDetail)


def bad_request_from(err: grpc.RpcError):
    """The ``google.rpc.BadRequest`` of a failed call (field violations), or None."""
    return _detail(err, error_details_pb2.BadRequest)


assert code_pb2.INVALID_ARGUMENT == grpc.StatusCode.INVALID_ARGUMENT.value[0]
