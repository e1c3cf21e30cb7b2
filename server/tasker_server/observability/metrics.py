"""Prometheus metrics, served as text on ``metrics_listen`` (off when empty).

Everything about work done is derived in one place, :meth:`Metrics.on_events`, from the events
each commit of this replica wrote (``Orchestrator.subscribe``): a replica counts what it
committed, so summing a counter over replicas counts every event exactly once. Gauges come from
memory: worker streams, the connection pool, and the ready-queue depth per namespace (which the
sweeper refreshes every few seconds with one ``COUNT … GROUP BY`` over the ready partial index).
Labels are bounded: ``namespace``, ``state``, ``error_class`` (and the fixed values of ``kind``),
never task or step ids.

Every metric lives in the instance's own registry, so several servers in one process (tests)
never share counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tasker_server.domain.retry import ErrorClass
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.store.journal import ILLEGAL_TRANSITIONS
from tasker_server.store.stats import pool_usage

__all__ = ["Metrics"]

log = logging.getLogger(__name__)

_TERMINAL = {
    "task.completed": "complete",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
    "task.resolved_manually": "resolved_manually",
}
# Events that record a failed attempt (each carries metadata.error_class).
_ATTEMPT_FAILURES = ("step.retrying", "step.failed", "step.blocked", "step.skipped")
# error_type values that mean "ran out of time" (worker-side timeout; lease expiry).
_TIMEOUT_TYPES = ("StepTimeout", "LeaseExpired")
_ERROR_CLASSES = {c.value for c in ErrorClass}
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _ns(event: dict[str, Any]) -> str:
    return str(event.get("namespace") or "")


def _metadata(event: dict[str, Any]) -> dict[str, Any]:
    payload = event.get("payload") or {}
    meta = payload.get("metadata") if isinstance(payload, dict) else None
    return meta if isinstance(meta, dict) else {}


class _IllegalTransitions(Collector):
    """``tasker_illegal_transitions_total``: transitions written that the table does not allow.

    Read from the store's process-wide count at scrape time (the store has no registry); it
    should stay at zero, and any sample names the edge to fix. Labels are bounded: states and
    events are enums."""

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "tasker_illegal_transitions",
            "State transitions written that are not edges of the transition table (a bug).",
            labels=["entity", "from_state", "to_state", "event"],
        )
        for labels, count in list(ILLEGAL_TRANSITIONS.items()):
            family.add_metric(list(labels), count)
        yield family


class Metrics:
    """The server's metrics. ``attach(orchestrator)`` once; ``start(listen)`` serves them over
    HTTP."""

    def __init__(self, gauge_interval: float = 1.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks_started = Counter(
            "tasker_tasks_started", "Tasks admitted (task.started).", ["namespace"], registry=r
        )
        self.tasks_finished = Counter(
            "tasker_tasks_finished",
            "Tasks that reached a terminal state.",
            ["namespace", "state"],
            registry=r,
        )
        self.task_duration = Histogram(
            "tasker_task_duration_seconds",
            "Start-to-completion time of completed tasks.",
            ["namespace"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.steps_completed = Counter(
            "tasker_steps_completed", "Step attempts that succeeded.", ["namespace"], registry=r
        )
        self.step_duration = Histogram(
            "tasker_step_duration_seconds",
            "Handler execution time of successful steps, as reported by workers.",
            ["namespace"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.step_failures = Counter(
            "tasker_step_failures",
            "Failed step attempts by error class (retried, failed, blocked or skipped after).",
            ["namespace", "error_class"],
            registry=r,
        )
        self.step_timeouts = Counter(
            "tasker_step_timeouts",
            "Failed attempts that ran out of time (kind: StepTimeout, LeaseExpired).",
            ["namespace", "kind"],
            registry=r,
        )
        self.step_retries = Counter(
            "tasker_step_retries", "Step retries scheduled.", ["namespace"], registry=r
        )
        self.breaker_transitions = Counter(
            "tasker_circuit_breaker_transitions",
            "Circuit breaker state changes (circuit_breaker.* events).",
            ["state"],
            registry=r,
        )
        self.events_published = Counter(
            "tasker_events_published", "Events committed by this replica.", registry=r
        )
        self.event_latency = Histogram(
            "tasker_event_publish_latency_seconds",
            "Time from an event's commit stamp to its delivery to in-process subscribers.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.tick_seconds = Histogram(
            "tasker_engine_tick_seconds",
            "Duration of one engine tick: outcomes, dependency resolution, admission, claims.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.tick_errors = Counter(
            "tasker_engine_tick_errors", "Engine ticks that failed and were retried.", registry=r
        )
        self.ready_steps = Gauge(
            "tasker_ready_steps",
            "Steps ready to be claimed (the ready queue), per namespace.",
            ["namespace"],
            registry=r,
        )
        self.worker_capacity = Gauge(
            "tasker_worker_capacity",
            "Capacity of the workers connected to this replica (a worker counts in each of its "
            "namespaces).",
            ["namespace"],
            registry=r,
        )
        self.worker_in_flight = Gauge(
            "tasker_worker_in_flight",
            "Leases held by the workers connected to this replica.",
            ["namespace"],
            registry=r,
        )
        self.workers_connected = Gauge(
            "tasker_workers_connected",
            "Worker streams open on this replica.",
            ["namespace"],
            registry=r,
        )
        self.pool_checked_out = Gauge(
            "tasker_db_pool_checked_out", "Database connections in use.", registry=r
        )
        self.pool_limit = Gauge(
            "tasker_db_pool_limit",
            "Database connections the pool may open (pool size + overflow).",
            registry=r,
        )
        r.register(_IllegalTransitions())
        self.gauge_interval = gauge_interval
        self._orchestrator: Orchestrator | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: Any = None
        self.port = 0

    # -- wiring ---------------------------------------------------------------------------------

    def attach(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator
        orchestrator.subscribe(self.on_events)
        orchestrator.tick_observers.append(self.on_tick)

    def start(self, listen: str) -> None:
        """Serves ``/metrics`` on ``listen`` (HOST:PORT, port 0 picks one) and starts the gauge
        refresher. The HTTP server is prometheus_client's, on its own thread: it only reads the
        registry, which is thread-safe."""
        host, _, port = listen.rpartition(":")
        self._http, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self.port = int(self._http.server_address[1])
        self._task = asyncio.create_task(self._refresh_loop(), name="tasker-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._http is not None:
            http, self._http = self._http, None
            await asyncio.to_thread(http.shutdown)
            http.server_close()

    # -- derived from committed events ----------------------------------------------------------

    def on_events(self, events: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        for event in events:
            name = str(event.get("name") or "")
            ns = _ns(event)
            meta = _metadata(event)
            self.events_published.inc()
            stamp = event.get("create_time")
            if isinstance(stamp, datetime):
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                self.event_latency.observe(max(0.0, (now - stamp).total_seconds()))
            if name == "task.started":
                self.tasks_started.labels(ns).inc()
            elif name in _TERMINAL:
                self.tasks_finished.labels(ns, _TERMINAL[name]).inc()
                if name == "task.completed" and "execution_time_ms" in meta:
                    self.task_duration.labels(ns).observe(float(meta["execution_time_ms"]) / 1000)
            elif name == "step.completed":
                self.steps_completed.labels(ns).inc()
                if "execution_time_ms" in meta:
                    self.step_duration.labels(ns).observe(float(meta["execution_time_ms"]) / 1000)
            elif name in _ATTEMPT_FAILURES and "error_class" in meta:
                error_class = str(meta["error_class"])
                if error_class not in _ERROR_CLASSES:
                    error_class = "unknown"
                self.step_failures.labels(ns, error_class).inc()
                if meta.get("error_type") in _TIMEOUT_TYPES:
                    self.step_timeouts.labels(ns, str(meta["error_type"])).inc()
                if name == "step.retrying":
                    self.step_retries.labels(ns).inc()
            elif name.startswith("circuit_breaker."):
                state = name.removeprefix("circuit_breaker.")
                self.breaker_transitions.labels(state if state.isidentifier() else "other").inc()

    def on_tick(self, seconds: float, failed: bool) -> None:
        self.tick_seconds.observe(seconds)
        if failed:
            self.tick_errors.inc()

    # -- gauges ---------------------------------------------------------------------------------

    def refresh_memory_gauges(self) -> None:
        orchestrator = self._orchestrator
        if orchestrator is None:
            return
        capacity: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        connected: dict[str, int] = {}
        for stream in list(orchestrator.streams.values()):
            for ns in stream.namespaces:
                capacity[ns] = capacity.get(ns, 0) + stream.capacity
                in_flight[ns] = in_flight.get(ns, 0) + orchestrator.leases.count(stream)
                connected[ns] = connected.get(ns, 0) + 1
        for gauge, values in (
            (self.worker_capacity, capacity),
            (self.worker_in_flight, in_flight),
            (self.workers_connected, connected),
        ):
            _set_all(gauge, values)
        _set_all(self.ready_steps, dict(orchestrator.ready_depth))
        usage = pool_usage(orchestrator.db)
        self.pool_checked_out.set(usage.checked_out)
        self.pool_limit.set(usage.limit)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                self.refresh_memory_gauges()
            except Exception as exc:  # never let a gauge stop the loop
                log.debug("metrics refresh failed: %s", type(exc).__name__)
            await asyncio.sleep(self.gauge_interval)


def _set_all(gauge: Gauge, values: dict[str, int]) -> None:
    """Sets one child per namespace; namespaces seen before and absent now read 0 (namespaces
    are few, so the series stay bounded)."""
    known = {labels[0] for labels in list(gauge._metrics)}
    for ns in known - values.keys():
        gauge.labels(ns).set(0)
    for ns, value in values.items():
        gauge.labels(ns).set(value)
