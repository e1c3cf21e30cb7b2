"""tasker.v1.AdminService (operator actions; the failure-model actions arrive with issue 4)."""

from __future__ import annotations

import base64
from typing import Any

import grpc
from sqlalchemy import select

from tasker.v1 import admin_service_pb2 as pb
from tasker.v1 import admin_service_pb2_grpc as pb_grpc
from tasker_server.domain import errors
from tasker_server.engine.commands import Commands
from tasker_server.store.models import Namespace, Worker

from . import convert, validation

__all__ = ["AdminService"]


def _after(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except Exception:
        raise errors.InvalidArgument(
            "invalid page_token",
            [errors.FieldViolation("page_token", "not a token from a previous response")],
        ) from None


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode()


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        size = validation.page_size(request.page_size)
        after = _after(request.page_token)
        async with self.commands.db.session(read_only=True) as s:
            query = select(Worker).where(Worker.state != "disconnected", Worker.id > after)
            rows = list((await s.execute(query.order_by(Worker.id))).scalars().all())
        # Connected workers are few; filtering the JSON list here keeps the query portable and
        # the page full.
        if request.namespace:
            rows = [r for r in rows if request.namespace in (r.namespaces or [])]
        live = self.commands.engine.sessions
        workers = []
        for row in rows[:size]:
            msg = convert.worker_message(row)
            if row.id in live:
                msg.in_flight = len(live[row.id].leases)
            workers.append(msg)
        token = _token(rows[size - 1].id) if len(rows) > size else ""
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
        after = _after(request.page_token)
        async with self.commands.db.session(read_only=True) as s:
            query = select(Namespace).where(Namespace.name > after).order_by(Namespace.name)
            rows = (await s.execute(query.limit(size + 1))).scalars().all()
        token = _token(rows[size - 1].name) if len(rows) > size else ""
        return pb.ListNamespacesResponse(
            namespaces=[convert.namespace_message(r) for r in rows[:size]], next_page_token=token
        )
