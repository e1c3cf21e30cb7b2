"""Metrics after a known run, alert rules against a real scrape, a trace across client, server and
worker, the task context of logs, and health while the database is down."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tasker import Client, PermanentError, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tasker_server.app import App
from tasker_server.config import load_settings
from tasker_server.logs import correlation_id_var, task_id_var
from tasker_server.observability.tracing import TaskContextInterceptor
from tests.support.postgres import PostgresCluster, find_bin_dir
from tests.support.promql import (
    PROMETHEUS_SERIES,
    alert_rules,
    dashboard_exprs,
    exposed_series,
    metric_names,
)
from tests.support.server import FAST_TIMERS, RunningServer, ServerProcess

NS = "obs"


@pytest_asyncio.fixture
async def metered(db_url: str) -> AsyncIterator[App]:
    settings = load_settings(
        environ={},
        overrides={
            "listen": "127.0.0.1:0",
            "database_url": db_url,
            "metrics_listen": "127.0.0.1:0",
            **FAST_TIMERS,
        },
    )
    app = await App.start(settings)
    try:
        yield app
    finally:
        await app.stop(grace=0.5)


async def _scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    return await asyncio.to_thread(get)


def _samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def _sum(ctx: StepContext) -> dict[str, Any]:
    return {}


async def _boom(ctx: StepContext) -> dict[str, Any]:
    raise PermanentError("card declined", error_type="Declined")


async def test_metrics_count_a_known_run_and_alerts_reference_only_exported_metrics(
    metered: App,
) -> None:
    assert metered.metrics is not None
    address = f"127.0.0.1:{metered.port}"
    diamond = (
        WorkflowBuilder("diamond", NS)
        .with_linear_steps(["a"], handler="sum")
        .with_diamond_pattern(["b", "c"], convergence="d", handler="sum")
        .build()
    )
    failing = WorkflowBuilder("failing", NS).with_linear_steps(["only"], handler="boom").build()
    worker = Worker(address, [NS], capacity=8)
    worker.register("sum", _sum)
    worker.register("boom", _boom)
    run = asyncio.create_task(worker.run())
    try:
        async with await Client.connect(address, timeout=10) as client:
            await client.register_template(diamond)
            await client.register_template(failing)
            await worker.wait_connected(10)
            ids = [(await client.create_task(NS, "diamond", {})).task_id for _ in range(3)]
            ids.append((await client.create_task(NS, "failing", {})).task_id)
            states = [(await client.wait_for_task(i, timeout=30)).state for i in ids]
        assert states == ["complete", "complete", "complete", "failed"]
        metered.metrics.refresh_memory_gauges()  # instead of waiting for the 1 s refresher
        body = await _scrape(metered.metrics.port)
    finally:
        await worker.shutdown(drain_timeout=2)
        await run

    samples = _samples(body)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("tasker_tasks_started_total", namespace=NS) == 4
    assert value("tasker_tasks_finished_total", namespace=NS, state="complete") == 3
    assert value("tasker_tasks_finished_total", namespace=NS, state="failed") == 1
    assert value("tasker_task_duration_seconds_count", namespace=NS) == 3
    assert value("tasker_steps_completed_total", namespace=NS) == 12
    assert value("tasker_step_duration_seconds_count", namespace=NS) == 12
    assert value("tasker_step_failures_total", namespace=NS, error_class="permanent") == 1
    assert value("tasker_step_retries_total", namespace=NS) == 0
    assert value("tasker_worker_capacity", namespace=NS) == 8
    assert value("tasker_workers_connected", namespace=NS) == 1
    assert value("tasker_db_pool_limit") > 0
    assert value("tasker_engine_tick_seconds_count") > 0
    async with metered.db.session(read_only=True) as s:
        events = (await s.execute(text("SELECT count(*) FROM events"))).scalar_one()
    assert value("tasker_events_published_total") == events
    assert value("tasker_event_publish_latency_seconds_count") == events

    exported = exposed_series(list(text_string_to_metric_families(body))) | PROMETHEUS_SERIES
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"alert {rule['alert']} uses metrics not exported: {unknown}"
    for expr in dashboard_exprs():
        assert not metric_names(expr) - exported, expr


# -- tracing -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later tests' spans are dropped


async def test_a_trace_started_by_the_client_holds_the_server_and_worker_spans(
    server: RunningServer, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    template = WorkflowBuilder("traced", NS).with_linear_steps(["a", "b"], handler="sum").build()
    worker = Worker(server.address, [NS], capacity=2)
    worker.register("sum", _sum)
    run = asyncio.create_task(worker.run())
    tracer = trace.get_tracer("tests")
    try:
        async with await Client.connect(server.address, timeout=10) as client:
            await client.register_template(template)
            await worker.wait_connected(10)
            with tracer.start_as_current_span("checkout") as root:
                task = await client.create_task(NS, "traced", {}, correlation_id="order-42")
            await client.wait_for_task(task.task_id, timeout=20)
    finally:
        await worker.shutdown(drain_timeout=2)
        await run
    trace_id = root.get_span_context().trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_kind = {(s.name, s.kind) for s in in_trace}
    method = "/tasker.v1.TaskService/CreateTask"
    assert (method, trace.SpanKind.CLIENT) in by_kind
    assert (method, trace.SpanKind.SERVER) in by_kind
    server_span = next(s for s in in_trace if s.kind == trace.SpanKind.SERVER)
    assert server_span.attributes is not None
    assert server_span.attributes.get("tasker.correlation_id") == "order-42"
    handler_spans = [s for s in in_trace if s.name == "tasker.step sum"]
    assert len(handler_spans) == 2
    for s in handler_spans:
        assert s.attributes is not None
        assert s.attributes.get("tasker.correlation_id") == "order-42"


# -- log context ---------------------------------------------------------------------------------


class _FakeOrchestrator:
    db: Any = None

    def subscribe(self, callback: Any) -> None:
        pass


class _Request:
    task_id = "7"
    correlation_id = ""


async def test_log_lines_while_handling_a_task_carry_its_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    interceptor = TaskContextInterceptor(_FakeOrchestrator())  # type: ignore[arg-type]
    interceptor.cache.on_events([{"task_id": 7, "correlation_id": "order-7"}])
    seen: list[tuple[str, str]] = []

    async def handler(request: Any, context: Any) -> str:
        seen.append((correlation_id_var.get(), task_id_var.get()))
        logging.getLogger("tasker_server.test").warning("handling")
        return "ok"

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(handler)

    wrapped = await interceptor.intercept_service(continuation, None)  # type: ignore[arg-type]
    assert wrapped is not None
    assert await wrapped.unary_unary(_Request(), None) == "ok"
    assert seen == [("order-7", "7")]
    assert correlation_id_var.get() == ""  # unbound after the RPC


# -- health --------------------------------------------------------------------------------------


def _health(address: str) -> int:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tasker.v1.TaskService"), timeout=3
            )
        return int(reply.status)
    except grpc.RpcError:
        return -1


def _wait_health(address: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _health(address) == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"health did not become {status} within {timeout}s")


def _pg_ctl(cluster: PostgresCluster, *args: str) -> None:
    subprocess.run(
        [*cluster._as_postgres, str(cluster.bin_dir / "pg_ctl"), "-D", str(cluster.dir / "data"),
         *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_health_is_not_serving_while_the_database_is_down() -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found")
    cluster = PostgresCluster(bin_dir)  # private: this test stops and restarts it
    cluster.start()
    proc: ServerProcess | None = None
    restarted = False
    try:

        async def create_db() -> None:
            conn = await asyncpg.connect(cluster.url("postgres"))
            try:
                await conn.execute("CREATE DATABASE tasker")
            finally:
                await conn.close()

        asyncio.run(create_db())
        proc = ServerProcess(cluster.url("tasker")).start()
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert _health(proc.address) == serving
        _pg_ctl(cluster, "stop", "-m", "fast", "-w")
        _wait_health(proc.address, not_serving, timeout=15)
        options = (
            f"-p {cluster.port} -k {cluster.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        )
        _pg_ctl(cluster, "start", "-w", "-l", str(cluster.dir / "restart.log"), "-o", options)
        restarted = True
        _wait_health(proc.address, serving, timeout=20)
    finally:
        if proc is not None:
            proc.stop()
        if restarted:
            _pg_ctl(cluster, "stop", "-m", "fast", "-w")
        cluster.stop()
