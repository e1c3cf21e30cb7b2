"""OpenTelemetry for the server, and the task context of each RPC.

- :func:`configure_tracing`: installs an SDK ``TracerProvider`` with an exporter chosen by the
  standard ``OTEL_*`` variables (``OTEL_TRACES_EXPORTER``=``otlp``|``console``|``none``,
  ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``,
  ``OTEL_SDK_DISABLED``). Nothing is installed when no exporter is asked for or when the
  application already installed an SDK provider: tracing stays the API's no-op.
- :func:`server_interceptors`: the gRPC aio server interceptor of opentelemetry-instrumentation-
  grpc (worker and watch streams, health and reflection excluded: a span per long-lived stream says
  nothing) followed by :class:`TaskContextInterceptor`.
- :class:`TaskContextInterceptor`: for every RPC about one task (its request has ``task_id`` or
  ``correlation_id``), binds the task id and correlation id to every log line written while
  handling it (``logs.bind``) and sets them as attributes of the RPC's server span.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from tasker_server.api import validation
from tasker_server.api.interceptors import wrap_handler
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.logs import bind
from tasker_server.store.stats import task_correlation_id

__all__ = ["TaskContextInterceptor", "configure_tracing", "server_interceptors"]

log = logging.getLogger(__name__)

# Long-lived streams are not traced: a span per stream says nothing, and the instrumentation's
# stream wrapper logs "Failed to detach context" whenever a client drops a watch stream (the
# async generator is finalised in another context).
_UNTRACED = filters.any_of(
    filters.method_name("Connect"),
    filters.method_name("WatchTask"),
    filters.method_name("WatchEvents"),
    filters.service_prefix("grpc.health"),
    filters.service_prefix("grpc.reflection"),
)


def configure_tracing() -> bool:
    """Installs an SDK TracerProvider per OTEL_* when an exporter is asked for; True if it did."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    wanted = [
        e.strip().lower()
        for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if e.strip() and e.strip().lower() != "none"
    ]
    if not wanted and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        wanted = ["otlp"]
    if not wanted:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return False  # the embedding application configured tracing itself
    provider = TracerProvider(resource=Resource.create({"service.name": "tasker-server"}))
    for name in wanted:
        exporter: SpanExporter | None = None
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored", name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def _otlp_exporter() -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    module = (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter"
        if protocol.startswith("http")
        else "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    )
    try:
        exporter_module = __import__(module, fromlist=["OTLPSpanExporter"])
    except ImportError:
        log.warning(
            "OTEL_TRACES_EXPORTER=otlp needs the opentelemetry-exporter-otlp package; "
            "traces are not exported"
        )
        return None
    return exporter_module.OTLPSpanExporter()


def server_interceptors(
    orchestrator: Orchestrator, after_tracing: Sequence[grpc.aio.ServerInterceptor] = ()
) -> list[grpc.aio.ServerInterceptor]:
    """The OpenTelemetry server interceptor, ``after_tracing`` (authentication: refused calls are
    traced, yet refused before the task-context lookup reads the database), then the
    task-context one (outermost first)."""
    return [
        aio_server_interceptor(filter_=filters.negate(_UNTRACED)),  # type: ignore[no-untyped-call]
        *after_tracing,
        TaskContextInterceptor(orchestrator),
    ]


class _CorrelationCache:
    """task id -> correlation id, learned from committed events (bounded LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, task_id: str) -> str | None:
        value = self._items.get(task_id)
        if value is not None:
            self._items.move_to_end(task_id)
        return value

    def put(self, task_id: str, correlation_id: str) -> None:
        self._items[task_id] = correlation_id
        self._items.move_to_end(task_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def on_events(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            if event.get("task_id") is not None:
                self.put(str(event["task_id"]), str(event.get("correlation_id") or ""))


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]


class TaskContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Binds task_id / correlation_id of single-task RPCs to logs and the current span."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.cache = _CorrelationCache()
        orchestrator.subscribe(self.cache.on_events)

    async def _ids(self, request: Any) -> tuple[str, str]:
        task_id = str(getattr(request, "task_id", "") or "")
        correlation = str(getattr(request, "correlation_id", "") or "")[:255]
        try:
            number = validation.task_id(task_id) if task_id else None
        except Exception:  # not a task id: no task to bind (nor to cache, whatever its size)
            task_id, number = "", None
        if number is not None and not correlation:
            cached = self.cache.get(task_id)
            if cached is None:
                try:
                    async with self.orchestrator.db.session(read_only=True) as s:
                        cached = await task_correlation_id(s, number) or ""
                except Exception:  # logging context must never fail the RPC
                    cached = ""
                self.cache.put(task_id, cached)
            correlation = cached or ""
        if task_id or correlation:
            span = trace.get_current_span()
            if task_id:
                span.set_attribute("tasker.task_id", task_id)
            if correlation:
                span.set_attribute("tasker.correlation_id", correlation)
        return task_id, correlation

    def _unary(self, inner: Handler) -> Handler:
        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            task_id, correlation = await self._ids(request)
            with bind(correlation_id=correlation, task_id=task_id):
                return await inner(request, context)

        return handler

    def _stream(self, inner: Handler) -> Handler:
        async def handler(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            task_id, correlation = await self._ids(request)
            with bind(correlation_id=correlation, task_id=task_id):
                async for item in inner(request, context):
                    yield item

        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        # Client streams carry many tasks (worker Connect): no single context to bind.
        return wrap_handler(handler, unary=self._unary, stream=self._stream, client_streams=False)
