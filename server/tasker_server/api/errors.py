"""The one place where errors become gRPC statuses (AIP-193).

Domain errors map to a status code by class; each answer carries exactly one
``google.rpc.ErrorInfo`` (domain ``tasker.dev``, the error's reason, its metadata) and, for
INVALID_ARGUMENT, a ``google.rpc.BadRequest`` with one field violation per problem. Anything
unexpected is logged with its traceback and answered as a plain INTERNAL: driver or stack text
never reaches the wire.

Statuses travel in HTTP/2 trailers, which clients refuse past a few KiB (they would see
RESOURCE_EXHAUSTED instead of the real code), and error texts often quote input. So every text
is clipped here, once: the message, at most ``MAX_VIOLATIONS`` field violations (the rest are
counted in one more), at most ``MAX_METADATA`` ErrorInfo entries. The worst case stays under
``MAX_TRAILER_BYTES`` whatever the input.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tasker_server.domain import errors as domain

__all__ = [
    "ERROR_DOMAIN",
    "MAX_TRAILER_BYTES",
    "STATUS_BY_ERROR",
    "clip",
    "code_for",
    "status_for",
]

log = logging.getLogger(__name__)

ERROR_DOMAIN = "tasker.dev"

# Bounds of what one error puts on the wire (UTF-8 bytes before encoding).
MAX_MESSAGE = 320
MAX_VIOLATIONS = 8
MAX_FIELD = 96
MAX_DESCRIPTION = 128
MAX_METADATA = 8
MAX_METADATA_KEY = 32
MAX_METADATA_VALUE = 96
# grpc-message is percent-encoded (x3 at worst), grpc-status-details-bin base64 (x4/3).
MAX_TRAILER_BYTES = 6 * 1024


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked with an ellipsis when cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def _violations(exc: domain.InvalidArgument) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out = [
        error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field, MAX_FIELD), description=clip(v.description, MAX_DESCRIPTION)
        )
        for v in exc.violations[:MAX_VIOLATIONS]
    ]
    if len(exc.violations) > MAX_VIOLATIONS:
        more = len(exc.violations) - MAX_VIOLATIONS
        out.append(
            error_details_pb2.BadRequest.FieldViolation(
                description=f"... and {more} more problems (fix these and ask again)"
            )
        )
    return out


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


def code_for(exc: domain.TaskerError) -> grpc.StatusCode:
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
        code = code_for(exc)
        message = clip(str(exc), MAX_MESSAGE)
        metadata = list(exc.metadata.items())[:MAX_METADATA]
        info = error_details_pb2.ErrorInfo(
            reason=clip(exc.reason, MAX_METADATA_KEY * 2),
            domain=ERROR_DOMAIN,
            metadata={
                clip(k, MAX_METADATA_KEY): clip(str(v), MAX_METADATA_VALUE) for k, v in metadata
            },
        )
        details = [_pack(info)]
        if isinstance(exc, domain.InvalidArgument) and exc.violations:
            details.append(_pack(error_details_pb2.BadRequest(field_violations=_violations(exc))))
    else:
        log.error("unexpected error while handling an RPC", exc_info=exc)
        code = grpc.StatusCode.INTERNAL
        message = "internal error; the server log has the details"
        details = [_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))]
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return code, message, (("grpc-status-details-bin", status.SerializeToString()),)
