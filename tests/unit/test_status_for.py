"""The error -> gRPC status map (api/errors.status_for): every TaskerError subclass, as a table."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tasker_server.api.errors import ERROR_DOMAIN, STATUS_BY_ERROR, status_for
from tasker_server.domain import errors as domain

C = grpc.StatusCode
META = {"k": "v"}

# (error, code, reason, ErrorInfo metadata): one row per TaskerError subclass.
TABLE: list[tuple[domain.TaskerError, grpc.StatusCode, str, dict[str, str]]] = [
    (
        domain.InvalidArgument("bad", [domain.FieldViolation("a.b", "must be set")], metadata=META),
        C.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        META,
    ),
    (
        domain.NotFound("task", "7", reason="TASK_NOT_FOUND"),
        C.NOT_FOUND,
        "TASK_NOT_FOUND",
        {"kind": "task", "id": "7"},
    ),
    (
        domain.AlreadyExists("template", "ns/x"),
        C.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        {"kind": "template", "id": "ns/x"},
    ),
    (
        domain.FailedPrecondition("cannot", "complete", reason="ILLEGAL_STEP_TRANSITION"),
        C.FAILED_PRECONDITION,
        "ILLEGAL_STEP_TRANSITION",
        {"current_state": "complete"},
    ),
    (
        domain.ResourceExhausted("full", metadata=META),
        C.RESOURCE_EXHAUSTED,
        "RESOURCE_EXHAUSTED",
        META,
    ),
    (domain.Aborted("race"), C.ABORTED, "ABORTED", {}),
    (domain.OutOfRange("pruned", reason="EVENTS_PRUNED"), C.OUT_OF_RANGE, "EVENTS_PRUNED", {}),
    (domain.Unauthenticated("who"), C.UNAUTHENTICATED, "UNAUTHENTICATED", {}),
    (domain.PermissionDenied("no"), C.PERMISSION_DENIED, "PERMISSION_DENIED", {}),
    (domain.Unavailable("db down"), C.UNAVAILABLE, "UNAVAILABLE", {}),
]


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def _decode(trailer: tuple[tuple[str, bytes], ...]) -> status_pb2.Status:
    [(key, raw)] = trailer
    assert key == "grpc-status-details-bin"
    status = status_pb2.Status()
    status.ParseFromString(raw)
    return status


def test_the_table_covers_every_tasker_error() -> None:
    assert {type(exc) for exc, *_ in TABLE} == _subclasses(domain.TaskerError)
    assert {cls for cls, _ in STATUS_BY_ERROR} == _subclasses(domain.TaskerError)


@pytest.mark.parametrize(("exc", "code", "reason", "metadata"), TABLE, ids=lambda v: str(v)[:20])
def test_status_for(
    exc: domain.TaskerError, code: grpc.StatusCode, reason: str, metadata: dict[str, str]
) -> None:
    got_code, message, trailer = status_for(exc)
    assert got_code == code and message == str(exc)
    status = _decode(trailer)
    assert status.code == getattr(code_pb2, code.name) and status.message == message
    info = error_details_pb2.ErrorInfo()
    # Exactly one ErrorInfo, first; a BadRequest follows only for field violations.
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (reason, ERROR_DOMAIN, metadata)
    if isinstance(exc, domain.InvalidArgument):
        bad = error_details_pb2.BadRequest()
        assert len(status.details) == 2 and status.details[1].Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [("a.b", "must be set")]
    else:
        assert len(status.details) == 1


def test_anything_else_is_a_plain_internal_error() -> None:
    code, message, trailer = status_for(RuntimeError("password=hunter2 at db:5432"))
    assert code == C.INTERNAL and "hunter2" not in message
    status = _decode(trailer)
    info = error_details_pb2.ErrorInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == ("INTERNAL", ERROR_DOMAIN, {})
