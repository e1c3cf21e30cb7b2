"""Decoding RPC errors (one function) and classifying handler errors."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import tasker
from tasker import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TaskerError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from tasker._errors import step_error_from_exception
from tasker.v1 import resources_pb2


class FakeRpcError(grpc.RpcError):
    """Quacks like grpc.aio.AioRpcError / a sync grpc.Call error."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _status_trailer(code: grpc.StatusCode, message: str, *details: Any) -> tuple[Any, ...]:
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=[_pack(d) for d in details]
    )
    return (("grpc-status-details-bin", status.SerializeToString()),)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExistsError),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.ABORTED, AbortedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
    ],
)
def test_status_codes_map_to_subclasses(code: grpc.StatusCode, cls: type[TaskerError]) -> None:
    err = from_rpc_error(FakeRpcError(code, "boom"))
    assert type(err) is cls
    assert isinstance(err, TaskerError)
    assert err.code == code
    assert err.message == "boom"
    assert err.reason == ""
    assert err.metadata == {}
    assert err.field_violations == []


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN],
)
def test_other_codes_are_the_root_class(code: grpc.StatusCode) -> None:
    err = from_rpc_error(FakeRpcError(code, "nope"))
    assert type(err) is TaskerError
    assert err.code == code


def test_error_info_and_bad_request_are_decoded() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="TEMPLATE_INVALID", domain="tasker.dev", metadata={"namespace": "billing"}
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="step_templates[0].name",
                                                        description="is required"),
            error_details_pb2.BadRequest.FieldViolation(field="version",
                                                        description="must be semver"),
        ]
    )
    trailer = _status_trailer(grpc.StatusCode.INVALID_ARGUMENT, "template is invalid", info, bad)
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "ignored", trailer))
    assert isinstance(err, InvalidArgumentError)
    assert err.reason == "TEMPLATE_INVALID"
    assert err.metadata == {"namespace": "billing"}
    assert err.field_violations == [
        FieldViolation("step_templates[0].name", "is required"),
        FieldViolation("version", "must be semver"),
    ]
    assert err.message == "template is invalid"
    assert "step_templates[0].name: is required" in str(err)


def test_retry_info_is_decoded() -> None:
    delay = duration_pb2.Duration(seconds=2, nanos=5 * 10**8)
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    trailer = _status_trailer(grpc.StatusCode.UNAVAILABLE, "busy", retry)
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "busy", trailer))
    assert err.retry_delay == pytest.approx(2.5)


def test_aborted_carries_last_sequence_metadata() -> None:
    info = error_details_pb2.ErrorInfo(reason="WATCH_LAGGING", metadata={"last_sequence": "41"})
    trailer = _status_trailer(grpc.StatusCode.ABORTED, "fell behind", info)
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.ABORTED, "fell behind", trailer))
    assert isinstance(err, AbortedError)
    assert err.metadata["last_sequence"] == "41"


def test_garbled_status_trailer_keeps_code_and_message() -> None:
    trailer = (("grpc-status-details-bin", b"\xff\x00not a proto"),)
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "no task 9", trailer))
    assert isinstance(err, NotFoundError)
    assert err.message == "no task 9"


def test_other_trailing_metadata_is_ignored() -> None:
    trailer = (("x-request-id", "abc"), ("grpc-status-details-bin", "not-bytes"))
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", trailer))
    assert isinstance(err, NotFoundError)
    assert err.reason == ""


# --- handler-side classification ---------------------------------------------------------------


def test_handler_error_tree() -> None:
    assert issubclass(tasker.RetryableError, tasker.HandlerError)
    assert issubclass(tasker.PermanentError, tasker.HandlerError)
    assert tasker.BusinessLogicError is tasker.ManualInterventionError
    assert issubclass(tasker.HandlerError, TaskerError)


def test_retryable_is_delayed_with_retry_after() -> None:
    err = step_error_from_exception(tasker.RetryableError("rate limited", retry_after=1.5,
                                                          metadata={"limit": 10}))
    assert err.error_class == resources_pb2.ERROR_CLASS_DELAYED
    assert err.error_type == "RetryableError"
    assert err.message == "rate limited"
    assert err.retry_after.seconds == 1 and err.retry_after.nanos == 5 * 10**8
    assert err.metadata["limit"] == 10


def test_retryable_immediate_is_transient() -> None:
    err = step_error_from_exception(tasker.RetryableError("blip", immediate=True))
    assert err.error_class == resources_pb2.ERROR_CLASS_TRANSIENT
    assert not err.HasField("retry_after")


def test_negative_retry_after_is_rejected() -> None:
    with pytest.raises(ValueError):
        tasker.RetryableError("x", retry_after=-1)


def test_permanent_and_business_logic() -> None:
    class PaymentDeclined(tasker.PermanentError):
        pass

    perm = step_error_from_exception(PaymentDeclined("card declined"))
    assert perm.error_class == resources_pb2.ERROR_CLASS_PERMANENT
    assert perm.error_type == "PaymentDeclined"
    manual = step_error_from_exception(tasker.BusinessLogicError("over credit limit"))
    assert manual.error_class == resources_pb2.ERROR_CLASS_BUSINESS_LOGIC
    assert manual.error_type == "ManualInterventionError"


def test_unclassified_exception_is_delayed_with_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        err = step_error_from_exception(exc)
    assert err.error_class == resources_pb2.ERROR_CLASS_DELAYED
    assert err.error_type == "KeyError"
    assert "Traceback" in err.backtrace and "KeyError" in err.backtrace


def test_long_text_is_truncated_to_the_proto_limits() -> None:
    err = step_error_from_exception(ValueError("x" * 100_000))
    assert len(err.message.encode()) <= 16 * 1024
    assert len(err.backtrace.encode()) <= 64 * 1024


def test_non_json_metadata_does_not_crash() -> None:
    err = step_error_from_exception(tasker.PermanentError("x", metadata={"o": object()}))
    assert "metadata_error" in err.metadata
