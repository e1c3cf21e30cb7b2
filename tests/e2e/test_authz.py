"""Authorization by role and namespace against a real ``tasker serve`` process (``auth_file``).

The table test calls every Tasker RPC (enumerated from the proto descriptors) as every role,
inside its namespace and outside it, and compares the outcome with ``ALLOWED`` below, written by
hand from the README's Authorization table (not derived from the server's rule table). A new RPC
without a rule, or without a request here, fails ``test_every_rpc_has_a_rule_and_a_probe``.

Setup (as an admin on every namespace): the same one-step template in namespaces ``authz_in``
and ``authz_out``, one task in each, and a raw worker holding (acknowledged) the lease of each
task's step, so that task-id and lease-id based calls resolve to a real namespace. Every
principal under test is limited to ``authz_in``; calls that succeed only ever change
``authz_in``, so the ``authz_out`` probes always meet the same state.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from google.protobuf import descriptor_pool, message_factory

from tasker import Client, NotFoundError, PermissionDeniedError, UnauthenticatedError, Worker
from tasker.v1 import admin_service_pb2 as apb
from tasker.v1 import event_service_pb2 as epb
from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import template_service_pb2 as tmpb
from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc
from tasker_server.api.access_rules import RULES, missing_rules, tasker_methods
from tests.e2e.workers.raw import RawWorker, decode
from tests.support.server import ServerProcess

IN, OUT = "authz_in", "authz_out"
ROLES = ("worker", "submitter", "reader", "operator", "admin")
ROOT_TOKEN = "root-token-0123456789abcdef"


def token(role: str) -> str:
    return f"{role}-token-0123456789abcdef"


def md(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def _methods(service: str, *names: str) -> set[str]:
    return {f"/tasker.v1.{service}/{n}" for n in names}


# Hand-written from the README's roles x permissions table.
_READS = (
    _methods("TaskService", "GetTask", "ListTasks", "WatchTask")
    | _methods("TemplateService", "GetTemplate", "ListTemplates", "ValidateTemplate")
    | _methods("AdminService", "ListWorkers", "GetCircuitBreakers", "ListNamespaces")
    | _methods("EventService", "WatchEvents")
)
ALLOWED: dict[str, set[str]] = {
    "worker": _methods("WorkerService", "Connect", "Heartbeat", "ReportStepResult"),
    "submitter": _methods("TaskService", "CreateTask", "GetTask", "ListTasks", "CancelTask")
    | _methods("TaskService", "WatchTask")
    | _methods("TemplateService", "GetTemplate", "ListTemplates", "ValidateTemplate"),
    "reader": _READS,
    "operator": _READS
    | _methods("TaskService", "CancelTask")
    | _methods(
        "AdminService",
        "RetryStep",
        "ResolveStepManually",
        "CompleteStepManually",
        "ResolveTaskManually",
        "PauseNamespace",
        "ResumeNamespace",
    ),
    "admin": set(tasker_methods()),
}
# Calls over every namespace need `*`; template validation touches none.
SPANS_EVERY = _methods(
    "AdminService", "GetCircuitBreakers", "ResetCircuitBreaker", "ListNamespaces"
)
NO_NAMESPACE = _methods("TemplateService", "ValidateTemplate")


def expected_allowed(role: str, method: str, inside: bool) -> bool:
    if method not in ALLOWED[role]:
        return False
    return method in NO_NAMESPACE or (inside and method not in SPANS_EVERY)


def template(namespace: str) -> str:
    return f"""
name: authz_probe
namespace: {namespace}
version: 1.0.0
step_templates:
  - {{name: work, handler_class: authz_step, timeout_seconds: 3600}}
