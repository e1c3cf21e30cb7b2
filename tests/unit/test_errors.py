"""The exception tree: reasons, metadata and messages the API layer relies on."""

from __future__ import annotations

import pytest

from tasker_server.domain.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TaskerError,
    Unavailable,
)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (InvalidArgument("bad", [FieldViolation("a", "b")]), "INVALID_ARGUMENT"),
        (NotFound("template", "x"), "NOT_FOUND"),
        (AlreadyExists("template", "x"), "ALREADY_EXISTS"),
        (FailedPrecondition("no", "complete"), "FAILED_PRECONDITION"),
        (ResourceExhausted("full"), "RESOURCE_EXHAUSTED"),
        (Aborted("race"), "ABORTED"),
        (Unavailable("db down"), "UNAVAILABLE"),
    ],
)
def test_default_reasons(exc: TaskerError, reason: str) -> None:
    assert isinstance(exc, TaskerError)
    assert exc.reason == reason


def test_reason_override_and_metadata() -> None:
    exc = NotFound("template", "ns/x", reason="TEMPLATE_NOT_FOUND", metadata={"ns": "ns"})
    assert exc.reason == "TEMPLATE_NOT_FOUND"
    assert exc.metadata == {"kind": "template", "id": "ns/x", "ns": "ns"}
    assert exc.message == "template ns/x not found"


def test_invalid_argument_str_lists_violations() -> None:
    exc = InvalidArgument("invalid template", [FieldViolation("name", "is required")])
    assert str(exc) == "invalid template: name: is required"
    assert exc.violations == [FieldViolation("name", "is required")]


def test_failed_precondition_state() -> None:
    exc = FailedPrecondition("cannot retry", current_state="complete")
    assert exc.current_state == "complete"
    assert exc.metadata == {"current_state": "complete"}
    assert FailedPrecondition("x").metadata == {}
