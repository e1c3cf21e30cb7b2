"""tasker.v1.TemplateService."""

from __future__ import annotations

from typing import Any

import grpc

from tasker.v1 import resources_pb2
from tasker.v1 import template_service_pb2 as pb
from tasker.v1 import template_service_pb2_grpc as pb_grpc
from tasker_server.domain import errors
from tasker_server.domain.templates import validate_template, version_key
from tasker_server.engine.commands import Commands
from tasker_server.store import templates as template_store

from . import convert, pagination, validation

__all__ = ["TemplateService"]


class TemplateService(pb_grpc.TemplateServiceServicer):
    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    async def RegisterTemplate(
        self, request: pb.RegisterTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegisterTemplateResponse:
        stored, created = await self.commands.register_template(request.yaml)
        defn = self.commands.definition(stored)
        return pb.RegisterTemplateResponse(
            template=convert.template_message(stored, defn, yaml=True), created=created
        )

    async def GetTemplate(
        self, request: pb.GetTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTemplateResponse:
        validation.required(namespace=request.namespace, name=request.name)
        stored = await self.commands.get_template(request.namespace, request.name, request.version)
        defn = self.commands.definition(stored)
        return pb.GetTemplateResponse(template=convert.template_message(stored, defn, yaml=True))

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTemplatesResponse:
        size = validation.page_size(request.page_size)
        position = pagination.decode(request.page_token, "templates", str, str, str)
        after = None
        if position is not None:
            ns, name, version = (str(p) for p in position)
            try:
                after = (ns, name, *version_key(version))
            except ValueError:
                raise pagination.invalid_token() from None
        async with self.commands.db.session(read_only=True) as s:
            rows = await template_store.list_templates(
                s, namespace=request.namespace, name=request.name, limit=size + 1, after=after
            )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = pagination.encode("templates", last.namespace, last.name, last.version)
        return pb.ListTemplatesResponse(
            templates=[
                convert.template_message(r, self.commands.definition(r), yaml=False)
                for r in rows[:size]
            ],
            next_page_token=token,
        )

    async def ValidateTemplate(
        self, request: pb.ValidateTemplateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ValidateTemplateResponse:
        self.commands.check_template_size(request.yaml)
        problems = (
            validate_template(request.yaml, self.commands.limits)
            if request.yaml.strip()
            else [errors.FieldViolation("yaml", "must not be empty")]
        )
        return pb.ValidateTemplateResponse(
            valid=not problems,
            problems=[
                resources_pb2.TemplateProblem(field=p.field, description=p.description)
                for p in problems
            ],
        )
