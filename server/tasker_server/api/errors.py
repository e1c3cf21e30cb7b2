"""The one place where errors become gRPC statuses (AIP-193).

Domain errors map to a status code by class; each answer carries exactly one
``google.rpc.ErrorInfo`` (domain ``tasker.dev``, the error's reason, its metadata) and, for
INVALID_ARGUMENT, a ``google.rpc.BadRequest`` with one field violation per problem. Anything
unexpected is logged with its traceback and answered as a plain INTERNAL: driver or stack text
never reaches the wire.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tasker_server.domain import errors as domain

__all__ = ["ERROR_DOMAIN", "STATUS_BY_ERROR", "status_for"]

log = logging.getLogger(__name__)

ERROR_DOMAIN = "tasker.dev"

STATUS_BY_ERROR: tuple[tuple[type[domain.TaskerError], grpc.StatusCode], ...] = (
    (domain.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (domain.NotFound, grpc.StatusCode.NOT_FOUND),
    (domain.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (domain.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (domain.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (domain.Aborted, grpc.StatusCode.ABORTED),
    (domain.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (domain.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (domain.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (domain.Unavailable, grpc.StatusCode.UNAVAILABLE),
)


def _code_of(exc: domain.TaskerError) -> grpc.StatusCode:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Returns (code, message, trailing metadata with grpc-status-details-bin) for an error."""
    if isinstance(exc, domain.TaskerError):
        code = _code_of(exc)
        message = str(exc)
        info = error_details_pb2.ErrorInfo(
            reason=exc.reason,
            domain=ERROR_DOMAIN,
            metadata={k: str(v) for k, v in exc.metadata.items()},
        )
        details = [_pack(info)]
        if isinstance(exc, domain.InvalidArgument) and exc.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
            details.append(_pack(bad))
    else:
        log.error("unexpected error while handling an RPC", exc_info=exc)
        code = grpc.StatusCode.INTERNAL
        message = "internal error; the server log has the details"
        details = [_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))]
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return code, message, (("grpc-status-details-bin", status.SerializeToString()),)
