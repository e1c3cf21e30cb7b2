"""Hostile input never hurts the server (issue 11): each finding of the review, replayed on the
raw stubs (and raw bytes), answers with its documented code -- never INTERNAL or UNKNOWN, never
a hang, never trailers a client refuses -- and the server keeps serving afterwards."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tasker.testing import WorkflowBuilder, to_yaml
from tasker.v1 import admin_service_pb2 as apb
from tasker.v1 import admin_service_pb2_grpc as agrpc
from tasker.v1 import event_service_pb2 as epb
from tasker.v1 import event_service_pb2_grpc as egrpc
from tasker.v1 import resources_pb2 as rpb
from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import task_service_pb2_grpc as tgrpc
from tasker.v1 import template_service_pb2 as tmpb
from tasker.v1 import template_service_pb2_grpc as tmgrpc
from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc
from tasker_server.app import App
from tasker_server.config import load_settings
from tests.e2e.workers.raw import Details, decode
from tests.support.server import FAST_TIMERS, RunningServer

NS = "hostile"
PLAIN_YAML = WorkflowBuilder("plain", NS).step("only", "h").build()
# Trailers a client accepts without complaint (gRPC's default soft limit is 8 KiB).
TRAILER_BUDGET = 6 * 1024


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    tasks: tgrpc.TaskServiceStub
    templates: tmgrpc.TemplateServiceStub
    admin: agrpc.AdminServiceStub
    workers: wgrpc.WorkerServiceStub
    events: egrpc.EventServiceStub


async def _serving(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[no-untyped-call]
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest_asyncio.fixture
async def stubs(server: RunningServer) -> AsyncIterator[Stubs]:
    channel = grpc.aio.insecure_channel(server.address)
    out = Stubs(
        channel,
        tgrpc.TaskServiceStub(channel),  # type: ignore[no-untyped-call]
        tmgrpc.TemplateServiceStub(channel),  # type: ignore[no-untyped-call]
        agrpc.AdminServiceStub(channel),  # type: ignore[no-untyped-call]
        wgrpc.WorkerServiceStub(channel),  # type: ignore[no-untyped-call]
        egrpc.EventServiceStub(channel),  # type: ignore[no-untyped-call]
    )
    await out.templates.RegisterTemplate(tmpb.RegisterTemplateRequest(yaml=PLAIN_YAML))
    try:
        yield out
        await _serving(channel)  # whatever the test threw at it, the server still answers
    finally:
        await channel.close()


async def _fails(call: Any, request: Any) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, timeout=10)
    return _checked(caught.value)


def _checked(error: grpc.aio.AioRpcError) -> Details:
    """The error's details, after checking it is a deliberate answer of a bounded size."""
    assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error
    size = sum(len(k) + len(v) for k, v in error.trailing_metadata() or ())
    assert size <= TRAILER_BUDGET, f"{size} bytes of trailers"
    return decode(error)


