"""TemplateService over a real in-process server on both backends."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tasker.v1 import template_service_pb2 as pb
from tasker.v1 import template_service_pb2_grpc as pb_grpc
from tests.support.server import RunningServer

DIAMOND = """
name: diamond
namespace: shop
version: 1.0.0
step_templates:
  - name: a
    handler_class: noop
  - name: b
    handler_class: noop
    depends_on_steps: [a]
  - name: c
    handler_class: noop
    depends_on_steps: [a]
  - name: d
    handler_class: noop
    depends_on_steps: [b, c]
"""


def _details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status details")


def _violations(err: grpc.aio.AioRpcError) -> list[str]:
    out = []
    for detail in _details(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [v.field for v in bad.field_violations]
    return out


async def test_register_get_list_and_version_rules(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        first = await stub.RegisterTemplate(pb.RegisterTemplateRequest(yaml=DIAMOND))
        assert first.created and first.template.version == "1.0.0"
        assert [s.name for s in first.template.steps] == ["a", "b", "c", "d"]

        again = await stub.RegisterTemplate(
            pb.RegisterTemplateRequest(yaml=DIAMOND + "\n# same content, new comment\n")
        )
        assert not again.created
        assert again.template.content_hash == first.template.content_hash

        changed = DIAMOND.replace("depends_on_steps: [b, c]", "depends_on_steps: [b]")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.RegisterTemplate(pb.RegisterTemplateRequest(yaml=changed))
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS

        await stub.RegisterTemplate(
            pb.RegisterTemplateRequest(yaml=changed.replace("1.0.0", "1.10.0"))
        )
        await stub.RegisterTemplate(
            pb.RegisterTemplateRequest(yaml=changed.replace("1.0.0", "1.9.0"))
        )
        latest = await stub.GetTemplate(pb.GetTemplateRequest(namespace="shop", name="diamond"))
        assert latest.template.version == "1.10.0"

        page1 = await stub.ListTemplates(pb.ListTemplatesRequest(namespace="shop", page_size=2))
        page2 = await stub.ListTemplates(
            pb.ListTemplatesRequest(namespace="shop", page_size=2, page_token=page1.next_page_token)
        )
        versions = [t.version for t in page1.templates] + [t.version for t in page2.templates]
        assert versions == ["1.10.0", "1.9.0", "1.0.0"]
        assert page2.next_page_token == ""

        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetTemplate(pb.GetTemplateRequest(namespace="shop", name="nope"))
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


async def test_invalid_templates_report_every_problem(server: RunningServer) -> None:
    bad = """
name: broken
namespace: shop
version: 1.0.0
step_templates:
  - name: a
    handler_class: noop
    depends_on_steps: [c]
  - name: b
    handler_class: noop
    depends_on_steps: [b, ghost]
    retry: {max_attempts: 0}
  - name: c
    handler_class: noop
    depends_on_steps: [a]
  - name: c
    handler_class: noop
"""
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.TemplateServiceStub(channel)
        report = await stub.ValidateTemplate(pb.ValidateTemplateRequest(yaml=bad))
        assert not report.valid
        text = " | ".join(f"{p.field}: {p.description}" for p in report.problems)
        for expected in ("ghost", "cycle", "duplicate", "max_attempts", "itself"):
            assert expected in text.lower(), text

        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.RegisterTemplate(pb.RegisterTemplateRequest(yaml=bad))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(_violations(exc.value)) == len(report.problems) >= 5

        syntax = await stub.ValidateTemplate(pb.ValidateTemplateRequest(yaml="name: [oops\n"))
        assert not syntax.valid and "line" in syntax.problems[0].description
