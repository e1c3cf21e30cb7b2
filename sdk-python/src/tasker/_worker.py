"""The worker: runs step handlers for leases received on one ``WorkerService.Connect`` stream.

::

    worker = Worker("127.0.0.1:50051", ["fulfillment"], capacity=10)

    @worker.handler("validate_order")
    async def validate_order(ctx: StepContext) -> dict:
        return {"valid": True}

    await worker.run()            # until worker.shutdown() or cancellation

Lifecycle of a lease: assignment -> handler (at most ``capacity`` at a time, under the step
timeout, in an OpenTelemetry span) -> result | failure -> result_ack. The assignment is
acknowledged only if its handler is still running (or waiting for a slot) ``ack_delay`` after it
arrived: a result or failure implies the acknowledgement, so a short step costs one message from
the worker instead of two. Running leases are heartbeated every heartbeat_interval. A
cancellation (or a heartbeat answer saying the lease is gone) cancels the handler and reports
nothing.

If the stream breaks, handlers keep running (leases are extended with the unary ``Heartbeat``)
while the worker reconnects with exponential backoff and jitter; every hello names the leases
the worker still holds (``held_leases``: handlers running, outcomes not yet acknowledged).

An outcome (result or failure) is kept until the server acknowledges it, at most until the
lease's hard deadline (``Assignment.lease_deadline``): it goes on the stream, and is sent again
after a backoff when the ``result_ack`` says UNAVAILABLE, right after the welcome of a new stream
when the stream broke, and by the unary ``ReportStepResult`` (retried with backoff) while there
is no stream. It is dropped when recorded, or refused for good (LEASE_STALE, NOT_FOUND, ...).
The server records an outcome once, so sending it again is harmless.

Shutdown is ordered and idempotent: drain -> stop taking work -> wait for in-flight handlers
(up to drain_timeout; the rest are cancelled and reported as TRANSIENT ``WorkerShutdown``) ->
flush results -> close.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from tasker._channel import Backoff, call_metadata, open_channel
from tasker._context import StepContext
from tasker._convert import dict_to_struct, seconds_to_duration
from tasker._errors import (
    PermanentError,
    RetryableError,
    from_rpc_error,
    step_error_from_exception,
)
from tasker._session import Session
from tasker._version import __version__
from tasker.v1 import worker_service_pb2, worker_service_pb2_grpc

try:  # OpenTelemetry is optional at runtime: without it handlers simply run without a span.
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: TraceContextTextMapPropagator | None = TraceContextTextMapPropagator()
except ImportError:  # pragma: no cover - opentelemetry-api is a declared dependency
    _PROPAGATOR = None

__all__ = ["StepHandler", "Worker"]

log = logging.getLogger("tasker.worker")

HandlerResult = Mapping[str, Any] | None
HandlerFunc = Callable[[StepContext], Awaitable[HandlerResult]] | Callable[[StepContext], Any]
F = TypeVar("F", bound=Callable[..., Any])

# Used until the server's Welcome says otherwise.
_DEFAULT_HEARTBEAT_INTERVAL = 10.0
_DEFAULT_KEEPALIVE_TIMEOUT = 60.0
_WELCOME_TIMEOUT = 30.0
_UNARY_TIMEOUT = 10.0
_DEFAULT_ACK_DELAY = 0.02
_FLUSH_TIMEOUT = 5.0
# Errors on which retrying the stream cannot help.
_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# ReportStepResult errors after which the outcome is sent again (INTERNAL and UNKNOWN are what
# servers before UNAVAILABLE answered while their database was down).
_RETRY_UNARY = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
# result_ack reasons after which the outcome is kept and sent again (INTERNAL: older servers'
# answer to a failed write, "try again").
_RESEND_REASONS = frozenset({"UNAVAILABLE", "INTERNAL"})
# Backoff between sends of an outcome the server could not record yet.
_RESEND_BACKOFF = (0.2, 3.0)
# How long an outcome is kept when its assignment carries no lease_deadline (older servers).
_DEFAULT_RETENTION = 300.0
_MAX_HELD_LEASES = 10_000


class StepHandler:
    """Base class for class-based handlers: implement ``async def call(self, ctx)`` returning a
    JSON-serialisable dict (or None for ``{}``). A sync ``def call`` runs in a thread."""

    async def call(self, ctx: StepContext) -> HandlerResult:
        raise NotImplementedError


@dataclass
class _Handler:
    name: str
    run: Callable[[StepContext], Awaitable[Any]]


def _as_coroutine_function(
    fn: Callable[[StepContext], Any],
) -> Callable[[StepContext], Awaitable[Any]]:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with ``async def __call__``
    ):
        return fn

    async def in_thread(ctx: StepContext) -> Any:
        # Sync handlers run in a thread so they cannot stall the stream (keepalives, acks).
        return await asyncio.to_thread(fn, ctx)

    return in_thread


def _lease_deadline(assignment: Any) -> float:
    """The assignment's hard deadline on the monotonic clock."""
    if not assignment.HasField("lease_deadline"):
        return time.monotonic() + _DEFAULT_RETENTION
    remaining: float = assignment.lease_deadline.ToMilliseconds() / 1000.0 - time.time()
    return time.monotonic() + remaining


