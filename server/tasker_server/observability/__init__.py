"""Observability: Prometheus metrics (``metrics``) and OpenTelemetry tracing plus the per-RPC
task context of logs and spans (``tracing``). The event catalogue is docs/events.md."""

from .metrics import Metrics
from .tracing import TaskContextInterceptor, configure_tracing, server_interceptors

__all__ = ["Metrics", "TaskContextInterceptor", "configure_tracing", "server_interceptors"]
