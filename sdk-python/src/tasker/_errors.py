"""Every exception the SDK raises or understands, under one root.

::

    TaskerError                      root: catch this to catch everything from the SDK
    ├── InvalidArgumentError         INVALID_ARGUMENT (field_violations lists every problem)
    ├── NotFoundError                NOT_FOUND
    ├── AlreadyExistsError           ALREADY_EXISTS
    ├── FailedPreconditionError      FAILED_PRECONDITION (e.g. an illegal state transition)
    ├── ResourceExhaustedError       RESOURCE_EXHAUSTED (payload or template limits)
    ├── AbortedError                 ABORTED
    ├── UnavailableError             UNAVAILABLE (server down or restarting)
    ├── InternalError                INTERNAL
    ├── UnauthenticatedError         UNAUTHENTICATED (no or unknown token or client certificate)
    ├── PermissionDeniedError        PERMISSION_DENIED (the identity lacks a permission there)
    │   (any other status code is a plain TaskerError carrying its ``code``)
    └── HandlerError                 raised *by step handlers* to classify a failure
        ├── RetryableError           DELAYED (or TRANSIENT with ``immediate=True``)
        ├── PermanentError           PERMANENT: fail the step (or skip it / run its fallback)
        └── ManualInterventionError  BUSINESS_LOGIC: block the step for an operator
            (alias BusinessLogicError)

RPC errors are decoded in exactly one place, :func:`from_rpc_error`, which reads the
``grpc-status-details-bin`` trailer (a ``google.rpc.Status`` carrying one ``ErrorInfo`` and, for
INVALID_ARGUMENT, a ``BadRequest``).

Any exception a handler raises that is *not* a :class:`HandlerError` is reported as DELAYED:
unclassified errors are retried with backoff until the step's attempts run out.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from tasker._convert import dict_to_struct, seconds_to_duration
from tasker.v1 import resources_pb2

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "BusinessLogicError",
    "FailedPreconditionError",
    "FieldViolation",
    "HandlerError",
    "InternalError",
    "InvalidArgumentError",
    "ManualInterventionError",
    "NotFoundError",
    "PermanentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryableError",
    "TaskerError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
    "step_error_from_exception",
]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
# StepError field limits from resources.proto; the server truncates too, but sending less is
# cheaper and keeps the tail (the most specific frames) of a long traceback.
_MAX_MESSAGE = 16 * 1024
_MAX_BACKTRACE = 64 * 1024
_MAX_TYPE = 256


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class TaskerError(Exception):
    """Root of every SDK exception.

    For errors decoded from an RPC, ``code`` is the gRPC status code, ``reason`` the
    ``ErrorInfo`` reason (e.g. ``TASK_NOT_FOUND``), ``metadata`` its metadata and
    ``field_violations`` the ``BadRequest`` problems. ``code`` is None for errors that did not
    come from an RPC.
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        metadata: Mapping[str, Any] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        *,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        # From google.rpc.RetryInfo when the server sends one.
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        text = self.message
        if self.field_violations:
            text += "".join(f"\n  {v.field}: {v.description}" for v in self.field_violations)
        return text

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code}, reason={self.reason!r})"


class InvalidArgumentError(TaskerError):
    """The request was invalid; ``field_violations`` names every problem."""


class NotFoundError(TaskerError):
    """The task, template, step, lease or breaker does not exist."""


class AlreadyExistsError(TaskerError):
    """E.g. the same template version registered with different content."""


class FailedPreconditionError(TaskerError):
    """The resource is in a state that does not allow the call (the message names it)."""


class ResourceExhaustedError(TaskerError):
    """A size or count limit was exceeded."""


class AbortedError(TaskerError):
    """The call was aborted, e.g. a watcher fell too far behind."""


class UnavailableError(TaskerError):
    """The server could not be reached; safe to retry."""


class InternalError(TaskerError):
    """The server failed unexpectedly; its log has the details."""


class UnauthenticatedError(TaskerError):
    """No bearer token or client certificate, or one the server does not accept."""


