"""tasker.v1.TaskService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import grpc

from tasker.v1 import task_service_pb2 as pb
from tasker.v1 import task_service_pb2_grpc as pb_grpc
from tasker_server.domain import errors
from tasker_server.domain.states import TaskState
from tasker_server.engine.commands import Commands
from tasker_server.store import tasks as task_store

from . import convert, validation

__all__ = ["TaskService"]

_TERMINAL_EVENTS = {"task.completed", "task.failed", "task.cancelled", "task.resolved_manually"}
_TERMINAL_STATES = {
    TaskState.COMPLETE,
    TaskState.FAILED,
    TaskState.CANCELLED,
    TaskState.RESOLVED_MANUALLY,
}


def _trace_context(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str | None, str | None]:
    meta = {k: v for k, v in (context.invocation_metadata() or ())}
    parent = meta.get("traceparent")
    state = meta.get("tracestate")
    if parent is None:
        try:
            from opentelemetry import trace

            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                parent = f"00-{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"
        except Exception:  # pragma: no cover - tracing must never break task creation
            parent = None
    return (str(parent) if parent else None, str(state) if state else None)


class TaskService(pb_grpc.TaskServiceServicer):
    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.orchestrator = commands.orchestrator

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateTaskResponse:
        parent, state = _trace_context(context)
        detail, created = await self.commands.create_task(
            namespace=request.namespace,
            template_name=request.template_name,
            template_version=request.template_version,
            context=convert.to_dict(request.context),
            idempotency_key=request.idempotency_key,
            correlation_id=request.correlation_id,
            priority=request.priority,
            tags=list(request.tags),
            deadline=request.deadline.ToDatetime(tzinfo=UTC)
            if request.HasField("deadline")
            else None,
            trace_parent=parent,
            trace_state=state,
        )
        return pb.CreateTaskResponse(
            task=convert.task_message(detail.task, detail), created=created
        )

    async def GetTask(
        self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTaskResponse:
        detail = await self.commands.get_task(validation.task_id(request.task_id))
        return pb.GetTaskResponse(task=convert.task_message(detail.task, detail))

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTasksResponse:
        size = validation.page_size(request.page_size)
        before = None
        if request.page_token:
            try:
                before = task_store.decode_page_token(request.page_token)
            except Exception:
                raise errors.InvalidArgument(
                    "invalid page_token",
                    [errors.FieldViolation("page_token", "not a token from a previous response")],
                ) from None
        state = ""
        if request.state:
            state = convert.task_state_name(request.state)
        async with self.commands.db.session(read_only=True) as s:
            rows = await task_store.list_tasks(
                s,
                namespace=request.namespace,
                state=state,
                template_name=request.template_name,
                limit=size + 1,
                before_id=before,
            )
        token = task_store.encode_page_token(rows[size - 1].id) if len(rows) > size else ""
        return pb.ListTasksResponse(
            tasks=[convert.task_message(t) for t in rows[:size]], next_page_token=token
        )

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelTaskResponse:
        task_id = validation.task_id(request.task_id)
        await self.commands.cancel_task(task_id, request.actor or "api", request.reason)
        detail = await self.commands.get_task(task_id)
        return pb.CancelTaskResponse(task=convert.task_message(detail.task, detail))

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        task_id = validation.task_id(request.task_id)
        detail = await self.commands.get_task(task_id)
        after = request.after_sequence
        await self.orchestrator.events.check_retention(after)
        # A task already finished before the call: replay what is left, then end.
        finished = detail.task.state in _TERMINAL_STATES
        async for page in self.orchestrator.events.follow(after, task_id=task_id):
            for row in page:
                yield pb.WatchTaskResponse(event=convert.event_message(row))
                if row.name in _TERMINAL_EVENTS:
                    return
            if not page and finished:
                return
