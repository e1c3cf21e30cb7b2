"""tasker.v1.TaskService."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from tasker.v1 import task_service_pb2 as pb
from tasker.v1 import task_service_pb2_grpc as pb_grpc
from tasker_server.domain.states import FINISHED_TASK_STATES
from tasker_server.engine.commands import Commands
from tasker_server.store import tasks as task_store

from . import convert, pagination, validation
from .watchers import Watchers

__all__ = ["TaskService"]

_TERMINAL_EVENTS = {"task.completed", "task.failed", "task.cancelled", "task.resolved_manually"}


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
    def __init__(self, commands: Commands, watchers: Watchers) -> None:
        self.commands = commands
        self.orchestrator = commands.orchestrator
        self.watchers = watchers

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateTaskResponse:
        parent, state = _trace_context(context)
        limits = self.commands.limits
        detail, created = await self.commands.create_task(
            namespace=request.namespace,
            template_name=request.template_name,
            template_version=request.template_version,
            context=convert.to_dict(request.context, "context", limits.nesting_depth),
            idempotency_key=request.idempotency_key,
            correlation_id=request.correlation_id,
            priority=request.priority,
            tags=list(request.tags),
            deadline=validation.timestamp(request.deadline, "deadline")
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
        position = pagination.decode(request.page_token, "tasks", int)
        before = int(position[0]) if position else None
        state = ""
        if request.state:
            validation.enum_value(
                request.state,
                pb.ListTasksRequest.DESCRIPTOR.fields_by_name["state"].enum_type,
                "state",
                allow_unspecified=True,
            )
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
        token = pagination.encode("tasks", rows[size - 1].id) if len(rows) > size else ""
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
        with self.watchers.slot(context):
            events = self.orchestrator.events
            # The resume point is fixed before the state is read: a task that finishes in
            # between has its final event after it.
            after = await events.resume_point(request.after_sequence)
            # Only whether the task had finished is kept: an idle watcher holds no task detail.
            finished = (await self.commands.get_task(task_id)).task.state in FINISHED_TASK_STATES
            await events.check_retention(after)
            async for page in events.follow(after, task_id=task_id):
                for row in page:
                    yield pb.WatchTaskResponse(event=convert.event_message(row))
                    if row.name in _TERMINAL_EVENTS:
                        return
                # A task already finished before the call: replay what is left, then end.
                if not page and finished:
                    return
