"""Requests that do not decode are bad input (INVALID_ARGUMENT), not the server's failure.

grpc.aio runs a method's ``request_deserializer`` before its handler, and an exception raised
there ends the call UNKNOWN with the decoder's own text on the wire: truncated or garbage bytes,
invalid UTF-8 in a string field, messages nested past protobuf's recursion limit (a ``Struct``
context nested about 33 levels). :class:`DecodingInterceptor` swaps each handler's deserializer
for one that catches the decoder's error and returns an :class:`Undecodable` marker instead; the
wrapped behaviour turns the marker into :class:`~tasker_server.domain.errors.InvalidArgument`,
raised inside the error interceptor so that the one status map applies. For handlers that read a
request stream, each frame is checked as the handler pulls it.

Requests that decode then meet the string rules of :mod:`tasker_server.api.strings` (no NUL,
column-sized fields), checked here once for every RPC.

Place it *after* ``ErrorInterceptor`` in the server's interceptor list (innermost): its refusal
must be raised inside the error interceptor's wrapper.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from tasker_server.api.interceptors import wrap_handler
from tasker_server.api.strings import check_strings
from tasker_server.domain import errors

__all__ = ["DecodingInterceptor", "Undecodable", "undecodable_error"]

Deserializer = Callable[[bytes], Any]
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Stands in for a request message whose bytes did not decode."""

    message_type: str
    size: int


def undecodable_error(marker: Undecodable) -> errors.InvalidArgument:
    # The decoder's text is not echoed: it says nothing a client can act on and may carry input.
    return errors.InvalidArgument(
        f"request does not decode as {marker.message_type} ({marker.size} bytes): not a valid "
        "protobuf encoding, a string field holds invalid UTF-8, or messages nest too deeply",
        [errors.FieldViolation("request", "does not decode")],
        reason="REQUEST_UNDECODABLE",
        metadata={"message_type": marker.message_type},
    )


def _message_type(deserializer: Deserializer) -> str:
    # Generated servicers pass ``SomeRequest.FromString``; its class names the message type.
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the request message"))


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None
    message_type = _message_type(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, ValueError, UnicodeDecodeError):
            return Undecodable(message_type, len(data))

    return deserialize


def _check(request: Any, *, strings: bool = True) -> Any:
    if isinstance(request, Undecodable):
        raise undecodable_error(request)
    if strings:
        check_strings(request)
    return request


async def _checked_frames(frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # The first frame (a worker's hello) must decode and meet the string rules, or the call
    # ends. Later frames belong to the stream's own protocol, which answers each bad one
    # (an Undecodable marker passes through) without ending the stream.
    first = True
    async for frame in frames:
        yield _check(frame) if first else frame
        first = False


def _checked(request: Any) -> Any:
    # Client-streaming handlers receive an async iterator of frames, the others one message.
    return _checked_frames(request) if hasattr(request, "__aiter__") else _check(request)


def _unary(inner: Handler) -> Handler:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await inner(_checked(request), context)

    return handler


def _stream(inner: Handler) -> Handler:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for item in inner(_checked(request), context):
            yield item

    return handler


def tolerant_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that never raises and behaviour that refuses markers."""
    wrapped = wrap_handler(handler, unary=_unary, stream=_stream)
    # Method handlers are named tuples: only the deserializer changes.
    return wrapped._replace(request_deserializer=_tolerant(handler.request_deserializer))


class DecodingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Undecodable requests (any RPC, any frame of a request stream) end INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return tolerant_handler(handler)
