"""Request checks shared by the services (each rule once).

Everything here turns a value a client chose into what the handlers work with, or raises
``InvalidArgument`` naming the field: ids, page sizes, enum numbers (proto3 enums are open, so a
client can send any int32), timestamps (a Timestamp message can hold values outside its own
documented range) and step outcomes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from tasker_server.domain import errors
from tasker_server.domain.limits import Limits

from . import convert

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_ID_LENGTH",
    "MAX_PAGE_SIZE",
    "duration_seconds",
    "enum_value",
    "outcome",
    "page_size",
    "required",
    "task_id",
    "timestamp",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Task ids are decimal renderings of a 63-bit integer: at most 18 digits fit without overflow.
MAX_ID_LENGTH = 18

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
# google.protobuf.Duration's documented range: about +-10,000 years.
_MAX_DURATION_SECONDS = 315_576_000_000


def _invalid(field: str, problem: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"invalid {field}", [errors.FieldViolation(field, problem)])


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise _invalid("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
    return value


def required(**fields: str) -> None:
    missing = [errors.FieldViolation(name, "is required") for name, v in fields.items() if not v]
    if missing:
        raise errors.InvalidArgument("missing required fields", missing)


def task_id(value: str, field: str = "task_id") -> int:
    """The one parser of task ids: 1 to 18 ASCII digits. ``str.isdigit`` alone accepts "²"
    and other Unicode digits that ``int()`` refuses."""
    required(**{field: value})
    if not (len(value) <= MAX_ID_LENGTH and value.isascii() and value.isdigit()):
        # Ids are opaque; a malformed one cannot exist, so it is simply not found.
        raise errors.NotFound("task", value, reason="TASK_NOT_FOUND")
    return int(value)


def enum_value(value: int, enum: Any, field: str, *, allow_unspecified: bool) -> int:
    """``value`` if it names a value of ``enum`` (an EnumDescriptor); proto3 delivers undefined
    numbers as they are."""
    if value not in enum.values_by_number or (value == 0 and not allow_unspecified):
        names = ", ".join(v.name for v in enum.values if v.number or allow_unspecified)
        raise _invalid(field, f"{value} is not a {enum.name}; expected one of {names}")
    return value


def timestamp(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """An aware UTC datetime; INVALID_ARGUMENT outside Timestamp's range (years 1 to 9999,
    nanos 0 to 999,999,999), which ``ToDatetime`` would turn into a ValueError."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise _invalid(field, "nanos must be between 0 and 999,999,999")
    if not _MIN_SECONDS <= value.seconds <= _MAX_SECONDS:
        raise _invalid(field, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
    return value.ToDatetime(tzinfo=UTC)


def valid_duration(value: duration_pb2.Duration, field: str) -> float:
    """A Duration within protobuf's range, in seconds (of either sign)."""
    if not -999_999_999 <= value.nanos <= 999_999_999 or (
        abs(value.seconds) > _MAX_DURATION_SECONDS
    ):
        raise _invalid(field, "is not a valid Duration")
    return value.seconds + value.nanos / 1e9


def duration_seconds(value: duration_pb2.Duration, field: str, *, max_seconds: float) -> float:
    """A non-negative duration of at most ``max_seconds``, in seconds."""
    seconds = valid_duration(value, field)
    if not 0 <= seconds <= max_seconds:
        raise _invalid(field, f"must be between 0 and {max_seconds:g} seconds")
    return seconds




def outcome(kind: str, body: Any, limits: Limits) -> None:
    """Checks a reported StepSuccess / StepFailure (``kind`` is its field name) before it is
    recorded: JSON values finite and not too deep, the error class a defined one, durations in
    range. Raises INVALID_ARGUMENT naming the field."""
    depth = limits.nesting_depth
    if kind == "success":
        convert.to_dict(body.result, f"{kind}.result", depth)
    else:
        err = body.error
        enum_value(
            err.error_class,
            type(err).DESCRIPTOR.fields_by_name["error_class"].enum_type,
            f"{kind}.error.error_class",
            allow_unspecified=True,
        )
        convert.to_dict(err.metadata, f"{kind}.error.metadata", depth)
        if err.HasField("retry_after"):
            # Only a valid Duration: a negative or absurd hint is the worker's to give and the
            # retry rule's to clamp into [0, max_delay] (domain/retry.py), with a warning.
            valid_duration(err.retry_after, f"{kind}.error.retry_after")
    if body.HasField("execution_time"):
        duration_seconds(
            body.execution_time, f"{kind}.execution_time", max_seconds=_MAX_DURATION_SECONDS
        )
