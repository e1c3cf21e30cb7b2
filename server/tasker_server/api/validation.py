"""Request checks shared by the services (each rule once)."""

from __future__ import annotations

from tasker_server.domain import errors

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise errors.InvalidArgument(
            "invalid page_size",
            [errors.FieldViolation("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")],
        )
    return value


def required(**fields: str) -> None:
    missing = [errors.FieldViolation(name, "is required") for name, v in fields.items() if not v]
    if missing:
        raise errors.InvalidArgument("missing required fields", missing)


def task_id(value: str, field: str = "task_id") -> int:
    required(**{field: value})
    if not value.isdigit() or len(value) > 18:
        # Ids are opaque; a malformed one cannot exist, so it is simply not found.
        raise errors.NotFound("task", value, reason="TASK_NOT_FOUND")
    return int(value)
