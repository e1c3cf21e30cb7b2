"""Server interceptors: every handler's errors go through ``errors.status_for`` exactly once;
optional authentication and authorization (``access_rules``) in front of every service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import grpc

from tasker_server.api.access_rules import RULES, NamespaceResolver, Rule, hello_namespaces
from tasker_server.api.credentials import CredentialSource, authenticate
from tasker_server.api.errors import status_for
from tasker_server.domain.access import Principal, check_permission
from tasker_server.domain.errors import PermissionDenied

__all__ = ["CALLER_IDENTITY", "AuthInterceptor", "ErrorInterceptor", "wrap_handler"]


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
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


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

# The authenticated identity of the call being handled (None with authentication off): set by
# AuthInterceptor before the handler runs, read where an identity binds something (a worker's
# leases).
CALLER_IDENTITY: ContextVar[str | None] = ContextVar("tasker_caller_identity", default=None)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call but health checks and reflection (bearer token, else client
    certificate) and authorizes it by its rule in ``access_rules.RULES``, before its handler
    runs: UNAUTHENTICATED / PERMISSION_DENIED through the same status map as handlers' errors.
    A request's ``actor`` field is then replaced by the authenticated identity (audit)."""

    def __init__(
        self,
        credentials: CredentialSource,
        resolver: NamespaceResolver,
        rules: Mapping[str, Rule] = RULES,
    ) -> None:
        self.credentials = credentials
        self.resolver = resolver
        self.rules = rules

    def _principal(self, metadata: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        return authenticate(self.credentials.current(), metadata, context.auth_context())

    def _rule(self, method: str) -> Rule:
        rule = self.rules.get(method)
        if rule is None:  # fail closed (the server does not start with such a method)
            raise PermissionDenied(f"{method} has no authorization rule; refused")
        return rule

    async def _authorize(self, principal: Principal, rule: Rule, request: Any) -> None:
        namespaces = await self.resolver.namespaces(rule.source, request)
        check_permission(principal, rule.permission, namespaces)
        if "actor" in request.DESCRIPTOR.fields_by_name:
            request.actor = principal.identity

    @staticmethod
    async def _checked_requests(
        principal: Principal, rule: Rule, requests: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """``requests``, the first one (the hello) checked before the handler sees it."""
        first = True
        async for message in requests:
            if first:
                first = False
                check_permission(principal, rule.permission, hello_namespaces(message))
            yield message

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_METHODS):
            return handler
        metadata = handler_call_details.invocation_metadata
        client_streams = bool(handler.request_streaming)

        async def admit(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            """The request to hand on (client streams: one checking the hello); a refusal ends
            the call here. The handler's own errors stay with the ErrorInterceptor."""
            try:
                principal = self._principal(metadata, context)
                CALLER_IDENTITY.set(principal.identity)
                rule = self._rule(method)
                if client_streams:
                    return self._checked_requests(principal, rule, request)
                await self._authorize(principal, rule, request)
                return request
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort(context, exc)  # raises AbortError
                raise

        def unary(inner: Handler) -> Handler:
            async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await inner(await admit(request, context), context)

            return checked

        def stream(inner: Handler) -> Handler:
            async def checked(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async for item in inner(await admit(request, context), context):
                    yield item

            return checked

        return wrap_handler(handler, unary=unary, stream=stream)
