"""tasker.v1.AdminService (operator actions; the failure-model actions arrive with issue 4)."""

from __future__ import annotations

from typing import Any

import grpc

from tasker.v1 import admin_service_pb2 as pb
from tasker.v1 import admin_service_pb2_grpc as pb_grpc
from tasker.v1 import resources_pb2
from tasker_server.domain import errors
from tasker_server.engine.commands import Commands
from tasker_server.store.breakers import load_breakers
from tasker_server.store.templates import list_namespaces
from tasker_server.store.workers import connected_workers

from . import convert, pagination, validation

__all__ = ["AdminService"]


def _after(token: str, kind: str) -> str:
    position = pagination.decode(token, kind, str)
    return str(position[0]) if position else ""


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    async def _step(self, task_id: int, step_name: str) -> Any:
        detail = await self.commands.get_task(task_id)
        return next(
            s for s in convert.task_message(detail.task, detail).steps if s.name == step_name
        )

    async def RetryStep(
        self, request: pb.RetryStepRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RetryStepResponse:
        validation.required(
            task_id=request.task_id, step_name=request.step_name, actor=request.actor
        )
        task_id = validation.task_id(request.task_id)
        await self.commands.retry_step(task_id, request.step_name, request.actor, request.reason)
        return pb.RetryStepResponse(step=await self._step(task_id, request.step_name))

    async def _satisfy(
        self,
        request: pb.ResolveStepManuallyRequest | pb.CompleteStepManuallyRequest,
        *,
        complete: bool,
    ) -> Any:
        validation.required(
            task_id=request.task_id, step_name=request.step_name, actor=request.actor
        )
        task_id = validation.task_id(request.task_id)
        await self.commands.satisfy_step(
            task_id,
            request.step_name,
            complete=complete,
            result=convert.to_dict(request.result, "result", self.commands.limits.nesting_depth),
            actor=request.actor,
            reason=request.reason,
        )
        return await self._step(task_id, request.step_name)

    async def ResolveStepManually(
        self, request: pb.ResolveStepManuallyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResolveStepManuallyResponse:
        return pb.ResolveStepManuallyResponse(step=await self._satisfy(request, complete=False))

    async def CompleteStepManually(
        self, request: pb.CompleteStepManuallyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CompleteStepManuallyResponse:
        return pb.CompleteStepManuallyResponse(step=await self._satisfy(request, complete=True))

    async def ResolveTaskManually(
        self, request: pb.ResolveTaskManuallyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResolveTaskManuallyResponse:
        validation.required(task_id=request.task_id, actor=request.actor)
        task_id = validation.task_id(request.task_id)
        await self.commands.resolve_task(task_id, request.actor, request.reason)
        detail = await self.commands.get_task(task_id)
        return pb.ResolveTaskManuallyResponse(task=convert.task_message(detail.task, detail))

    async def GetCircuitBreakers(
        self, request: pb.GetCircuitBreakersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCircuitBreakersResponse:
        breakers = self.commands.orchestrator.breakers
        async with self.commands.db.session(read_only=True) as s:
            rows = {r.key: r for r in await load_breakers(s, keys=list(request.keys) or None)}
        known = set(breakers.known_keys()) | set(rows)
        keys = sorted(set(request.keys) & known if request.keys else known)
        out = []
        for key in keys:
            conf = breakers.settings(key)
            row = rows.get(key)
            live = key in breakers.known_keys()
            state = breakers.state(key) if live else (row.state if row else "closed")
            opened = breakers.opened_at(key) or (row.opened_time if row else None)
            out.append(
                resources_pb2.CircuitBreaker(
                    key=key,
                    state=convert.breaker_state(state),
                    failure_count=breakers.failure_count(key),
                    failure_threshold=conf.failure_threshold,
                    reset_timeout=convert.duration(conf.reset_timeout_seconds),
                    opened_time=convert.ts(opened) if state != "closed" else None,
                    update_time=convert.ts(row.update_time) if row else None,
                )
            )
        return pb.GetCircuitBreakersResponse(circuit_breakers=out)

    async def ResetCircuitBreaker(
        self, request: pb.ResetCircuitBreakerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResetCircuitBreakerResponse:
        validation.required(key=request.key, actor=request.actor)
        await self.commands.orchestrator.reset_breaker(request.key, request.actor, request.reason)
        reply = await self.GetCircuitBreakers(
            pb.GetCircuitBreakersRequest(keys=[request.key]), context
        )
        return pb.ResetCircuitBreakerResponse(circuit_breaker=reply.circuit_breakers[0])

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        size = validation.page_size(request.page_size)
        after = _after(request.page_token, "workers")
        async with self.commands.db.session(read_only=True) as s:
            rows = await connected_workers(s, after)
        # Connected workers are few; filtering the JSON list here keeps the query portable and
        # the page full.
        if request.namespace:
            rows = [r for r in rows if request.namespace in (r.namespaces or [])]
        orchestrator = self.commands.orchestrator
        live = orchestrator.streams
        workers = []
        for row in rows[:size]:
            msg = convert.worker_message(row)
            if row.id in live:
                msg.in_flight = orchestrator.leases.count(live[row.id])
            workers.append(msg)
        token = pagination.encode("workers", rows[size - 1].id) if len(rows) > size else ""
        return pb.ListWorkersResponse(workers=workers, next_page_token=token)

    async def PauseNamespace(
        self, request: pb.PauseNamespaceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PauseNamespaceResponse:
        validation.required(namespace=request.namespace, actor=request.actor)
        row = await self.commands.set_paused(request.namespace, True, request.actor, request.reason)
        return pb.PauseNamespaceResponse(namespace=convert.namespace_message(row))

    async def ResumeNamespace(
        self, request: pb.ResumeNamespaceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResumeNamespaceResponse:
        validation.required(namespace=request.namespace, actor=request.actor)
        row = await self.commands.set_paused(
            request.namespace, False, request.actor, request.reason
        )
        return pb.ResumeNamespaceResponse(namespace=convert.namespace_message(row))

    async def UpdateNamespace(
        self, request: pb.UpdateNamespaceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateNamespaceResponse:
        validation.required(namespace=request.namespace, actor=request.actor)
        if request.max_parallel_tasks < 0:
            raise errors.InvalidArgument(
                "invalid max_parallel_tasks",
                [errors.FieldViolation("max_parallel_tasks", "must be 0 (no limit) or more")],
            )
        row = await self.commands.set_namespace_limit(
            request.namespace, request.max_parallel_tasks, request.actor, request.reason
        )
        return pb.UpdateNamespaceResponse(namespace=convert.namespace_message(row))

    async def ListNamespaces(
        self, request: pb.ListNamespacesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListNamespacesResponse:
        size = validation.page_size(request.page_size)
        after = _after(request.page_token, "namespaces")
        async with self.commands.db.session(read_only=True) as s:
            rows = await list_namespaces(s, after, size + 1)
        token = pagination.encode("namespaces", rows[size - 1].name) if len(rows) > size else ""
        return pb.ListNamespacesResponse(
            namespaces=[convert.namespace_message(r) for r in rows[:size]], next_page_token=token
        )
