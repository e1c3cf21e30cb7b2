"""The asyncio client: templates, tasks, events and operator actions.

::

    async with await Client.connect("127.0.0.1:50051") as client:
        await client.register_template(yaml_text)
        task = await client.create_task("fulfillment", "order", {"order_id": 7})
        done = await client.wait_for_task(task.task_id, timeout=60)

Every unary RPC goes through ``Client._call`` and every stream through ``Client._resumable``:
errors are decoded once there by :func:`tasker.from_rpc_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import grpc

from tasker._channel import Backoff, call_metadata, open_channel
from tasker._convert import dict_to_struct, to_timestamp
from tasker._errors import UnavailableError, from_rpc_error
from tasker._models import (
    FINISHED_TASK_STATES,
    CircuitBreaker,
    Event,
    Namespace,
    Step,
    Task,
    Template,
    TemplateProblem,
    WorkerInfo,
    task_state_value,
)
from tasker.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

__all__ = ["DEFAULT_ACTOR", "TERMINAL_EVENTS", "Client"]

log = logging.getLogger("tasker.client")

DEFAULT_ACTOR = "sdk-python"
TERMINAL_EVENTS = frozenset(
    {"task.completed", "task.failed", "task.cancelled", "task.resolved_manually"}
)
# Consecutive failed reconnects of a watch stream before the error is raised to the caller.
_MAX_STREAM_RETRIES = 10
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


EventCallback = Callable[[Event], Awaitable[None] | None]


def _tracing_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """OpenTelemetry client spans (and W3C traceparent on every call) when
    opentelemetry-instrumentation-grpc is installed; spans are no-ops without an SDK provider."""
    try:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors
    except ImportError:
        return []
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def _require(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _page_size(page_size: int) -> int:
    if not 1 <= page_size <= 500:
        raise ValueError("page_size must be between 1 and 500")
    return page_size


def _strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{name} must contain strings, got {type(v).__name__}")
    return out


def _context_struct(context: Mapping[str, Any] | None, name: str = "context") -> Any:
    if context is not None and not isinstance(context, Mapping):
        raise TypeError(f"{name} must be a dict (JSON object), got {type(context).__name__}")
    try:
        return dict_to_struct(context)
    except TypeError as exc:
        raise TypeError(f"{name} is not JSON-serialisable: {exc}") from None


class Client:
    """Asyncio client for the Tasker API. Create with :meth:`connect` (or the constructor) and
    close with :meth:`close` or ``async with``."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self._channel = open_channel(address, tls, _tracing_interceptors())
        self._subscriptions: list[tuple[str, EventCallback]] = []
        self._metadata = call_metadata(token)
        # The generated stubs are untyped; their methods are typed at the call sites below.
        self._tasks: Any = task_service_pb2_grpc.TaskServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )
        self._templates: Any = template_service_pb2_grpc.TemplateServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )
        self._events: Any = event_service_pb2_grpc.EventServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )
        self._admin: Any = admin_service_pb2_grpc.AdminServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )

    @classmethod
    async def connect(
        cls,
        address: str = "127.0.0.1:50051",
        *,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - optional readiness wait
    ) -> Client:
        """A client for ``address``. The bearer ``token`` is sent as ``authorization``
        metadata on every call. With ``timeout``, wait that long for the server to be
        reachable (UnavailableError otherwise); without it the connection is made lazily."""
        client = cls(address, tls=tls, token=token)
        if timeout is not None:
            try:
                async with asyncio.timeout(timeout):
                    await client._channel.channel_ready()
            except TimeoutError:
                await client.close()
                raise UnavailableError(
                    f"could not reach Tasker at {address} within {timeout} s",
                    grpc.StatusCode.UNAVAILABLE,
                ) from None
        return client

    async def close(self) -> None:
        """Close the channel (idempotent)."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the one place unary RPCs happen -------------------------------------------------------

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    # --- templates -----------------------------------------------------------------------------

    async def register_template(self, yaml_text: str) -> Template:
        """Register a template version; ``.created`` is False when it already existed
        identically. InvalidArgumentError lists every problem in ``field_violations``."""
        _require(yaml_text, "yaml_text")
        resp = await self._call(
            self._templates.RegisterTemplate,
            template_service_pb2.RegisterTemplateRequest(yaml=yaml_text),
        )
        return Template.from_proto(resp.template, created=resp.created)

    async def validate_template(self, yaml_text: str) -> list[TemplateProblem]:
        """Every problem found in ``yaml_text`` (empty when valid); registers nothing."""
        _require(yaml_text, "yaml_text")
        resp = await self._call(
            self._templates.ValidateTemplate,
            template_service_pb2.ValidateTemplateRequest(yaml=yaml_text),
        )
        return [TemplateProblem(p.field, p.description) for p in resp.problems]

    async def get_template(
        self, namespace: str, name: str, version: str | None = None
    ) -> Template:
        """One template version (the highest when ``version`` is None)."""
        resp = await self._call(
            self._templates.GetTemplate,
            template_service_pb2.GetTemplateRequest(
                namespace=_require(namespace, "namespace"),
                name=_require(name, "name"),
                version=version or "",
            ),
        )
        return Template.from_proto(resp.template)

    async def list_templates(
        self, namespace: str | None = None, name: str | None = None, *, page_size: int = 50
    ) -> AsyncIterator[Template]:
        """All registered versions (without YAML text), following pages."""
        request = template_service_pb2.ListTemplatesRequest(
            namespace=namespace or "", name=name or "", page_size=_page_size(page_size)
        )
        while True:
            resp = await self._call(self._templates.ListTemplates, request)
            for t in resp.templates:
                yield Template.from_proto(t)
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    # --- tasks ---------------------------------------------------------------------------------

    async def create_task(
        self,
        namespace: str,
        template_name: str,
        context: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        priority: int = 0,
        tags: Iterable[str] = (),
        deadline: datetime | timedelta | None = None,
    ) -> Task:
        """Start a task. With an ``idempotency_key`` already used in the namespace the existing
        task is returned with ``created=False``. ``deadline`` is an aware datetime or a delay
        from now."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError("priority must be an int")
        if not 0 <= priority <= 100:
            raise ValueError("priority must be between 0 and 100")
        request = task_service_pb2.CreateTaskRequest(
            namespace=_require(namespace, "namespace"),
            template_name=_require(template_name, "template_name"),
            template_version=version or "",
            context=_context_struct(context),
            idempotency_key=idempotency_key or "",
            correlation_id=correlation_id or "",
            priority=priority,
            tags=_strings(tags, "tags"),
        )
        if isinstance(deadline, timedelta):
            deadline = datetime.now(UTC) + deadline
        if deadline is not None:
            request.deadline.CopyFrom(to_timestamp(deadline))
        resp = await self._call(self._tasks.CreateTask, request)
        return Task.from_proto(resp.task, created=resp.created)

    async def get_task(self, task_id: str) -> Task:
        """A task with its steps, results, errors and transitions (``.proto.transitions``)."""
        resp = await self._call(
            self._tasks.GetTask,
            task_service_pb2.GetTaskRequest(task_id=_require(task_id, "task_id")),
        )
        return Task.from_proto(resp.task)

    async def _list_tasks_page(
        self,
        namespace: str | None,
        state: str | None,
        template_name: str | None,
        page_size: int,
        page_token: str,
    ) -> tuple[list[Task], str]:
        request = task_service_pb2.ListTasksRequest(
            namespace=namespace or "",
            state=task_state_value(state) if state else None,
            template_name=template_name or "",
            page_size=_page_size(page_size),
            page_token=page_token,
        )
        resp = await self._call(self._tasks.ListTasks, request)
        return [Task.from_proto(t) for t in resp.tasks], resp.next_page_token

    async def list_tasks(
        self,
        namespace: str | None = None,
        state: str | None = None,
        template_name: str | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[Task]:
        """Tasks newest first (without steps), following pages. ``state`` is a lowercase
        state name such as ``"failed"``."""
        if state:
            task_state_value(state)  # ValueError before the first RPC
        _page_size(page_size)
        token = ""
        while True:
            tasks, token = await self._list_tasks_page(
                namespace, state, template_name, page_size, token
            )
            for t in tasks:
                yield t
            if not token:
                return

    async def cancel_task(
        self, task_id: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Task:
        """Cancel a task; workers holding its leases are told to stop."""
        resp = await self._call(
            self._tasks.CancelTask,
            task_service_pb2.CancelTaskRequest(
                task_id=_require(task_id, "task_id"), actor=actor, reason=reason
            ),
        )
        return Task.from_proto(resp.task)

    # --- streams -------------------------------------------------------------------------------

    async def _resumable(
        self, open_stream: Callable[[int], Any], after_sequence: int
    ) -> AsyncGenerator[Event, None]:
        """Events from ``open_stream(after)``, reopening it after UNAVAILABLE or ABORTED with
        the last sequence received, so the caller sees no gap and no duplicate."""
        last = after_sequence
        backoff = Backoff(base=0.2, cap=5.0)
        while True:
            call = open_stream(last)
            try:
                async for message in call:
                    event = Event.from_proto(message.event)
                    last = event.sequence
                    backoff.reset()
                    yield event
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if error.code not in _RESUMABLE or backoff.failures >= _MAX_STREAM_RETRIES:
                    raise error from exc
                # On ABORTED the server names its own resume point, but the last event we
                # actually received is the one that guarantees neither gap nor duplicate.
                delay = backoff.next_delay()
                log.info("event stream interrupted (%s); resuming after %d in %.2fs",
                         error.code.name if error.code else "?", last, delay)
                await asyncio.sleep(delay)
            finally:
                call.cancel()

    def watch_task(self, task_id: str, after_sequence: int = 0) -> AsyncGenerator[Event, None]:
        """The task's events (replayed after ``after_sequence``, then live), ending after its
        terminal event. Reconnects transparently after UNAVAILABLE/ABORTED."""
        _require(task_id, "task_id")

        def open_stream(after: int) -> Any:
            return self._tasks.WatchTask(
                task_service_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after),
                metadata=self._metadata,
            )

        return self._resumable(open_stream, after_sequence)

    def watch_events(
        self,
        namespaces: Iterable[str] = (),
        event_names: Iterable[str] = (),
        after_sequence: int = 0,
    ) -> AsyncGenerator[Event, None]:
        """All matching events (``event_names`` may use a ``"step.*"`` prefix), never ending
        on its own; ``after_sequence=-1`` starts at the live end. Resumes like watch_task."""
        ns = _strings(namespaces, "namespaces")
        names = _strings(event_names, "event_names")

        def open_stream(after: int) -> Any:
            return self._events.WatchEvents(
                event_service_pb2.WatchEventsRequest(
                    namespaces=ns, event_names=names, after_sequence=after
                ),
                metadata=self._metadata,
            )

        return self._resumable(open_stream, after_sequence)

    # --- event subscriptions ---------------------------------------------------------------------

    def on(self, event_name: str, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` (sync or async) for every event named ``event_name`` (a
        ``"step.*"`` prefix works) while :meth:`run_subscriptions` runs. Returns ``callback``."""
        _require(event_name, "event_name")
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._subscriptions.append((event_name, callback))
        return callback

    async def run_subscriptions(
        self, *, namespaces: Iterable[str] = (), after_sequence: int = -1
    ) -> None:
        """Deliver events to the :meth:`on` callbacks, in sequence order, until cancelled.

        One ``WatchEvents`` stream filtered on the subscribed names; it resumes by itself after
        a dropped connection. Starts at the live end unless ``after_sequence`` says otherwise
        (pass the last sequence you handled to continue where you left off). A callback that
        raises is logged; the others, and later events, still run."""
        if not self._subscriptions:
            raise ValueError("no subscriptions: register callbacks with client.on(name, fn)")
        names = sorted({name for name, _ in self._subscriptions})
        async with contextlib.aclosing(
            self.watch_events(namespaces, names, after_sequence=after_sequence)
        ) as events:
            async for event in events:
                for pattern, callback in list(self._subscriptions):
                    if not _matches(pattern, event.event_name):
                        continue
                    try:
                        outcome = callback(event)
                        if outcome is not None:
                            await outcome
                    except Exception:
                        log.exception(
                            "subscription callback for %s failed (event %d)",
                            pattern,
                            event.sequence,
                        )

    async def wait_for_task(
        self, task_id: str, timeout: float | None = None  # noqa: ASYNC109
    ) -> Task:
        """Wait until the task is complete, failed, cancelled or resolved manually and return
        it (with steps). Raises TimeoutError after ``timeout`` seconds."""
        _require(task_id, "task_id")
        async with asyncio.timeout(timeout):
            while True:
                async with contextlib.aclosing(self.watch_task(task_id)) as events:
                    async for event in events:
                        if event.event_name in TERMINAL_EVENTS:
                            task = await self.get_task(task_id)
                            # A failed task may have been retried since; keep watching then.
                            if task.state in FINISHED_TASK_STATES:
                                return task
                task = await self.get_task(task_id)
                if task.state in FINISHED_TASK_STATES:
                    return task
                # The stream ended without a terminal state (e.g. a server that ends it on
                # task.failed before an operator retry); look again shortly.
                await asyncio.sleep(0.5)

    # --- operator actions ----------------------------------------------------------------------

    async def retry_step(
        self, task_id: str, step_name: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Step:
        """Send a FAILED or BLOCKED step back to RETRYING with a fresh attempt budget."""
        resp = await self._call(
            self._admin.RetryStep,
            admin_service_pb2.RetryStepRequest(
                task_id=_require(task_id, "task_id"),
                step_name=_require(step_name, "step_name"),
                actor=_require(actor, "actor"),
                reason=reason,
            ),
        )
        return Step.from_proto(resp.step)

    async def resolve_step_manually(
        self,
        task_id: str,
        step_name: str,
        result: Mapping[str, Any] | None = None,
        *,
        actor: str = DEFAULT_ACTOR,
        reason: str = "",
    ) -> Step:
        """Waive a step (RESOLVED_MANUALLY); dependents receive ``result``."""
        resp = await self._call(
            self._admin.ResolveStepManually,
            admin_service_pb2.ResolveStepManuallyRequest(
                task_id=_require(task_id, "task_id"),
                step_name=_require(step_name, "step_name"),
                result=_context_struct(result, "result"),
                actor=_require(actor, "actor"),
                reason=reason,
            ),
        )
        return Step.from_proto(resp.step)

    async def complete_step_manually(
        self,
        task_id: str,
        step_name: str,
        result: Mapping[str, Any],
        *,
        actor: str = DEFAULT_ACTOR,
        reason: str = "",
    ) -> Step:
        """Mark a step COMPLETE with ``result``, as if its handler had returned it."""
        if result is None:
            raise TypeError("result is required (use {} for an empty result)")
        resp = await self._call(
            self._admin.CompleteStepManually,
            admin_service_pb2.CompleteStepManuallyRequest(
                task_id=_require(task_id, "task_id"),
                step_name=_require(step_name, "step_name"),
                result=_context_struct(result, "result"),
                actor=_require(actor, "actor"),
                reason=reason,
            ),
        )
        return Step.from_proto(resp.step)

    async def resolve_task_manually(
        self, task_id: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Task:
        """Close a whole task as RESOLVED_MANUALLY."""
        resp = await self._call(
            self._admin.ResolveTaskManually,
            admin_service_pb2.ResolveTaskManuallyRequest(
                task_id=_require(task_id, "task_id"), actor=_require(actor, "actor"), reason=reason
            ),
        )
        return Task.from_proto(resp.task)

    async def pause_namespace(
        self, namespace: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Namespace:
        """Stop dispatching in ``namespace`` (tasks are still accepted). Idempotent."""
        resp = await self._call(
            self._admin.PauseNamespace,
            admin_service_pb2.PauseNamespaceRequest(
                namespace=_require(namespace, "namespace"),
                actor=_require(actor, "actor"),
                reason=reason,
            ),
        )
        return Namespace.from_proto(resp.namespace)

    async def resume_namespace(
        self, namespace: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> Namespace:
        """Resume dispatching in ``namespace``. Idempotent."""
        resp = await self._call(
            self._admin.ResumeNamespace,
            admin_service_pb2.ResumeNamespaceRequest(
                namespace=_require(namespace, "namespace"),
                actor=_require(actor, "actor"),
                reason=reason,
            ),
        )
        return Namespace.from_proto(resp.namespace)

    async def list_namespaces(self) -> list[Namespace]:
        """Every known namespace with its settings."""
        out: list[Namespace] = []
        request = admin_service_pb2.ListNamespacesRequest(page_size=500)
        while True:
            resp = await self._call(self._admin.ListNamespaces, request)
            out.extend(Namespace.from_proto(n) for n in resp.namespaces)
            if not resp.next_page_token:
                return out
            request.page_token = resp.next_page_token

    async def list_workers(self, namespace: str | None = None) -> list[WorkerInfo]:
        """Connected workers across all replicas (all pages)."""
        out: list[WorkerInfo] = []
        request = admin_service_pb2.ListWorkersRequest(namespace=namespace or "", page_size=500)
        while True:
            resp = await self._call(self._admin.ListWorkers, request)
            out.extend(WorkerInfo.from_proto(w) for w in resp.workers)
            if not resp.next_page_token:
                return out
            request.page_token = resp.next_page_token

    async def get_circuit_breakers(self, keys: Iterable[str] = ()) -> list[CircuitBreaker]:
        """Circuit breakers (all, or those with ``keys``), ordered by key."""
        resp = await self._call(
            self._admin.GetCircuitBreakers,
            admin_service_pb2.GetCircuitBreakersRequest(keys=_strings(keys, "keys")),
        )
        return [CircuitBreaker.from_proto(b) for b in resp.circuit_breakers]

    async def reset_circuit_breaker(
        self, key: str, *, actor: str = DEFAULT_ACTOR, reason: str = ""
    ) -> CircuitBreaker:
        """Close a breaker and clear its failure count."""
        resp = await self._call(
            self._admin.ResetCircuitBreaker,
            admin_service_pb2.ResetCircuitBreakerRequest(
                key=_require(key, "key"), actor=_require(actor, "actor"), reason=reason
            ),
        )
        return CircuitBreaker.from_proto(resp.circuit_breaker)