"""


def auth_file(path: Path, extra: Sequence[dict[str, Any]] = ()) -> None:
    principals = [
        {"identity": "root", "token": ROOT_TOKEN, "namespaces": ["*"], "roles": ["admin"]},
        *(
            {"identity": f"{r}-in", "token": token(r), "namespaces": [IN], "roles": [r]}
            for r in ROLES
        ),
        *extra,
    ]
    path.write_text(yaml.safe_dump({"principals": principals}))


@dataclass
class Probe:
    address: str
    task_ids: dict[str, str]
    lease_ids: dict[str, str]


@pytest.fixture(scope="module")
def authz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("authz")
    auth_file(directory / "auth.yaml")
    server = ServerProcess(
        f"sqlite+aiosqlite:///{directory / 'tasker.db'}", auth_file=str(directory / "auth.yaml")
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(scope="module")
async def probe(authz_server: ServerProcess) -> AsyncIterator[Probe]:
    address = authz_server.address
    channel = grpc.aio.insecure_channel(address)
    worker = RawWorker(channel)
    async with Client(address, token=ROOT_TOKEN) as root:
        task_ids: dict[str, str] = {}
        for ns in (IN, OUT):
            await root.register_template(template(ns))
            task_ids[ns] = (await root.create_task(ns, "authz_probe", {})).task_id
        await worker.connect(
            "authz-root-worker", [IN, OUT], ["authz_step"], capacity=2, metadata=md(ROOT_TOKEN)
        )
        lease_ids: dict[str, str] = {}
        for _ in (IN, OUT):
            assignment = (await worker.next("assignment")).assignment
            worker.send(ack=wpb.AssignmentAck(lease_id=assignment.lease_id))
            lease_ids[assignment.context.task.namespace] = assignment.lease_id
        try:
            yield Probe(address, task_ids, lease_ids)
        finally:
            await worker.close()
            await channel.close()


def request_for(method: str, ns: str, p: Probe) -> Any:
    """One plausible request of ``method`` aimed at namespace ``ns``."""
    task_id, lease_id = p.task_ids[ns], p.lease_ids[ns]
    step = {"task_id": task_id, "step_name": "work", "reason": "authz test"}
    builders: dict[str, Any] = {
        "/tasker.v1.TaskService/CreateTask": lambda: tpb.CreateTaskRequest(
            namespace=ns, template_name="authz_probe"
        ),
        "/tasker.v1.TaskService/GetTask": lambda: tpb.GetTaskRequest(task_id=task_id),
        "/tasker.v1.TaskService/ListTasks": lambda: tpb.ListTasksRequest(namespace=ns),
        "/tasker.v1.TaskService/CancelTask": lambda: tpb.CancelTaskRequest(task_id=task_id),
        "/tasker.v1.TaskService/WatchTask": lambda: tpb.WatchTaskRequest(task_id=task_id),
        "/tasker.v1.TemplateService/RegisterTemplate": lambda: tmpb.RegisterTemplateRequest(
            yaml=template(ns)
        ),
        "/tasker.v1.TemplateService/GetTemplate": lambda: tmpb.GetTemplateRequest(
            namespace=ns, name="authz_probe"
        ),
        "/tasker.v1.TemplateService/ListTemplates": lambda: tmpb.ListTemplatesRequest(namespace=ns),
        "/tasker.v1.TemplateService/ValidateTemplate": lambda: tmpb.ValidateTemplateRequest(
            yaml=template(ns)
        ),
        "/tasker.v1.WorkerService/Connect": lambda: wpb.ConnectRequest(
            hello=wpb.WorkerHello(namespaces=[ns], handlers=["authz_idle"], capacity=1)
        ),
        "/tasker.v1.WorkerService/Heartbeat": lambda: wpb.HeartbeatRequest(lease_ids=[lease_id]),
        "/tasker.v1.WorkerService/ReportStepResult": lambda: wpb.ReportStepResultRequest(
            success=wpb.StepSuccess(lease_id=lease_id)
        ),
        "/tasker.v1.AdminService/RetryStep": lambda: apb.RetryStepRequest(**step),
        "/tasker.v1.AdminService/ResolveStepManually": lambda: apb.ResolveStepManuallyRequest(
            **step
        ),
        "/tasker.v1.AdminService/CompleteStepManually": lambda: apb.CompleteStepManuallyRequest(
            **step
        ),
        "/tasker.v1.AdminService/ResolveTaskManually": lambda: apb.ResolveTaskManuallyRequest(
            task_id=task_id, reason="authz test"
        ),
        "/tasker.v1.AdminService/ListWorkers": lambda: apb.ListWorkersRequest(namespace=ns),
        "/tasker.v1.AdminService/GetCircuitBreakers": lambda: apb.GetCircuitBreakersRequest(),
        "/tasker.v1.AdminService/ResetCircuitBreaker": lambda: apb.ResetCircuitBreakerRequest(
            key="authz_step", reason="authz test"
        ),
        "/tasker.v1.AdminService/PauseNamespace": lambda: apb.PauseNamespaceRequest(namespace=ns),
        "/tasker.v1.AdminService/ResumeNamespace": lambda: apb.ResumeNamespaceRequest(namespace=ns),
        "/tasker.v1.AdminService/UpdateNamespace": lambda: apb.UpdateNamespaceRequest(namespace=ns),
        "/tasker.v1.AdminService/ListNamespaces": lambda: apb.ListNamespacesRequest(),
        "/tasker.v1.EventService/WatchEvents": lambda: epb.WatchEventsRequest(namespaces=[ns]),
    }
    if method not in builders:
        pytest.fail(f"no probe request for {method}: add one to request_for()")
    return builders[method]()


PROBED = sorted(tasker_methods())


async def call(channel: grpc.aio.Channel, method: str, request: Any, secret: str) -> Any:
    """OK, or the AioRpcError the call ended with (streams: after their first message)."""
    desc = descriptor_pool.Default().FindMethodByName(method.strip("/").replace("/", "."))
    reply = message_factory.GetMessageClass(desc.output_type).FromString
    kwargs = {"request_serializer": type(request).SerializeToString, "response_deserializer": reply}
    try:
        if desc.client_streaming:
            stream = channel.stream_stream(method, **kwargs)(
                iter([request]), metadata=md(secret), timeout=10
            )
            await stream.read()
            stream.cancel()
        elif desc.server_streaming:
            stream = channel.unary_stream(method, **kwargs)(
                request, metadata=md(secret), timeout=10
            )
            await stream.read()
            stream.cancel()
        else:
            await channel.unary_unary(method, **kwargs)(request, metadata=md(secret), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    return "OK"


def test_every_rpc_has_a_rule_and_a_probe() -> None:
    assert missing_rules() == []
    assert set(RULES) == set(tasker_methods()), "RULES names an RPC that does not exist"
    assert set().union(*ALLOWED.values()) <= set(tasker_methods())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("inside", [True, False], ids=["in-namespace", "other-namespace"])
async def test_every_rpc_as_every_role(probe: Probe, role: str, inside: bool) -> None:
    ns = IN if inside else OUT
    wrong = []
    async with grpc.aio.insecure_channel(probe.address) as channel:
        for method in PROBED:
            outcome = await call(channel, method, request_for(method, ns, probe), token(role))
            denied = (
                isinstance(outcome, grpc.aio.AioRpcError)
                and outcome.code() == grpc.StatusCode.PERMISSION_DENIED
            )
            if isinstance(outcome, grpc.aio.AioRpcError):
                assert outcome.code() != grpc.StatusCode.UNAUTHENTICATED, method
            if denied != (not expected_allowed(role, method, inside)):
                code = outcome if outcome == "OK" else outcome.code().name
                wrong.append(f"{method}: {code}")
            elif denied:
                details = decode(outcome)
                permission = str(RULES[method].permission)
                assert details.reason == "PERMISSION_DENIED"
                assert details.metadata["permission"] == permission
                assert f"'{role}-in' (roles {role}) lacks permission {permission}" in (
                    details.message
                ), details.message
    assert not wrong, f"role {role}, {'in' if inside else 'outside'} its namespace:\n" + "\n".join(
        wrong
    )


async def test_denial_names_the_permission_and_namespace(probe: Probe) -> None:
    async with Client(probe.address, token=token("reader")) as client:
        with pytest.raises(PermissionDeniedError) as info:
            await client.cancel_task(probe.task_ids[IN])
        assert "identity 'reader-in' (roles reader) lacks permission tasks.cancel" in str(
            info.value
        )
        with pytest.raises(PermissionDeniedError) as info:
            await client.get_task(probe.task_ids[OUT])
        assert f"lacks permission tasks.read in namespace '{OUT}'" in str(info.value)
        assert info.value.metadata["namespace"] == OUT
        # A list over every namespace needs `*`: a limited principal must name its namespace.
        with pytest.raises(PermissionDeniedError) as info:
            async for _ in client.list_tasks():
                pass
        assert "lacks permission tasks.read in every namespace" in str(info.value)
        assert {t.namespace async for t in client.list_tasks(namespace=IN)} == {IN}


async def test_unknown_task_is_not_found_for_a_holder_of_the_permission(probe: Probe) -> None:
    async with Client(probe.address, token=token("reader")) as client:
        with pytest.raises(NotFoundError):
            await client.get_task("987654321")
    async with Client(probe.address, token=token("worker")) as client:
        with pytest.raises(PermissionDeniedError):
            await client.get_task("987654321")


async def test_missing_or_unknown_credentials_stay_unauthenticated(probe: Probe) -> None:
    for secret in (None, "nobody-token-0123456789abcdef"):
        async with Client(probe.address, token=secret) as client:
            with pytest.raises(UnauthenticatedError):
                await client.get_task(probe.task_ids[IN])


async def test_a_worker_outside_its_namespaces_stops_with_permission_denied(probe: Probe) -> None:
    worker = Worker(probe.address, [IN, OUT], capacity=1, token=token("worker"))
    worker.register("authz_idle", lambda ctx: {})
    with pytest.raises(PermissionDeniedError) as info:
        await asyncio.wait_for(worker.run(), 20)
    assert f"lacks permission steps.work in namespace '{OUT}'" in str(info.value)


async def test_admin_actions_and_cancellations_record_the_authenticated_identity(
    probe: Probe,
) -> None:
    async with Client(probe.address, token=ROOT_TOKEN) as root:
        task = await root.create_task(IN, "authz_probe", {})
    async with Client(probe.address, token=token("operator")) as operator:
        # The SDK sends its own actor; the server records who authenticated instead.
        await operator.resolve_task_manually(task.task_id, reason="closed by hand")
        detail = await operator.get_task(task.task_id)
    by_hand = [t for t in detail.proto.transitions if t.reason == "closed by hand"]
    assert by_hand and {t.actor for t in by_hand} == {"operator-in"}
    async with Client(probe.address, token=token("submitter")) as submitter:
        task = await submitter.create_task(IN, "authz_probe", {})
        await submitter.cancel_task(task.task_id, actor="someone-else", reason="not needed")
        detail = await submitter.get_task(task.task_id)
    cancelled = [t for t in detail.proto.transitions if t.reason == "not needed"]
    assert cancelled and {t.actor for t in cancelled} == {"submitter-in"}


# -- rotation without restart ---------------------------------------------------------------


@pytest.fixture
def rotating_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    path = tmp_path / "auth.yaml"
    auth_file(path)
    server = ServerProcess(f"sqlite+aiosqlite:///{tmp_path / 'tasker.db'}", auth_file=str(path))
    server.start()
    try:
        yield server, path
    finally:
        server.stop()


async def _accepted(address: str, secret: str) -> bool:
    async with Client(address, token=secret) as client:
        try:
            await client.get_task("987654321")
        except NotFoundError:  # authenticated (and allowed): the call reached its handler
            return True
        except UnauthenticatedError:
            return False
    raise AssertionError("task 987654321 exists")


async def _eventually(address: str, secret: str, accepted: bool, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await _accepted(address, secret) == accepted:
                return
            await asyncio.sleep(0.1)


async def test_a_changed_auth_file_applies_without_restart_and_a_bad_one_is_ignored(
    rotating_server: tuple[ServerProcess, Path],
) -> None:
    server, path = rotating_server
    new = "rotated-token-0123456789abcdef"
    assert not await _accepted(server.address, new)
    extra = {"identity": "rotated", "token": new, "namespaces": [IN], "roles": ["reader"]}
    auth_file(path, [extra])
    await _eventually(server.address, new, True)
    # An invalid version (unknown role) is logged and the last good one stays in force.
    path.write_text(path.read_text().replace("reader", "no-such-role"))
    await asyncio.sleep(1.5)
    assert await _accepted(server.address, new)
    assert await _accepted(server.address, ROOT_TOKEN)
    auth_file(path)  # valid again, without the rotated principal
    await _eventually(server.address, new, False)


async def test_sighup_reloads_the_auth_file(
    rotating_server: tuple[ServerProcess, Path],
) -> None:
    server, path = rotating_server
    before = path.stat()
    text = path.read_text()
    # Same size and modification time: only SIGHUP can notice the new token.
    old, new = token("reader"), token("reader").replace("reader", "READER")
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    await asyncio.sleep(1.2)
    assert await _accepted(server.address, old)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    await _eventually(server.address, new, True)
    assert not await _accepted(server.address, old)


async def test_a_workers_leases_are_bound_to_the_identity_that_connected_it(probe: Probe) -> None:
    # A lease is valid only from the worker it was issued to and, with authorization on, from
    # the identity that worker connected as: another principal allowed to work in the namespace
    # (admin-in) sending the same worker_id is refused, on the unary report and on a hello.
    async with (
        Client(probe.address, token=ROOT_TOKEN) as root,
        grpc.aio.insecure_channel(probe.address) as channel,
    ):
        holder = RawWorker(channel)
        await holder.connect("bound-w", [IN], ["authz_step"], metadata=md(token("worker")))
        try:
            await root.create_task(IN, "authz_probe", {"n": 1})
            # (Tasks the table test created in this namespace may come first: any will do.)
            assignment = (await holder.next("assignment")).assignment
            lease, task_id = assignment.lease_id, assignment.context.task.task_id
            stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
            report = wpb.ReportStepResultRequest(
                worker_id="bound-w", success=wpb.StepSuccess(lease_id=lease)
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ReportStepResult(report, metadata=md(token("admin")))
            assert decode(caught.value).reason == "LEASE_NOT_HELD"
            impostor = RawWorker(channel)
            with pytest.raises(AssertionError, match="stream ended"):
                await impostor.connect(
                    "bound-w",
                    [IN],
                    ["authz_step"],
                    held_leases=(lease,),
                    metadata=md(token("admin")),
                )
            assert impostor.end_error is not None
            assert impostor.end_error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert decode(impostor.end_error).reason == "WORKER_ID_TAKEN"
            await impostor.close()
            # The refused hello left the holder's open stream alone (and its lease with it).
            holder.send(heartbeat=wpb.LeaseHeartbeat(lease_ids=[lease]))
            [status] = (await holder.next("heartbeat_ack")).heartbeat_ack.leases
            assert (status.lease_id, status.active) == (lease, True)
            assert (await stub.ReportStepResult(report, metadata=md(token("worker")))).accepted
            done = await root.wait_for_task(task_id, timeout=10)
        finally:
            await holder.close()
    assert done.state == "complete"
    assert [a.worker_id for a in done.step("work").proto.attempt_history] == ["bound-w"]
