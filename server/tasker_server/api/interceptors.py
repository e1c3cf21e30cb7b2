"""Server interceptors: every handler's errors go through ``errors.status_for`` exactly once;
optional bearer-token authentication in front of every service."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from tasker_server.api.errors import status_for
from tasker_server.domain.errors import Unauthenticated

__all__ = ["AuthInterceptor", "ErrorInterceptor", "wrap_handler"]


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    code, message, trailers = status_for(exc)
    await context.abort(code, message, trailing_metadata=trailers)


def _wrap_unary(
    inner: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await inner(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return handler


def _wrap_stream(
    inner: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
    async def handler(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return handler


Wrapper = Callable[[Any], Any]


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Wrapper,
    stream: Wrapper,
    client_streams: bool = True,
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped: ``unary`` for handlers that return one
    response, ``stream`` for those that yield responses (async generators). With
    ``client_streams=False`` handlers reading a request stream are left as they are."""
    deser, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), deser, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), deser, ser)
    if not client_streams:
        return handler
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), deser, ser)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), deser, ser)
    return handler


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps domain errors to statuses and hides unexpected ones behind INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, unary=_wrap_unary, stream=_wrap_stream)


# Probes and tooling that must work without credentials (load balancers, grpcurl discovery).
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer <token>`` with one of ``tokens`` on every call except
    health checks and reflection; others end UNAUTHENTICATED before their handler runs."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def _problem(self, metadata: Any) -> str | None:
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            return "this server requires a bearer token: send 'authorization: Bearer <token>'"
        scheme, _, token = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "the authorization metadata must be 'Bearer <token>'"
        given = token.strip().encode()
        # Every token is compared, in constant time each, so timing says nothing about them.
        accepted = [hmac.compare_digest(given, t) for t in self._tokens]
        return None if any(accepted) else "the bearer token is not accepted by this server"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_METHODS):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata)
        if problem is None:
            return handler
        error = Unauthenticated(problem)

        # The refusal goes through the same wrappers as every handler's errors (one status map).
        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            raise error

        async def refuse_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            raise error
            yield  # pragma: no cover - makes this an async generator

        return wrap_handler(
            handler,
            unary=lambda _: _wrap_unary(refuse),
            stream=lambda _: _wrap_stream(refuse_stream),
        )
