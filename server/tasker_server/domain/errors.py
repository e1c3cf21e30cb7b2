"""Domain exceptions: every error the server raises on purpose.

The tree::

    TaskerError                      base; never raised directly
     ├── InvalidArgument             bad input; carries FieldViolations   -> INVALID_ARGUMENT
     ├── NotFound                    (kind, id) does not exist            -> NOT_FOUND
     ├── AlreadyExists               (kind, id) already exists            -> ALREADY_EXISTS
     ├── FailedPrecondition          illegal in the current state         -> FAILED_PRECONDITION
     ├── ResourceExhausted           quota / capacity reached             -> RESOURCE_EXHAUSTED
     ├── Aborted                     lost a compare-and-set race          -> ABORTED
     ├── OutOfRange                  past what is kept (pruned events)    -> OUT_OF_RANGE
     ├── Unauthenticated             no or unknown credentials            -> UNAUTHENTICATED
     ├── PermissionDenied            identity lacks a permission          -> PERMISSION_DENIED
     └── Unavailable                 dependency (database, ...) is down   -> UNAVAILABLE

Each error carries a ``reason`` (UPPER_SNAKE, defaults to the class's generic reason, callers may
pass a more specific one such as ``TEMPLATE_NOT_FOUND``) and string ``metadata``. The API layer maps
the class to a gRPC status code and ``reason``/``metadata`` to one ``google.rpc.ErrorInfo`` in a
single place; nothing in the domain knows about gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Aborted",
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "TaskerError",
    "Unauthenticated",
    "Unavailable",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one input field.

    ``field`` is a path into the input, e.g. ``step_templates[2].depends_on_steps[0]``; it maps
    one-to-one onto ``google.rpc.BadRequest.FieldViolation``.
    """

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class TaskerError(Exception):
    """Root of every deliberate Tasker error."""

    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(TaskerError):
    """The request is malformed; ``violations`` lists every problem found, not just the first."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: list[FieldViolation] = list(violations)

    def __str__(self) -> str:
        if not self.violations:
            return self.message
        details = "; ".join(str(v) for v in self.violations)
        return f"{self.message}: {details}"


class NotFound(TaskerError):
    """No ``kind`` with identifier ``id`` exists (or the caller may not see it)."""

    default_reason = "NOT_FOUND"

    def __init__(
        self,
        kind: str,
        id: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        merged = {"kind": kind, "id": str(id), **(metadata or {})}
        super().__init__(f"{kind} {id!s} not found", reason=reason, metadata=merged)
        self.kind = kind
        self.id = str(id)


class AlreadyExists(TaskerError):
    """A ``kind`` with identifier ``id`` already exists (e.g. a template version, other content)."""

    default_reason = "ALREADY_EXISTS"

    def __init__(
        self,
        kind: str,
        id: str,
        message: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        merged = {"kind": kind, "id": str(id), **(metadata or {})}
        super().__init__(message or f"{kind} {id!s} already exists", reason=reason, metadata=merged)
        self.kind = kind
        self.id = str(id)


class FailedPrecondition(TaskerError):
    """The operation is illegal in the resource's current state (e.g. an illegal transition)."""

    default_reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        current_state: str | None = None,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        merged = dict(metadata or {})
        if current_state is not None:
            merged.setdefault("current_state", current_state)
        super().__init__(message, reason=reason, metadata=merged)
        self.current_state = current_state


class ResourceExhausted(TaskerError):
    """A quota or capacity limit was reached; the client should back off."""

    default_reason = "RESOURCE_EXHAUSTED"


class Aborted(TaskerError):
    """Lost a compare-and-set race: the row changed underneath us. Safe to re-read and retry."""

    default_reason = "ABORTED"


class OutOfRange(TaskerError):
    """A position beyond what is kept (e.g. resuming after events that were pruned)."""

    default_reason = "OUT_OF_RANGE"


class Unauthenticated(TaskerError):
    """The call carries no credentials (bearer token or client certificate), or ones the server
    does not accept."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(TaskerError):
    """An authenticated identity lacks the permission a call needs in its namespace."""

    default_reason = "PERMISSION_DENIED"


class Unavailable(TaskerError):
    """A dependency (usually the database) is temporarily unavailable; retry later."""

    default_reason = "UNAVAILABLE"