@dataclass(eq=False)
class _Lease:
    lease_id: str
    ctx: StepContext
    handler: _Handler
    deadline: float
    task: asyncio.Task[None] | None = None
    # Sends the AssignmentAck if the handler still runs when it fires; cancelled by the outcome.
    ack_timer: asyncio.TimerHandle | None = None
    # Why the handler's task was cancelled: by the server (report nothing) or by shutdown
    # (report a TRANSIENT failure so the step is retried elsewhere at once).
    cancelled_by_server: bool = False
    cancelled_by_shutdown: bool = False

    def cancel_ack(self) -> None:
        """No delayed ack: the outcome (or nothing, or an ack at once) replaces it."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None


@dataclass(eq=False)
class _PendingOutcome:
    """An outcome the server has not acknowledged yet, kept until the lease's hard deadline."""

    lease_id: str
    request: Any = field(repr=False)  # ConnectRequest carrying the result or failure
    deadline: float  # time.monotonic() past which the lease cannot be current any more
    # Set by a result_ack, by the end of the stream it was sent on and by a new welcome.
    nudge: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    sent_on: Session | None = None  # the stream whose result_ack it waits for
    resend: bool = False  # the server answered UNAVAILABLE: back off, then send again


class Worker:
    """Runs registered step handlers for the given namespaces.

    ``worker_id`` defaults to a random id kept across reconnects of this process. ``tls`` and
    ``token`` work as for :class:`tasker.Client`. ``ack_delay`` (seconds, default 0.02) is how
    long a handler may run before its assignment is acknowledged; one that finishes sooner is
    never acknowledged (its outcome implies it). It is capped at a quarter of the server's
    ack_timeout; 0 acknowledges every assignment at once.
    """

    def __init__(
        self,
        address: str,
        namespaces: Iterable[str] | str,
        *,
        capacity: int = 10,
        worker_id: str | None = None,
        name: str | None = None,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        ack_delay: float = _DEFAULT_ACK_DELAY,
    ) -> None:
        if isinstance(namespaces, str):
            namespaces = [namespaces]
        self.namespaces = list(namespaces)
        if not self.namespaces or not all(isinstance(n, str) and n for n in self.namespaces):
            raise ValueError("namespaces must be a non-empty list of non-empty strings")
        if not isinstance(capacity, int) or not 1 <= capacity <= 10_000:
            raise ValueError("capacity must be an int between 1 and 10,000")
        if worker_id is not None and not 0 < len(worker_id) <= 64:
            raise ValueError("worker_id must be 1..64 characters")
        if (
            isinstance(ack_delay, bool)
            or not isinstance(ack_delay, int | float)
            or not 0 <= ack_delay < float("inf")
        ):
            raise ValueError("ack_delay must be a number of seconds >= 0")
        self.address = address
        self.capacity = capacity
        self.ack_delay = float(ack_delay)
        self.worker_id = worker_id or uuid.uuid4().hex
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._tls = tls
        self._metadata = call_metadata(token)
        self._handlers: dict[str, _Handler] = {}

        self._leases: dict[str, _Lease] = {}
        # Outcomes not acknowledged by the server yet, each with a task delivering it.
        self._unacked_outcomes: dict[str, _PendingOutcome] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._session: Session | None = None
        self._stub: Any = None
        self._channel: grpc.aio.Channel | None = None
        self._slots: asyncio.Semaphore | None = None
        self._heartbeat_interval = _DEFAULT_HEARTBEAT_INTERVAL
        self._keepalive_timeout: float | None = _DEFAULT_KEEPALIVE_TIMEOUT
        self._ack_timeout: float | None = None  # the welcome's
        self._running = False
        self._stopping = False
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._run_done = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None

    # --- registration --------------------------------------------------------------------------

    def handler(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``async def fn(ctx) -> dict | None`` (or a sync function, run
        in a thread) as the handler ``name``."""

        def decorate(fn: F) -> F:
            self._add(name, _as_coroutine_function(fn))
            return fn

        return decorate

    def register(self, name: str, handler: StepHandler | HandlerFunc) -> None:
        """Register a :class:`StepHandler` instance (or any callable taking the context)."""
        call = getattr(handler, "call", None) if isinstance(handler, StepHandler) else handler
        if not callable(call):
            raise TypeError("handler must be a StepHandler or a callable taking a StepContext")
        self._add(name, _as_coroutine_function(call))

    def _add(self, name: str, fn: Callable[[StepContext], Awaitable[Any]]) -> None:
        if not isinstance(name, str) or not name or name.strip() != name:
            raise ValueError(f"invalid handler name {name!r}")
        if self._running:
            raise RuntimeError("register handlers before run(): the hello lists them")
        if name in self._handlers:
            raise ValueError(f"handler {name!r} is already registered")
        self._handlers[name] = _Handler(name, fn)

    @property
    def handlers(self) -> list[str]:
        """Registered handler names."""
        return sorted(self._handlers)

    @property
    def in_flight(self) -> int:
        """Leases currently held (running or waiting for a slot)."""
        return len(self._leases)

    @property
    def connected(self) -> bool:
        """True while a stream is open and welcomed."""
        return self._session is not None

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the first welcome (handy in tests before creating tasks)."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # --- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and run handlers until :meth:`shutdown` completes (returns normally) or the
        calling task is cancelled (handlers are cancelled, nothing reported). Raises
        TaskerError for errors that reconnecting cannot fix (INVALID_ARGUMENT,
        UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED)."""
        if not self._handlers:
            raise ValueError("register at least one handler before run()")
        if self._running:
            raise RuntimeError("this worker is already running")
        if self._stop.is_set():
            raise RuntimeError("this worker has been shut down")
        self._running = True
        self._channel = open_channel(self.address, self._tls)
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )
        self._slots = asyncio.Semaphore(self.capacity)
        heartbeats = asyncio.create_task(self._heartbeat_loop(), name="tasker-heartbeats")
        backoff = Backoff(0.1, 5.0)
        try:
            while not self._stop.is_set():
                error = await self._session_until_stop(backoff)
                if self._stop.is_set():
                    break
                if isinstance(error, grpc.RpcError):
                    decoded = from_rpc_error(error)
                    if decoded.code in _FATAL_CODES:
                        raise decoded from error
                    error = decoded
                delay = backoff.next_delay()
                log.warning("worker stream lost (%s); reconnecting in %.2fs", error, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
        finally:
            heartbeats.cancel()
            if not self._stop.is_set():
                # Cancelled or fatal: stop handlers without reporting; their leases expire.
                for lease in list(self._leases.values()):
                    if lease.task is not None:
                        lease.task.cancel()
            pending = [heartbeats, *(lt.task for lt in self._leases.values() if lt.task)]
            await asyncio.gather(*pending, return_exceptions=True)
            if self._background and self._stop.is_set():
                # Outcomes still travelling by unary (e.g. after a lost stream) need the channel.
                await asyncio.wait(set(self._background), timeout=_FLUSH_TIMEOUT)
            if self._unacked_outcomes:
                log.warning(
                    "stopping with %d outcome(s) not acknowledged by the server: leases %s",
                    len(self._unacked_outcomes), ", ".join(self._unacked_outcomes),
                )
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._unacked_outcomes.clear()
            await self._channel.close()
            self._stub = None
            self._running = False
            self._run_done.set()

    async def _session_until_stop(self, backoff: Backoff) -> BaseException | None:
        """Run one stream until it fails (returns the error; None if the server ended it) or
        until shutdown asks to stop."""
        session_task = asyncio.create_task(self._run_session(backoff), name="tasker-session")
        stop_task = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({session_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
            if not session_task.done():
                session_task.cancel()
                # Only waits for the session's cleanup; its outcome is read below.
                await asyncio.wait({session_task})
        if session_task.cancelled():
            return None
        return session_task.exception()

    async def _run_session(self, backoff: Backoff) -> None:
        assert self._stub is not None
        session = Session(self._stub, self._metadata)
        hello = worker_service_pb2.WorkerHello(
            worker_id=self.worker_id,
            name=self.name,
            namespaces=self.namespaces,
            handlers=self.handlers,
            capacity=self.capacity,
            sdk_language="python",
            sdk_version=__version__,
            held_leases=self.held_leases(),
        )
        try:
            welcome = await session.open(hello, _WELCOME_TIMEOUT)
            self._on_welcome(welcome)
            self._session = session
            self._connected.set()
            backoff.reset()
            if self._leases:  # leases that survived a reconnect: extend them right away
                session.send(self._heartbeat_message(list(self._leases)))
            for pending in self._unacked_outcomes.values():
                if pending.sent_on is None:  # waiting to retry: send on this stream now
                    pending.nudge.set()
            # Checks the stop flag too, so a cancellation lost inside a library cannot keep a
            # stopped worker's session alive.
            while not self._stop.is_set():
                message = await session.read(self._keepalive_timeout)
                if message is None:
                    log.info("server ended the worker stream")
                    return
                self._dispatch(session, message)
        finally:
            self._session = None
            session.close()
            for pending in self._unacked_outcomes.values():
                if pending.sent_on is session:  # no result_ack will come on this stream
                    pending.nudge.set()

    def held_leases(self) -> list[str]:
        """Leases this worker still holds, as its hello announces them: handlers running and
        outcomes the server has not acknowledged yet."""
        held = dict.fromkeys(self._leases)
        held.update(dict.fromkeys(self._unacked_outcomes))
        return list(held)[:_MAX_HELD_LEASES]

    def _on_welcome(self, welcome: Any) -> None:
        self.worker_id = welcome.worker_id or self.worker_id
        if welcome.HasField("heartbeat_interval"):
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
            if interval > 0:
                self._heartbeat_interval = interval
        if welcome.HasField("keepalive_timeout"):
            timeout = welcome.keepalive_timeout.ToTimedelta().total_seconds()
            self._keepalive_timeout = timeout if timeout > 0 else None
        if welcome.HasField("ack_timeout"):
            ack_timeout = welcome.ack_timeout.ToTimedelta().total_seconds()
            self._ack_timeout = ack_timeout if ack_timeout > 0 else None
        if welcome.unknown_namespaces:
            log.warning(
                "namespaces without templates (yet): %s", ", ".join(welcome.unknown_namespaces)
            )
        log.info(
            "worker %s connected to %s (server %s)", self.worker_id, self.address,
            welcome.server_id,
        )

    # --- messages from the server --------------------------------------------------------------

    def _dispatch(self, session: Session, message: Any) -> None:
        kind = message.WhichOneof("message")
        if kind == "assignment":
            self._on_assignment(session, message.assignment)
        elif kind == "cancellation":
            c = message.cancellation
            self._cancel_lease(c.lease_id, c.reason)
        elif kind == "keepalive":
            session.send(
                worker_service_pb2.ConnectRequest(
                    pong=worker_service_pb2.KeepalivePong(nonce=message.keepalive.nonce)
                )
            )
        elif kind == "result_ack":
            self._on_result_ack(message.result_ack)
        elif kind == "rejected":
            self._on_rejected(message.rejected)
        elif kind == "heartbeat_ack":
            self._apply_lease_statuses(message.heartbeat_ack.leases)
        elif kind == "welcome":
            log.debug("ignoring a second welcome")
        else:
            log.debug("ignoring unknown message %r", kind)

    def _on_result_ack(self, ack: Any) -> None:
        pending = self._unacked_outcomes.get(ack.lease_id)
        if ack.accepted or ack.reason not in _RESEND_REASONS:
            self._unacked_outcomes.pop(ack.lease_id, None)
            if not ack.accepted:
                log.warning(
                    "result for lease %s rejected: %s %s", ack.lease_id, ack.reason, ack.message
                )
        elif pending is not None:
            log.debug("result for lease %s not recorded yet (%s)", ack.lease_id, ack.reason)
            pending.resend = True
        if pending is not None:
            pending.nudge.set()

    def _on_rejected(self, rejected: Any) -> None:
        """The server refused one of our messages (it did not decode, or an outcome broke a
        rule): sending it again cannot help, so an outcome it names is given up."""
        about = f" about lease {rejected.lease_id}" if rejected.lease_id else ""
        log.warning(
            "server rejected a message%s: %s %s", about, rejected.reason, rejected.message
        )
        pending = self._unacked_outcomes.pop(rejected.lease_id, None)
        if pending is not None:
            pending.nudge.set()

    def _on_assignment(self, session: Session, assignment: Any) -> None:
        lease_id = assignment.lease_id
        if lease_id in self._leases or lease_id in self._unacked_outcomes:
            held = self._leases.get(lease_id)
            if held is not None:
                held.cancel_ack()  # acknowledged now, not again when the delay is up
            session.send(self._ack(lease_id))  # re-offered after a reconnect: already ours
            return
        if self._stopping:
            # Not acknowledged: the server re-offers it to another worker after ack_timeout.
            log.info("draining; not taking lease %s", lease_id)
            return
        deadline = _lease_deadline(assignment)
        try:
            ctx = StepContext.from_assignment(assignment)
        except Exception as exc:  # no ack: the failure implies it
            invalid = PermanentError(f"invalid assignment: {exc}")
            self._report_failure(lease_id, deadline, invalid, 0.0)
            return
        handler = self._handlers.get(ctx.step.handler)
        if handler is None:
            error = RetryableError(
                f"handler {ctx.step.handler!r} is not registered on worker {self.worker_id}",
                error_type="HandlerNotFound",
            )
            self._report_failure(lease_id, deadline, error, 0.0)
            return
        lease = _Lease(lease_id, ctx, handler, deadline)
        self._leases[lease_id] = lease
        lease.task = asyncio.create_task(self._execute(lease), name=f"tasker-lease-{lease_id}")
        delay = self._effective_ack_delay()
        if delay > 0:
            lease.ack_timer = asyncio.get_running_loop().call_later(
                delay, self._ack_if_running, session, lease
            )
        else:
            session.send(self._ack(lease_id))

    def _effective_ack_delay(self) -> float:
        """``ack_delay``, kept well below the server's ack_timeout so a lazy ack is never late."""
        if self._ack_timeout is None:
            return self.ack_delay
        return min(self.ack_delay, self._ack_timeout / 4)

    def _ack_if_running(self, session: Session, lease: _Lease) -> None:
        """The delay is up and no outcome was sent: acknowledge, on the stream the assignment
        came on. A new stream needs no ack: its hello listed the lease in held_leases."""
        lease.ack_timer = None
        if (
            self._leases.get(lease.lease_id) is lease
            and not lease.cancelled_by_server
            and session is self._session
        ):
            session.send(self._ack(lease.lease_id))

    def _cancel_lease(self, lease_id: str, reason: str) -> None:
        # Nothing running (an outcome still waiting for its ack stays: the server answers it
        # DUPLICATE or LEASE_STALE).
        lease = self._leases.get(lease_id)
        if lease is None or lease.task is None:
            return
        log.info("lease %s cancelled by the server (%s)", lease_id, reason or "no reason")
        lease.cancelled_by_server = True
        lease.cancel_ack()
        lease.ctx.cancelled.set()
        lease.task.cancel()

    def _apply_lease_statuses(self, statuses: Iterable[Any]) -> None:
        for status in statuses:
            if not status.active:
                self._cancel_lease(status.lease_id, "lease no longer active")

    @staticmethod
    def _ack(lease_id: str) -> Any:
        return worker_service_pb2.ConnectRequest(
            ack=worker_service_pb2.AssignmentAck(lease_id=lease_id)
        )

    @staticmethod
    def _heartbeat_message(lease_ids: list[str]) -> Any:
        return worker_service_pb2.ConnectRequest(
            heartbeat=worker_service_pb2.LeaseHeartbeat(lease_ids=lease_ids)
        )

    # --- running a handler ---------------------------------------------------------------------

    async def _execute(self, lease: _Lease) -> None:
        assert self._slots is not None
        ctx = lease.ctx
        started = time.monotonic()
        try:
            async with self._slots:
                started = time.monotonic()
                timeout = ctx.step.timeout if ctx.step.timeout > 0 else None
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        value = await self._invoke(lease.handler, ctx)
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    error = RetryableError(
                        f"step {ctx.step.name!r} exceeded its timeout of {timeout:g}s",
                        immediate=True,
                        error_type="StepTimeout",
                    )
                    error.__cause__ = exc
                    self._report_failure(
                        lease.lease_id, lease.deadline, error, time.monotonic() - started
                    )
                    return
        except asyncio.CancelledError:
            if lease.cancelled_by_server:
                return
            if lease.cancelled_by_shutdown:
                error = RetryableError(
                    "the worker shut down before the handler finished",
                    immediate=True,
                    error_type="WorkerShutdown",
                )
                self._report_failure(
                    lease.lease_id, lease.deadline, error, time.monotonic() - started
                )
                return
            raise
        except Exception as exc:
            self._report_failure(lease.lease_id, lease.deadline, exc, time.monotonic() - started)
            return
        finally:
            self._leases.pop(lease.lease_id, None)
            lease.cancel_ack()  # the outcome (or nothing) follows: no ack needed
        self._report_success(lease.lease_id, lease.deadline, value, time.monotonic() - started)

    async def _invoke(self, handler: _Handler, ctx: StepContext) -> Any:
        if _PROPAGATOR is None:
            return await handler.run(ctx)
        carrier = {"traceparent": ctx.traceparent} if ctx.traceparent else {}
        if ctx.traceparent and ctx.tracestate:
            carrier["tracestate"] = ctx.tracestate
        parent = _PROPAGATOR.extract(carrier)
        tracer = _otel_trace.get_tracer("tasker")
        with tracer.start_as_current_span(
            f"tasker.step {handler.name}",
            context=parent,
            kind=_otel_trace.SpanKind.CONSUMER,
            attributes={
                "tasker.task_id": ctx.task.task_id,
                "tasker.namespace": ctx.task.namespace,
                "tasker.step": ctx.step.name,
                "tasker.attempt": ctx.step.attempt,
                "tasker.correlation_id": ctx.task.correlation_id,
            },
        ):
            return await handler.run(ctx)

    # --- reporting outcomes --------------------------------------------------------------------

    def _report_success(self, lease_id: str, deadline: float, value: Any, elapsed: float) -> None:
        if value is None:
            value = {}
        problem = None
        if not isinstance(value, Mapping):
            problem = f"handler returned {type(value).__name__}; it must return a dict or None"
        else:
            try:
                struct = dict_to_struct(value)
            except TypeError as exc:
                problem = f"handler result is not JSON-serialisable: {exc}"
        if problem is not None:
            error = PermanentError(problem, error_type="InvalidResult")
            self._report_failure(lease_id, deadline, error, elapsed)
            return
        success = worker_service_pb2.StepSuccess(
            lease_id=lease_id, result=struct, execution_time=seconds_to_duration(elapsed)
        )
        self._keep_outcome(
            lease_id, deadline, worker_service_pb2.ConnectRequest(result=success)
        )

    def _report_failure(
        self, lease_id: str, deadline: float, exc: BaseException, elapsed: float
    ) -> None:
        if not isinstance(exc, RetryableError | PermanentError):
            log.info("handler for lease %s failed: %r", lease_id, exc)
        failure = worker_service_pb2.StepFailure(
            lease_id=lease_id,
            error=step_error_from_exception(exc),
            execution_time=seconds_to_duration(elapsed),
        )
        self._keep_outcome(
            lease_id, deadline, worker_service_pb2.ConnectRequest(failure=failure)
        )

    def _keep_outcome(self, lease_id: str, deadline: float, request: Any) -> None:
        """Keep an outcome until the server acknowledges it; a task of its own delivers it."""
        pending = _PendingOutcome(lease_id, request, deadline)
        self._unacked_outcomes[lease_id] = pending
        self._spawn(self._deliver(pending), f"tasker-outcome-{lease_id}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _deliver(self, pending: _PendingOutcome) -> None:
        """Send one outcome until it is acknowledged, refused for good or past its lease's
        deadline: on the stream when there is one (never on the stream and by unary at once),
        else with ReportStepResult; with backoff between attempts the server could not record."""
        backoff = Backoff(*_RESEND_BACKOFF)
        try:
            async with asyncio.timeout(pending.deadline - time.monotonic()):
                while self._unacked_outcomes.get(pending.lease_id) is pending:
                    if pending.resend:
                        pending.resend = False
                        await self._nap(pending, backoff.next_delay())
                        continue
                    session = self._session
                    pending.nudge.clear()
                    if session is not None and session.send(pending.request):
                        pending.sent_on = session
                        try:
                            await pending.nudge.wait()  # result_ack, or the stream ended
                        finally:
                            pending.sent_on = None
                    elif await self._report_unary(pending):
                        self._unacked_outcomes.pop(pending.lease_id, None)
                    elif self._session is None:  # else: welcomed meanwhile, send on it now
                        await self._nap(pending, backoff.next_delay())
        except TimeoutError:
            if self._unacked_outcomes.get(pending.lease_id) is pending:
                del self._unacked_outcomes[pending.lease_id]
                log.warning(
                    "outcome of lease %s not recorded before the lease's deadline",
                    pending.lease_id,
                )

    @staticmethod
    async def _nap(pending: _PendingOutcome, delay: float) -> None:
        """Sleep ``delay`` s, or less when a new stream is welcomed."""
        pending.nudge.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await pending.nudge.wait()

    async def _report_unary(self, pending: _PendingOutcome) -> bool:
        """One ReportStepResult; False when it is worth trying again (the server or its
        database unreachable), True when the outcome is done with (recorded or refused)."""
        if self._stub is None:
            return False
        outcome = pending.request
        kind = outcome.WhichOneof("message")
        request = worker_service_pb2.ReportStepResultRequest(worker_id=self.worker_id)
        getattr(request, "success" if kind == "result" else "failure").CopyFrom(
            getattr(outcome, kind)
        )
        timeout = max(0.1, min(_UNARY_TIMEOUT, pending.deadline - time.monotonic()))
        try:
            await self._stub.ReportStepResult(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc)
            if error.code in _RETRY_UNARY:
                log.debug("outcome of lease %s not recorded yet: %r", pending.lease_id, error)
                return False
            log.warning("outcome of lease %s not recorded: %r", pending.lease_id, error)
        return True

    # --- heartbeats ----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while True:
            # Short naps so an interval learned from a (new) welcome applies promptly.
            await asyncio.sleep(min(self._heartbeat_interval, 1.0))
            if time.monotonic() - last < self._heartbeat_interval:
                continue
            last = time.monotonic()
            lease_ids = list(self._leases)
            if not lease_ids:
                continue
            session = self._session
            if session is not None and session.send(self._heartbeat_message(lease_ids)):
                continue
            try:  # no stream: keep the leases alive with the unary Heartbeat
                response = await self._stub.Heartbeat(
                    worker_service_pb2.HeartbeatRequest(
                        worker_id=self.worker_id, lease_ids=lease_ids
                    ),
                    metadata=self._metadata,
                    timeout=_UNARY_TIMEOUT,
                )
            except grpc.RpcError as exc:
                log.debug("unary heartbeat failed: %r", from_rpc_error(exc))
                continue
            self._apply_lease_statuses(response.leases)

    # --- shutdown ------------------------------------------------------------------------------

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        """Drain, wait up to ``drain_timeout`` s for in-flight handlers (then cancel them,
        reporting TRANSIENT ``WorkerShutdown``), flush results and close. Idempotent; safe to
        call before, during or after :meth:`run`."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(drain_timeout))
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, drain_timeout: float) -> None:
        self._stopping = True
        session = self._session
        if session is not None:
            session.send(worker_service_pb2.ConnectRequest(drain=worker_service_pb2.Drain()))
        tasks = [lease.task for lease in self._leases.values() if lease.task is not None]
        if tasks:
            log.info("draining %d in-flight step(s) (up to %gs)", len(tasks), drain_timeout)
            _, still_running = await asyncio.wait(tasks, timeout=drain_timeout)
            for lease in list(self._leases.values()):
                if lease.task is not None and not lease.task.done():
                    lease.cancelled_by_shutdown = True
                    lease.task.cancel()
            if still_running:
                await asyncio.wait(still_running)
        # Give outcomes a moment to be acknowledged before closing the stream; whatever is
        # still unacknowledged then goes on by unary (for at most another _FLUSH_TIMEOUT).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FLUSH_TIMEOUT):
                while self._unacked_outcomes:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        self._stop.set()
        if self._running:
            await self._run_done.wait()