# --- YAML --------------------------------------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi", strict=True)
)
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"{x}: &{x} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, x in zip("abcdef", "bcdefg", strict=True)
)
HOSTILE_YAML = {
    "billion laughs": BILLION_LAUGHS,
    "recursive alias": "name: &x [1, *x]",
    "alias bomb": ALIAS_BOMB,
    "nested 5,000 lists": "name: " + "[" * 5000 + "]" * 5000,
    "nested 5,000 mappings": "name: " + "{a: " * 5000 + "}" * 5000,
    "NUL": PLAIN_YAML.replace("plain", "pl\0ain", 1),
    "control character": PLAIN_YAML + "description: \x1b[31m\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
async def test_hostile_yaml_is_refused_quickly_naming_yaml_with_a_position(
    stubs: Stubs, case: str
) -> None:
    text = HOSTILE_YAML[case]
    started = time.monotonic()
    request = tmpb.RegisterTemplateRequest(yaml=text)
    details = await _fails(stubs.templates.RegisterTemplate, request)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.fields == ["yaml"], details
    assert "line " in details.descriptions[0] and "column " in details.descriptions[0], details
    try:
        checked = await stubs.templates.ValidateTemplate(
            tmpb.ValidateTemplateRequest(yaml=text), timeout=10
        )
        assert not checked.valid
        assert [p.field for p in checked.problems] == ["yaml"]
    except grpc.aio.AioRpcError as exc:  # NUL: refused for every request, as bad input
        assert _checked(exc).fields == ["yaml"]
    assert time.monotonic() - started < 5, "refused before expanding or recursing"


async def test_template_past_the_step_limit_names_step_templates(stubs: Stubs) -> None:
    builder = WorkflowBuilder("many", NS)
    for i in range(1001):
        builder = builder.step(f"s{i}", "h")
    details = await _fails(
        stubs.templates.RegisterTemplate, tmpb.RegisterTemplateRequest(yaml=_unchecked(builder))
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["step_templates"], details


async def test_a_thousand_step_cycle_answers_with_bounded_trailers(stubs: Stubs) -> None:
    builder = WorkflowBuilder("cycle", NS)
    for i in range(1000):
        builder = builder.step(f"step_{i:04d}", "h", depends_on=[f"step_{(i + 1) % 1000:04d}"])
    details = await _fails(
        stubs.templates.RegisterTemplate,
        tmpb.RegisterTemplateRequest(yaml=_unchecked(builder)),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details


def _unchecked(builder: WorkflowBuilder) -> str:
    """The YAML of an invalid template (the builder validates what it builds)."""
    return to_yaml(builder.to_dict())


# --- ids, numbers, timestamps, enums -----------------------------------------------------------

BAD_IDS = ["²", "١٢٣", "1" * 19, "9" * 10_000, "-1", " 1"]


async def test_malformed_task_ids_are_not_found_everywhere(stubs: Stubs) -> None:
    calls: list[tuple[Callable[..., Any], Callable[[str], Any]]] = [
        (stubs.tasks.GetTask, lambda i: tpb.GetTaskRequest(task_id=i)),
        (stubs.tasks.CancelTask, lambda i: tpb.CancelTaskRequest(task_id=i, actor="t")),
        (
            stubs.admin.RetryStep,
            lambda i: apb.RetryStepRequest(task_id=i, step_name="only", actor="t"),
        ),
        (
            stubs.admin.ResolveTaskManually,
            lambda i: apb.ResolveTaskManuallyRequest(task_id=i, actor="t"),
        ),
        (
            stubs.admin.CompleteStepManually,
            lambda i: apb.CompleteStepManuallyRequest(task_id=i, step_name="only", actor="t"),
        ),
    ]
    for bad in BAD_IDS:
        for call, make in calls:
            details = await _fails(call, make(bad))
            assert details.code == grpc.StatusCode.NOT_FOUND, (bad, details)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stubs.tasks.WatchTask(tpb.WatchTaskRequest(task_id=bad), timeout=10):
                pass
        assert _checked(caught.value).code == grpc.StatusCode.NOT_FOUND


def _nested(depth: int) -> struct_pb2.Struct:
    inner: dict[str, Any] = {}
    for _ in range(depth - 1):
        inner = {"a": inner}
    out = struct_pb2.Struct()
    out.update(inner)
    return out


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_non_finite_context_numbers_name_the_field(stubs: Stubs, value: float) -> None:
    context = struct_pb2.Struct()
    context.update({"ok": 1, "list": [1, {"bad": value}]})
    details = await _fails(
        stubs.tasks.CreateTask,
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", context=context),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["context.list[1].bad"], details


async def test_context_nesting_is_bounded(stubs: Stubs) -> None:
    ok = await stubs.tasks.CreateTask(
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", context=_nested(32))
    )
    assert ok.created
    # 33 levels: past the documented limit (and protobuf's own recursion limit).
    details = await _fails(
        stubs.tasks.CreateTask,
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", context=_nested(33)),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (253_402_300_800, 0),  # 10000-01-01
        (2**62, 0),
        (-62_135_596_801, 0),  # before 0001-01-01
        (1_800_000_000, 2_000_000_000),
        (1_800_000_000, -1),
    ],
)
async def test_out_of_range_deadline_names_deadline(stubs: Stubs, seconds: int, nanos: int) -> None:
    deadline = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    details = await _fails(
        stubs.tasks.CreateTask,
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", deadline=deadline),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["deadline"], details


async def test_undefined_enum_numbers_name_the_field(stubs: Stubs) -> None:
    details = await _fails(stubs.tasks.ListTasks, tpb.ListTasksRequest(state=12345))  # type: ignore[arg-type]
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["state"], details

    failure = wpb.StepFailure(
        lease_id="lease",
        error=rpb.StepError(error_class=999, message="x"),  # type: ignore[arg-type]
    )
    details = await _fails(
        stubs.workers.ReportStepResult, wpb.ReportStepResultRequest(worker_id="w", failure=failure)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["failure.error.error_class"], details


async def test_non_finite_result_in_report_names_the_field(stubs: Stubs) -> None:
    result = struct_pb2.Struct()
    result.update({"score": math.nan})
    success = wpb.StepSuccess(lease_id="lease", result=result)
    details = await _fails(
        stubs.workers.ReportStepResult, wpb.ReportStepResultRequest(worker_id="w", success=success)
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["success.result.score"], details


async def test_long_ids_are_echoed_within_bounded_trailers(stubs: Stubs) -> None:
    long = "x" * 10_000
    details = await _fails(
        stubs.workers.ReportStepResult,
        wpb.ReportStepResultRequest(worker_id="w", success=wpb.StepSuccess(lease_id=long)),
    )
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION, details
    details = await _fails(stubs.tasks.GetTask, tpb.GetTaskRequest(task_id="9" * 10_000))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert len(details.message) < 1024


# --- requests that do not decode ---------------------------------------------------------------


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    size, out = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([number << 3 | 2]) + bytes(out) + payload


def _deep_struct(depth: int) -> bytes:
    """A Struct {"a": [[[...]]]} whose list values nest ``depth`` levels."""
    value = b""
    for _ in range(depth):
        value = _field(6, _field(1, value))  # Value.list_value = ListValue{values: [value]}
    return _field(1, _field(1, b"a") + _field(2, value))  # Struct.fields entry "a"


UNDECODABLE = {
    "garbage": ("/tasker.v1.TaskService/GetTask", b"\xff\xff\xff\xff"),
    "truncated": ("/tasker.v1.TaskService/CreateTask", _field(1, b"hostile")[:-3]),
    "invalid UTF-8 namespace": (
        "/tasker.v1.TaskService/CreateTask",
        _field(1, b"\xff\xfe") + _field(2, b"plain"),
    ),
    "invalid UTF-8 template": ("/tasker.v1.TemplateService/RegisterTemplate", _field(1, b"\xc3")),
    "context nested 60 levels": (
        "/tasker.v1.TaskService/CreateTask",
        _field(1, NS.encode()) + _field(2, b"plain") + _field(4, _deep_struct(60)),
    ),
    "result nested 1,000 levels": (
        "/tasker.v1.WorkerService/ReportStepResult",
        _field(1, _field(1, b"lease") + _field(2, _deep_struct(1000))),
    ),
    "server stream": ("/tasker.v1.EventService/WatchEvents", b"\x0a\x05ab"),
}


@pytest.mark.parametrize("case", sorted(UNDECODABLE))
async def test_undecodable_requests_are_invalid_argument(stubs: Stubs, case: str) -> None:
    method, body = UNDECODABLE[case]
    streaming = method.endswith("WatchEvents")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            call = stubs.channel.unary_stream(method)
            async for _ in call(body, timeout=10):
                pass
        else:
            await stubs.channel.unary_unary(method)(body, timeout=10)
    details = _checked(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.reason == "REQUEST_UNDECODABLE", details
    assert details.fields == ["request"], details


async def test_connect_with_an_undecodable_first_frame_is_invalid_argument(stubs: Stubs) -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield b"\xff\xff\xff"
        await asyncio.sleep(30)  # the server must end the stream

    call = stubs.channel.stream_stream("/tasker.v1.WorkerService/Connect")(frames())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            async for _ in call:
                pass
    details = _checked(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details


async def test_bad_frames_on_connect_are_answered_and_the_stream_goes_on(stubs: Stubs) -> None:
    # Each bad frame gets its own `rejected` answer (code, reason, the lease when readable); the
    # stream, and the lease, go on: a corrected result is then accepted and the task completes.
    outbound: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def frames() -> AsyncIterator[bytes]:
        while (frame := await outbound.get()) is not None:
            yield frame

    connect = stubs.channel.stream_stream(
        "/tasker.v1.WorkerService/Connect", response_deserializer=wpb.ConnectResponse.FromString
    )
    call = connect(frames())
    replies = call.__aiter__()

    async def next_of(kind: str) -> wpb.ConnectResponse:
        async with asyncio.timeout(10):
            while True:
                reply: wpb.ConnectResponse = await replies.__anext__()
                if reply.WhichOneof("message") == kind:
                    return reply

    def send(**kind: Any) -> None:
        outbound.put_nowait(wpb.ConnectRequest(**kind).SerializeToString())

    hello = wpb.WorkerHello(worker_id="raw-frames", namespaces=[NS], handlers=["h"], capacity=1)
    send(hello=hello)
    await next_of("welcome")
    task = (
        await stubs.tasks.CreateTask(tpb.CreateTaskRequest(namespace=NS, template_name="plain"))
    ).task
    lease = (await next_of("assignment")).assignment.lease_id
    lease_field = _field(1, lease.encode())
    nan = struct_pb2.Struct()
    nan.update({"v": math.nan})
    nul = struct_pb2.Struct()
    nul.update({"v": "a\0b"})
    bad = {
        "garbage": (b"\xff\xff\xff", "REQUEST_UNDECODABLE", ""),
        "nested 1,000 levels": (
            _field(4, lease_field + _field(2, _deep_struct(1000))),
            "REQUEST_UNDECODABLE",
            "",
        ),
        "invalid UTF-8 lease id": (_field(4, _field(1, b"\xff\xfe")), "REQUEST_UNDECODABLE", ""),
        "NaN": (
            wpb.ConnectRequest(result=wpb.StepSuccess(lease_id=lease, result=nan)),
            "INVALID_ARGUMENT",
            lease,
        ),
        "NUL": (
            wpb.ConnectRequest(result=wpb.StepSuccess(lease_id=lease, result=nul)),
            "INVALID_ARGUMENT",
            lease,
        ),
    }
    try:
        for name, (frame, reason, about) in bad.items():
            outbound.put_nowait(frame if isinstance(frame, bytes) else frame.SerializeToString())
            rejected = (await next_of("rejected")).rejected
            assert (rejected.code, rejected.reason, rejected.lease_id) == (
                "INVALID_ARGUMENT",
                reason,
                about,
            ), (name, rejected)
            assert len(rejected.message) <= 400, name
        good = struct_pb2.Struct()
        good.update({"value": 1})
        send(result=wpb.StepSuccess(lease_id=lease, result=good))
        ack = (await next_of("result_ack")).result_ack
        assert (ack.lease_id, ack.accepted) == (lease, True)
        reply = await stubs.tasks.GetTask(tpb.GetTaskRequest(task_id=task.task_id))
        assert reply.task.steps[0].state == rpb.STEP_STATE_COMPLETE
    finally:
        outbound.put_nowait(None)
        call.cancel()


# --- watches -----------------------------------------------------------------------------------


async def test_watch_task_from_beyond_the_log_ends_when_the_task_does(stubs: Stubs) -> None:
    task = (
        await stubs.tasks.CreateTask(tpb.CreateTaskRequest(namespace=NS, template_name="plain"))
    ).task
    seen: list[str] = []

    async def watch() -> None:
        request = tpb.WatchTaskRequest(task_id=task.task_id, after_sequence=10**15)
        async for reply in stubs.tasks.WatchTask(request, timeout=20):
            seen.append(reply.event.event_name)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    await stubs.tasks.CancelTask(tpb.CancelTaskRequest(task_id=task.task_id, actor="t"))
    async with asyncio.timeout(10):
        await watcher
    assert seen[-1] == "task.cancelled", seen
    # And once finished, the same far-future watch ends at once.
    async with asyncio.timeout(5):
        async for _ in stubs.tasks.WatchTask(
            tpb.WatchTaskRequest(task_id=task.task_id, after_sequence=10**15)
        ):
            pass


@pytest_asyncio.fixture
async def limited(db_url: str) -> AsyncIterator[RunningServer]:
    overrides = {
        "listen": "127.0.0.1:0",
        "database_url": db_url,
        **FAST_TIMERS,
        "max_watch_streams": 3,
        "max_watch_streams_per_client": 2,
    }
    app = await App.start(load_settings(environ={}, overrides=overrides))
    try:
        yield RunningServer(app, f"127.0.0.1:{app.port}", db_url)
    finally:
        await app.stop(grace=0.5)


async def _first_reply_or_error(call: Any) -> grpc.aio.AioRpcError | None:
    """The error ending ``call`` within a second, or None if it is still open (admitted).
    (Cancelling a pending ``read()`` would cancel the call itself: poll instead.)"""
    for _ in range(20):
        if call.done():
            break
        await asyncio.sleep(0.05)
    if not call.done():
        return None
    try:
        await call.read()
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def test_watch_streams_are_capped_per_client_and_per_server(limited: RunningServer) -> None:
    async with grpc.aio.insecure_channel(limited.address) as channel:
        events = egrpc.EventServiceStub(channel)  # type: ignore[no-untyped-call]
        open_calls = [events.WatchEvents(epb.WatchEventsRequest()) for _ in range(2)]
        for call in open_calls:
            assert await _first_reply_or_error(call) is None
        third = events.WatchEvents(epb.WatchEventsRequest())
        error = await _first_reply_or_error(third)
        assert error is not None, "a third stream from one client must be refused"
        details = _checked(error)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.metadata.get("scope") == "client", details
        # Closing one frees its slot.
        open_calls.pop().cancel()
        await asyncio.sleep(0.3)
        again = events.WatchEvents(epb.WatchEventsRequest())
        assert await _first_reply_or_error(again) is None
        open_calls.append(again)
        for call in open_calls:
            call.cancel()
        await _serving(channel)


# --- page tokens -------------------------------------------------------------------------------


async def test_malformed_page_tokens_are_invalid_argument_on_every_list(stubs: Stubs) -> None:
    lists: list[tuple[Any, Callable[[str], Any]]] = [
        (stubs.tasks.ListTasks, lambda t: tpb.ListTasksRequest(page_token=t)),
        (stubs.templates.ListTemplates, lambda t: tmpb.ListTemplatesRequest(page_token=t)),
        (stubs.admin.ListWorkers, lambda t: apb.ListWorkersRequest(page_token=t)),
        (stubs.admin.ListNamespaces, lambda t: apb.ListNamespacesRequest(page_token=t)),
    ]
    for token in ("%%%", "!!!", "not-a-token", "W10", "x" * 5000, "é"):
        for call, make in lists:
            details = await _fails(call, make(token))
            assert details.code == grpc.StatusCode.INVALID_ARGUMENT, (token, details)
            assert details.fields == ["page_token"], details


async def test_page_tokens_page_and_belong_to_their_rpc(stubs: Stubs) -> None:
    for name in ("hostile_a", "hostile_b", "hostile_c"):
        await stubs.templates.RegisterTemplate(
            tmpb.RegisterTemplateRequest(yaml=WorkflowBuilder("t", name).step("s", "h").build())
        )
    names: list[str] = []
    token = ""
    while True:
        page = await stubs.admin.ListNamespaces(
            apb.ListNamespacesRequest(page_size=2, page_token=token)
        )
        names += [n.name for n in page.namespaces]
        token = page.next_page_token
        if not token:
            break
        foreign = token
    assert names == sorted(names) and len(names) == len(set(names)) >= 4, names
    details = await _fails(stubs.admin.ListWorkers, apb.ListWorkersRequest(page_token=foreign))
    assert details.fields == ["page_token"], details


# --- idempotency -------------------------------------------------------------------------------


async def test_reused_idempotency_key_with_another_request_is_already_exists(
    stubs: Stubs,
) -> None:
    def request(context: dict[str, Any]) -> tpb.CreateTaskRequest:
        value = struct_pb2.Struct()
        value.update(context)
        return tpb.CreateTaskRequest(
            namespace=NS, template_name="plain", idempotency_key="order-42", context=value
        )

    first = await stubs.tasks.CreateTask(request({"order": 42, "items": [1.5, "x"]}))
    assert first.created
    again = await stubs.tasks.CreateTask(request({"order": 42, "items": [1.5, "x"]}))
    assert not again.created and again.task.task_id == first.task.task_id
    details = await _fails(stubs.tasks.CreateTask, request({"order": 43}))
    assert details.code == grpc.StatusCode.ALREADY_EXISTS, details
    assert details.reason == "IDEMPOTENCY_KEY_REUSED"
    assert details.metadata["task_id"] == first.task.task_id


# --- strings the database cannot hold ---------------------------------------------------------


async def test_nul_characters_and_oversized_names_are_refused_at_the_door(stubs: Stubs) -> None:
    context = struct_pb2.Struct()
    context.update({"note": "a\x00b"})
    details = await _fails(
        stubs.tasks.CreateTask,
        tpb.CreateTaskRequest(namespace=NS, template_name="plain", context=context),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["context.note"], details

    for namespace in ("9" * 400, "ns\x00"):
        details = await _fails(
            stubs.admin.PauseNamespace, apb.PauseNamespaceRequest(namespace=namespace, actor="t")
        )
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.fields == ["namespace"], details
    details = await _fails(
        stubs.admin.ResetCircuitBreaker, apb.ResetCircuitBreakerRequest(key="\x00", actor="t")
    )
    assert details.fields == ["key"], details


async def test_long_filter_lists_are_refused_naming_the_field(stubs: Stubs) -> None:
    request = epb.WatchEventsRequest(namespaces=[f"ns{i}" for i in range(40_000)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stubs.events.WatchEvents(request, timeout=10):
            pass
    details = _checked(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.fields == ["namespaces"], details


async def test_templates_with_ordinary_aliases_still_register(stubs: Stubs) -> None:
    # PyYAML's dumper writes an anchor and an alias for a value used twice.
    text = (
        'name: shared\nnamespace: hostile\nversion: "1.0.0"\nstep_templates:\n'
        "- {name: a, handler_class: h, retry: &r {max_attempts: 3}}\n"
        "- {name: b, handler_class: h, retry: *r, depends_on_steps: [a]}\n"
    )
    reply = await stubs.templates.RegisterTemplate(tmpb.RegisterTemplateRequest(yaml=text))
    assert reply.created
    assert [s.retry.max_attempts for s in reply.template.steps] == [3, 3]
