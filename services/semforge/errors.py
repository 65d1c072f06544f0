"""The exceptions a caller can act on, shared by the library, the services and the command line.

:class:`UserInputError` (and its subclasses) means the request or the input
file is wrong: the gRPC edge maps it to ``INVALID_ARGUMENT`` (``NOT_FOUND``,
``RESOURCE_EXHAUSTED`` for the subclasses) with a ``google.rpc.BadRequest``
field violation, the command line to exit code 2. Anything else escaping the
library is a bug: ``INTERNAL`` with a log reference, exit code 1 with a
bug-report hint. It subclasses :class:`ValueError` so older ``except
ValueError`` callers keep working.
"""

from __future__ import annotations

__all__ = ["UserInputError", "InvalidOption", "ObjectTooLarge", "NotFound", "Cancelled", "Busy", "Unavailable",
           "FailedPrecondition"]


class UserInputError(ValueError):
    """Bad input or options; ``field`` names the offending request field or option when known."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidOption(UserInputError):
    """An option value outside its valid set or range."""


class ObjectTooLarge(UserInputError):
    """An upload or image over a configured limit (``RESOURCE_EXHAUSTED``)."""


class NotFound(UserInputError, KeyError):
    """A referenced job, image or output does not exist (``NOT_FOUND``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class Cancelled(Exception):
    """A job was cancelled (raised between stages by the job runner's cancel check)."""


class Busy(Exception):
    """Refused for load, not for what was asked: the same request succeeds later (``RESOURCE_EXHAUSTED`` with a
    retry hint: trailer ``retry-after-ms`` and a ``google.rpc.RetryInfo``). E.g. a tenant at its limit of
    queued/running jobs (``MAX_ACTIVE_JOBS_PER_TENANT``)."""

    def __init__(self, message: str, *, retry_after_ms: int = 5000):
        super().__init__(message)
        self.retry_after_ms = int(retry_after_ms)


class Unavailable(Exception):
    """This process cannot serve the request now, another one (or this one later) can (``UNAVAILABLE``): e.g. a
    gateway replica that is shutting down refuses a new batch and ends a batch's watch."""


class FailedPrecondition(Exception):
    """The request is fine but the deployment is not set up to serve it (``FAILED_PRECONDITION``): e.g. a batch
    back end without the settings it needs."""
