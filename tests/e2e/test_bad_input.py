"""Bad input on the raw gRPC stubs: every malformed request gets the documented status code and
AIP-193 details (ErrorInfo reason, one BadRequest field violation per problem), and the server
keeps serving afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker.testing import WorkflowBuilder
from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import task_service_pb2_grpc as tgrpc
from tasker.v1 import template_service_pb2 as tmpb
from tasker.v1 import template_service_pb2_grpc as tmgrpc
from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc
from tests.e2e.workers.raw import Details, RawWorker, decode
from tests.support.server import RunningServer

NS = "badinput"
SCHEMA_YAML = (
    WorkflowBuilder("orders", NS)
    .input_schema(
        {
            "type": "object",
            "required": ["order_id", "customer"],
            "properties": {
                "order_id": {"type": "integer"},
                "customer": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"qty": {"type": "integer", "minimum": 1}},
                    },
                },
            },
        }
    )
    .step("only", "h")
    .build()
)
PLAIN_YAML = WorkflowBuilder("plain", NS).step("only", "h").build()


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    tasks: tgrpc.TaskServiceStub
    workers: wgrpc.WorkerServiceStub


def _struct(value: dict[str, object]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@pytest_asyncio.fixture
async def stubs(server: RunningServer) -> AsyncIterator[Stubs]:
    channel = grpc.aio.insecure_channel(server.address)
    templates = tmgrpc.TemplateServiceStub(channel)  # type: ignore[no-untyped-call]
    for text in (SCHEMA_YAML, PLAIN_YAML):
        await templates.RegisterTemplate(tmpb.RegisterTemplateRequest(yaml=text))
    try:
        yield Stubs(
            channel,
            tgrpc.TaskServiceStub(channel),  # type: ignore[no-untyped-call]
            wgrpc.WorkerServiceStub(channel),  # type: ignore[no-untyped-call]
        )
        # Whatever the test threw at it, the server still answers.
        reply = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[no-untyped-call]
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        created = await tgrpc.TaskServiceStub(channel).CreateTask(  # type: ignore[no-untyped-call]
            tpb.CreateTaskRequest(namespace=NS, template_name="plain"), timeout=5
        )
        assert created.created
    finally:
        await channel.close()


async def _create_fails(stubs: Stubs, **request: object) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.tasks.CreateTask(tpb.CreateTaskRequest(**request), timeout=10)  # type: ignore[arg-type]
    return decode(caught.value)


async def test_create_task_with_unknown_template_is_not_found(stubs: Stubs) -> None:
    details = await _create_fails(stubs, namespace=NS, template_name="no_such_template")
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason, "NOT_FOUND must carry an ErrorInfo reason"
    assert "no_such_template" in details.message

    details = await _create_fails(
        stubs, namespace=NS, template_name="plain", template_version="9.9.9"
    )
    assert details.code == grpc.StatusCode.NOT_FOUND


async def test_context_violating_input_schema_lists_each_problem_by_path(stubs: Stubs) -> None:
    context = {"order_id": "x", "customer": "c", "items": [{"qty": 0}, {"qty": "a"}]}
    details = await _create_fails(
        stubs, namespace=NS, template_name="orders", context=_struct(context)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_CONTEXT"
    assert sorted(details.fields) == [
        "context.items[0].qty",
        "context.items[1].qty",
        "context.order_id",
    ], details
    assert all(details.descriptions), "every violation needs a description"


async def test_missing_required_property_is_named_by_its_path(stubs: Stubs) -> None:
    details = await _create_fails(
        stubs, namespace=NS, template_name="orders", context=_struct({"order_id": 1})
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["context.customer"], details


async def test_missing_namespace_and_template_name_are_both_named(stubs: Stubs) -> None:
    details = await _create_fails(stubs)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(details.fields) == ["namespace", "template_name"], details


async def test_priority_out_of_range_is_invalid_argument(stubs: Stubs) -> None:
    for priority in (101, -1):
        details = await _create_fails(stubs, namespace=NS, template_name="plain", priority=priority)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.fields == ["priority"], details
    ok = await stubs.tasks.CreateTask(
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", priority=100)
    )
    assert ok.task.priority == 100


async def test_context_over_one_mib_is_resource_exhausted(stubs: Stubs) -> None:
    big = _struct({"blob": "x" * (1024 * 1024 + 16)})
    details = await _create_fails(stubs, namespace=NS, template_name="plain", context=big)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason
    listed = await stubs.tasks.ListTasks(tpb.ListTasksRequest(namespace=NS))
    assert list(listed.tasks) == [], "a rejected task must not be written"


async def test_list_tasks_rejects_malformed_page_token_and_page_size(stubs: Stubs) -> None:
    for request in (
        tpb.ListTasksRequest(page_token="not-a-token"),
        tpb.ListTasksRequest(page_token="!!!"),
        tpb.ListTasksRequest(page_size=501),
        tpb.ListTasksRequest(page_size=-1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.tasks.ListTasks(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


async def test_list_tasks_pages_return_every_task_once_newest_first(stubs: Stubs) -> None:
    created = []
    for i in range(7):
        reply = await stubs.tasks.CreateTask(
            tpb.CreateTaskRequest(namespace=NS, template_name="plain", context=_struct({"i": i}))
        )
        created.append(reply.task.task_id)
    seen: list[str] = []
    pages = []
    token = ""
    while True:
        page = await stubs.tasks.ListTasks(
            tpb.ListTasksRequest(namespace=NS, page_size=3, page_token=token)
        )
        pages.append(len(page.tasks))
        seen += [t.task_id for t in page.tasks]
        assert all(not t.steps for t in page.tasks), "ListTasks returns tasks without steps"
        token = page.next_page_token
        if not token:
            break
        assert len(pages) < 10, "pagination does not terminate"
    assert pages == [3, 3, 1]
    assert seen == list(reversed(created))


async def test_cancel_task_twice_names_the_cancelled_state(stubs: Stubs) -> None:
    task = (
        await stubs.tasks.CreateTask(tpb.CreateTaskRequest(namespace=NS, template_name="plain"))
    ).task
    first = await stubs.tasks.CancelTask(tpb.CancelTaskRequest(task_id=task.task_id, actor="t"))
    assert first.task.task_id == task.task_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.tasks.CancelTask(tpb.CancelTaskRequest(task_id=task.task_id, actor="t"))
    details = decode(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cancelled" in details.message.lower(), details.message

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stubs.tasks.CancelTask(tpb.CancelTaskRequest(task_id="987654"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _connect_fails(stubs: Stubs, first: wpb.ConnectRequest) -> Details:
    async def requests() -> AsyncIterator[wpb.ConnectRequest]:
        yield first
        await asyncio.sleep(30)  # keep the stream open: the server must end it

    call = stubs.workers.Connect(requests())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            async for _ in call:
                pass
    return decode(caught.value)


async def test_connect_without_hello_first_is_invalid_argument(stubs: Stubs) -> None:
    details = await _connect_fails(stubs, wpb.ConnectRequest(pong=wpb.KeepalivePong(nonce=1)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["hello"], details


async def test_hello_with_capacity_zero_names_hello_capacity(stubs: Stubs) -> None:
    hello = wpb.WorkerHello(worker_id="w0", namespaces=[NS], handlers=["h"], capacity=0)
    details = await _connect_fails(stubs, wpb.ConnectRequest(hello=hello))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["hello.capacity"], details

    empty = wpb.WorkerHello(worker_id="w0", capacity=1)
    details = await _connect_fails(stubs, wpb.ConnectRequest(hello=empty))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(details.fields) == ["hello.handlers", "hello.namespaces"], details


async def test_namespace_without_templates_is_reported_in_welcome(stubs: Stubs) -> None:
    worker = RawWorker(stubs.channel)
    try:
        welcome = await worker.connect("ghostly", [NS, "ghost_ns"], ["h"], capacity=1)
        assert list(welcome.unknown_namespaces) == ["ghost_ns"]
        assert welcome.worker_id == "ghostly"
        assert not worker.ended.is_set(), "an unknown namespace must not close the stream"
    finally:
        await worker.close()