class PermissionDeniedError(TaskerError):
    """The caller's identity lacks the permission the call needs in its namespace; the
    message names both (``metadata``: ``identity``, ``permission``, ``namespace``)."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[TaskerError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def _status_details(trailing: Any) -> bytes | None:
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def from_rpc_error(error: grpc.RpcError) -> TaskerError:
    """Turn a failed RPC (``grpc.aio.AioRpcError`` or a sync ``grpc.RpcError``) into the
    matching :class:`TaskerError` subclass, decoding ErrorInfo, BadRequest and RetryInfo."""
    code_fn = getattr(error, "code", None)
    code: grpc.StatusCode | None = code_fn() if callable(code_fn) else None
    details_fn = getattr(error, "details", None)
    message = (details_fn() if callable(details_fn) else None) or str(error)
    trailing_fn = getattr(error, "trailing_metadata", None)
    trailing = trailing_fn() if callable(trailing_fn) else None

    reason = ""
    metadata: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    raw = _status_details(trailing)
    if raw is not None:
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except Exception:  # a garbled trailer must not hide the status code itself
            status = status_pb2.Status()
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata.update(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()

    cls = _ERROR_BY_CODE.get(code, TaskerError) if code is not None else TaskerError
    return cls(message, code, reason, metadata, violations, retry_delay=retry_delay)


# --- errors raised by step handlers -----------------------------------------------------------


class HandlerError(TaskerError):
    """Base of the errors a step handler raises to say how its failure should be treated.

    ``error_type`` defaults to the exception's class name, so subclassing
    (``class PaymentDeclined(PermanentError)``) names the failure in the step's history.
    """

    error_class: Any = resources_pb2.ERROR_CLASS_DELAYED

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.error_type = error_type or type(self).__name__


class RetryableError(HandlerError):
    """Retry the step: after the backoff delay (DELAYED), or ``retry_after`` seconds if given
    (capped by the server), or at once with ``immediate=True`` (TRANSIENT)."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        immediate: bool = False,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, metadata=metadata, error_type=error_type)
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        self.retry_after = retry_after
        self.immediate = immediate
        self.error_class = (
            resources_pb2.ERROR_CLASS_TRANSIENT if immediate else resources_pb2.ERROR_CLASS_DELAYED
        )


class PermanentError(HandlerError):
    """Do not retry: the step fails (or is skipped when optional, or runs its fallback)."""

    error_class = resources_pb2.ERROR_CLASS_PERMANENT


class ManualInterventionError(HandlerError):
    """A business rule failed: the step becomes BLOCKED until an operator retries, resolves
    or completes it."""

    error_class = resources_pb2.ERROR_CLASS_BUSINESS_LOGIC


BusinessLogicError = ManualInterventionError


def _tail(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return "…" + data[-(limit - 3) :].decode(errors="ignore")


def _head(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def step_error_from_exception(
    exc: BaseException,
    *,
    error_class: Any = None,
    error_type: str | None = None,
) -> Any:
    """Classify an exception raised by a handler into a ``tasker.v1.StepError``.

    HandlerError subclasses carry their class; anything else is DELAYED (retried with backoff).
    ``error_class``/``error_type`` override the classification (used for timeouts).
    """
    retry_after: float | None = None
    details: dict[str, Any] = {}
    if isinstance(exc, HandlerError):
        cls = exc.error_class
        etype = exc.error_type
        details = exc.metadata
        if isinstance(exc, RetryableError):
            retry_after = exc.retry_after
    else:
        cls = resources_pb2.ERROR_CLASS_DELAYED
        etype = type(exc).__name__
    if error_class is not None:
        cls = error_class
    if error_type is not None:
        etype = error_type
    message = (exc.message if isinstance(exc, TaskerError) else str(exc)) or etype
    backtrace = "".join(traceback.format_exception(exc))
    proto = resources_pb2.StepError(
        error_class=cls,
        error_type=_head(etype, _MAX_TYPE),
        message=_head(message, _MAX_MESSAGE),
        backtrace=_tail(backtrace, _MAX_BACKTRACE),
    )
    if retry_after is not None:
        proto.retry_after.CopyFrom(seconds_to_duration(retry_after))
    if details:
        try:
            proto.metadata.CopyFrom(dict_to_struct(details))
        except (TypeError, ValueError) as bad:
            proto.metadata.CopyFrom(dict_to_struct({"metadata_error": str(bad)}))
    return proto
