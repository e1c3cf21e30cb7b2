"""Wiring and lifecycle of one server process.

Start-up: logging → database (+ migrations) → orchestrator loops → templates from
``templates_dir`` → gRPC server (services, health, reflection). Shutdown (SIGTERM/SIGINT,
idempotent): health goes NOT_SERVING, the server stops accepting RPCs and gives in-flight ones
``shutdown_grace_seconds``, the orchestrator loops stop, the database pool closes.

The orchestrator's loops run under one task group. Each handles the failures it expects (a
failed tick is retried, a failed sweep logged); one that dies anyway takes the others down, and
the server stops with the error logged and exit status 1 rather than serve on without, say, a
tick loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tasker.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from tasker_server.api.access_rules import NamespaceResolver, missing_rules
from tasker_server.api.admin_service import AdminService
from tasker_server.api.credentials import CredentialSource
from tasker_server.api.decoding import DecodingInterceptor
from tasker_server.api.event_service import EventService
from tasker_server.api.interceptors import AuthInterceptor, ErrorInterceptor
from tasker_server.api.task_service import TaskService
from tasker_server.api.template_service import TemplateService
from tasker_server.api.watchers import Watchers
from tasker_server.api.worker_service import WorkerService
from tasker_server.config import Settings
from tasker_server.domain.errors import FailedPrecondition, TaskerError
from tasker_server.engine.commands import Commands
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.logs import configure_logging
from tasker_server.observability import Metrics, configure_tracing, server_interceptors
from tasker_server.store.db import Database
from tasker_server.store.migrate import upgrade

__all__ = ["App", "migrate_only", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    template_service_pb2.DESCRIPTOR.services_by_name["TemplateService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
)
HEALTH_INTERVAL_SECONDS = 2.0


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    key = Path(settings.tls_key_file).read_bytes()
    cert = Path(settings.tls_cert_file).read_bytes()
    if settings.tls_client_ca_file:  # mTLS: only clients with a certificate from this CA
        ca = Path(settings.tls_client_ca_file).read_bytes()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
    return grpc.ssl_server_credentials([(key, cert)])


def _template_files(directory: str) -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(Path(directory).glob("*.y*ml"))]


async def _until_cancelled(name: str, loop: Coroutine[Any, Any, None]) -> None:
    """Runs a loop that should end only by cancellation: one that returns is dead too."""
    await loop
    raise RuntimeError(f"the {name} loop returned")


class App:
    """A running server. ``await App.start(settings)``; ``await app.stop()``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database.from_url(settings.database_url)
        self.orchestrator = Orchestrator(self.db, settings)
        self.commands = Commands(self.orchestrator, settings.environment)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._health_task: asyncio.Task[None] | None = None
        self._loops: asyncio.Task[None] | None = None
        # The error of a loop that died; the server then stops and ``serve`` exits with 1.
        self.failure: BaseException | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        # Authorization (issue 11): on when an auth file or a tokens file is configured.
        self.credentials: CredentialSource | None = None
        if settings.auth_file or settings.auth_tokens_file:
            self.credentials = CredentialSource(settings.auth_file, settings.auth_tokens_file)
        # -- observability (issue 5) --
        self.metrics: Metrics | None = None
        if settings.metrics_listen:
            self.metrics = Metrics()
            self.metrics.attach(self.orchestrator)
        # -- end observability --

    @classmethod
    async def start(cls, settings: Settings) -> App:
        app = cls(settings)
        await app._start()
        return app

    async def _start(self) -> None:
        s = self.settings
        if s.migrate_on_start:
            await upgrade(self.db)
        await self.orchestrator.start()
        self._loops = asyncio.create_task(self._run_loops(), name="tasker-loops")
        await self._load_templates()
        auth: list[grpc.aio.ServerInterceptor] = []
        if self.credentials is not None:
            if missing_rules():  # fail closed at start rather than refuse these calls later
                raise FailedPrecondition(f"RPCs without an authorization rule: {missing_rules()}")
            auth = [AuthInterceptor(self.credentials, NamespaceResolver(self.db, s.limits()))]
        self.server = grpc.aio.server(
            # OpenTelemetry outermost, then (optional) authentication, then the task context of
            # logs/spans, then error mapping; innermost, undecodable requests become bad input.
            interceptors=[
                *server_interceptors(self.orchestrator, auth),
                ErrorInterceptor(),
                DecodingInterceptor(),
            ],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                # Let clients' HTTP/2 pings through without GOAWAY (workers keep streams open).
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        watchers = Watchers(
            s.max_watch_streams, s.max_watch_streams_per_client, tokens=bool(s.auth_tokens_file)
        )
        services: list[tuple[Callable[..., None], object]] = [
            (
                task_service_pb2_grpc.add_TaskServiceServicer_to_server,
                TaskService(self.commands, watchers),
            ),
            (
                template_service_pb2_grpc.add_TemplateServiceServicer_to_server,
                TemplateService(self.commands),
            ),
            (
                worker_service_pb2_grpc.add_WorkerServiceServicer_to_server,
                WorkerService(self.orchestrator),
            ),
            (
                admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
                AdminService(self.commands),
            ),
            (
                event_service_pb2_grpc.add_EventServiceServicer_to_server,
                EventService(self.orchestrator, watchers),
            ),
        ]
        for add, servicer in services:
            add(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        if s.tls_cert_file:
            self.port = self.server.add_secure_port(s.listen, _tls_credentials(s))
        else:
            self.port = self.server.add_insecure_port(s.listen)
        if self.metrics is not None:  # observability (issue 5)
            self.metrics.start(s.metrics_listen)
        # Health is known before the port opens, so no probe ever sees a service as NOT_FOUND,
        # and whoever sees SERVING can scrape the metrics port.
        await self._check_health()
        await self.server.start()
        self._health_task = asyncio.create_task(self._health_loop(), name="tasker-health")
        log.info(
            "tasker serving",
            extra={
                "listen": s.listen,
                "port": self.port,
                "database": self.db.display_url,
                "server_id": s.server_id,
                "metrics_port": self.metrics.port if self.metrics else None,
            },
        )

    async def _run_loops(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for name, loop in self.orchestrator.loops():
                    group.create_task(_until_cancelled(name, loop), name=f"tasker-{name}")
        except Exception as exc:  # an ExceptionGroup: the loops that died, with their errors
            self.failure = exc
            log.critical("a server loop died; stopping the server", exc_info=exc)
            self._stop_task = asyncio.create_task(self.stop(), name="tasker-stop")

    async def _load_templates(self) -> None:
        directory = self.settings.templates_dir
        if not directory:
            return
        for path, text in _template_files(directory):
            try:
                stored, created = await self.commands.register_template(text)
                log.info(
                    "template %s",
                    "registered" if created else "unchanged",
                    extra={
                        "file": str(path),
                        "template": f"{stored.namespace}/{stored.name}",
                        "version": stored.version,
                    },
                )
            except TaskerError as exc:
                log.error("template file rejected: %s", exc, extra={"file": str(path)})

    async def _check_health(self) -> None:
        ok = await self.db.ping()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok and not self._stopping
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # The overall status ("") goes last: each ``set`` awaits, and a probe that has seen ""
        # SERVING may ask for any named service next; it must not get NOT_FOUND.
        for name in (*SERVICE_NAMES, ""):
            await self.health.set(name, status)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            with contextlib.suppress(Exception):
                await self._check_health()

    def reload_auth(self) -> None:
        """Re-reads the auth files now (SIGHUP); a bad version is logged and the last kept."""
        if self.credentials is not None:
            self.credentials.reload()

    async def stop(self, grace: float | None = None) -> None:
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.orchestrator.shutting_down = True
        log.info("tasker shutting down")
        if self._health_task is not None:
            self._health_task.cancel()
        with contextlib.suppress(Exception):
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        if self.metrics is not None:  # observability (issue 5)
            await self.metrics.stop()
        if self._loops is not None and not self._loops.done():
            self._loops.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loops
        await self.orchestrator.stop()
        await self.db.dispose()
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing()  # observability (issue 5): OTEL_* exporters, no-op without them
    try:
        app = await App.start(settings)
    except TaskerError as exc:
        log.error("cannot start: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(app.stop()))
    if app.credentials is not None:  # SIGHUP: re-read the auth files now
        loop.add_signal_handler(signal.SIGHUP, app.reload_auth)
    await app.wait()
    return 1 if app.failure is not None else 0


async def migrate_only(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    db = Database.from_url(settings.database_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()
    log.info("migrations applied", extra={"database": db.display_url})
    return 0
