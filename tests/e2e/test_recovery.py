"""Recovery in seconds: a server process SIGKILLed while a handler runs, restarted on the same
port and database, with every SDK's conformance worker (a real child process).

The handler (conformance ``sleep``) takes 2 s; the step's timeout is 300 s, so a step that had to
wait for its lease's hard deadline would blow the bound of 20 s. The result must be recorded
exactly once: one lease handed out (one ``enqueued`` transition: the handler ran once), one
attempt, outcome ``complete``. The second variant keeps the server down for 20 s, longer than
the eight ReportStepResult retries after which the SDKs used to give a result up (their backoff,
0.2 s doubling to 5 s with full jitter, made those last ~11 s on average and 21 s at most; the
step then waited for its hard deadline).

In both the handler finishes while the server is down or starting. The third variant has the
worker reconnect while its handler still runs (6 s handler, 0.2 s down): the worker's hello
lists the lease in ``held_leases``, which the server adopts; a server that ignored it would answer
the worker's heartbeat for the lease with ``active=false`` (it only knows leases handed out by
itself), the worker would stop the handler, and the step would wait for its hard deadline.

The raw-protocol tests below pin the server's side of the rule on a restarted server: a lease the
worker does not list is taken back at once, a listed lease that is not current is cancelled, and
a listed lease that never had its acknowledgement recorded counts as acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import struct_pb2

from chaos.cluster import OutagePostgres
from tasker import Client, UnavailableError
from tasker._errors import from_rpc_error
from tasker.testing import WorkflowBuilder
from tasker.v1 import task_service_pb2 as tpb
from tasker.v1 import task_service_pb2_grpc as tgrpc
from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc
from tests.conformance.harness import LANGUAGES, WorkerProcess, worker_command
from tests.e2e.workers.raw import RawWorker
from tests.support.databases import require_pg_bin_dir
from tests.support.server import ServerProcess, server_env

NS = "recovery"
RECOVERY_BOUND = 20.0  # seconds from the restart to the finished task; the lease lives ~300 s


def _template(handler_ms: int) -> str:
    builder = WorkflowBuilder("recover_one", NS)
    builder.step("a", "sleep", timeout_seconds=300, handler_config={"ms": handler_ms})
    return builder.build()


async def _wait_step_leased(client: Client, task_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            if (await client.get_task(task_id)).step("a").state in ("enqueued", "in_progress"):
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("down_for", "handler_ms"),
    [
        pytest.param(1.0, 2000, id="down_1s"),
        pytest.param(20.0, 2000, id="down_20s"),
        pytest.param(0.2, 6000, id="handler_outlives_the_outage"),
    ],
)
@pytest.mark.parametrize("language", LANGUAGES)
async def test_server_killed_while_a_handler_runs_records_its_result_once(
    db_url: str, language: str, down_for: float, handler_ms: int
) -> None:
    # The silence window after which a server takes back the leases of a worker it has not
    # seen (keepalive timeout + lease TTL; 35 s by default) is 5.5 s with the fast test timers:
    # shorter than a worker's reconnect backoff may last. 10 s makes it 12.5 s.
    settings = {"keepalive_timeout_seconds": 10.0}
    proc = ServerProcess(db_url, **settings).start()
    worker: WorkerProcess | None = None
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(_template(handler_ms))
            worker = await WorkerProcess(
                proc.address, env=server_env(), namespace=NS, command=worker_command(language),
                worker_id=f"recovery-{language}",
            ).start()
            task = await client.create_task(NS, "recover_one", {"input": 4})
            await _wait_step_leased(client, task.task_id)
        await asyncio.sleep(0.3)  # the handler is running
        proc.kill()
        await asyncio.sleep(down_for)
        proc = ServerProcess(db_url, port=proc.port, **settings).start()
        restarted = time.monotonic()
        async with await Client.connect(proc.address, timeout=10) as client:
            done = await client.wait_for_task(task.task_id, timeout=RECOVERY_BOUND)
        took = time.monotonic() - restarted
        assert worker.proc is not None and worker.proc.returncode is None, "worker died"
        code = await worker.stop()
    finally:
        if worker is not None:
            worker.kill()
        proc.kill()

    assert done.state == "complete", done.state
    assert took < RECOVERY_BOUND
    step = done.step("a")
    assert step.result == {"value": 5}
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
    transitions = [t.to_state for t in done.proto.transitions if t.step_name == "a"]
    assert transitions.count("enqueued") == 1, transitions  # leased once: the handler ran once
    assert transitions.count("complete") == 1, transitions
    assert code == 0


def _three_steps() -> str:
    builder = WorkflowBuilder("reconcile_three", NS)
    for name in ("a", "b", "c"):
        builder.step(name, "h", timeout_seconds=300)
    return builder.build()


async def _wait_state(client: Client, task_id: str, step: str, state: str) -> None:
    async with asyncio.timeout(10):
        while True:
            if (await client.get_task(task_id)).step(step).state == state:
                return
            await asyncio.sleep(0.02)


async def test_a_restarted_server_reconciles_the_leases_a_reconnecting_worker_holds(
    db_url: str,
) -> None:
    proc = ServerProcess(db_url).start()
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(_three_steps())
            task = await client.create_task(NS, "reconcile_three", {"input": 1})
            async with grpc.aio.insecure_channel(proc.address) as channel:
                raw = RawWorker(channel)
                await raw.connect("raw-reconnect", [NS], ["h"], capacity=3)
                offered = [(await raw.next("assignment")).assignment for _ in range(3)]
                lease = {a.context.step.name: a.lease_id for a in offered}
                # a: acknowledged and running; b: running, its acknowledgement dies with the
                # server; c: never reached the worker (it does not hold it).
                raw.send(ack=wpb.AssignmentAck(lease_id=lease["a"]))
                await _wait_state(client, task.task_id, "a", "in_progress")
                await raw.close()
        proc.kill()
        proc = ServerProcess(db_url, port=proc.port).start()
        async with (
            await Client.connect(proc.address, timeout=10) as client,
            grpc.aio.insecure_channel(proc.address) as channel,
        ):
            raw = RawWorker(channel)
            held = (lease["a"], lease["b"], "a-lease-nobody-issued")
            await raw.connect("raw-reconnect", [NS], ["h"], capacity=3, held_leases=held)
            stale = (await raw.next("cancellation")).cancellation
            assert (stale.lease_id, stale.reason) == ("a-lease-nobody-issued", "lease_stale")
            # c is re-offered at once: before, nothing on a restarted server knew its lease, and
            # it waited for its hard deadline (300 s + slack).
            again = (await raw.next("assignment", timeout=5)).assignment
            assert again.context.step.name == "c" and again.lease_id != lease["c"]
            raw.send(heartbeat=wpb.LeaseHeartbeat(lease_ids=[lease["a"], lease["b"]]))
            beat = (await raw.next("heartbeat_ack")).heartbeat_ack
            assert {(s.lease_id, s.active) for s in beat.leases} == {
                (lease["a"], True),
                (lease["b"], True),
            }
            for name, lease_id in (("a", lease["a"]), ("b", lease["b"]), ("c", again.lease_id)):
                raw.send(result=wpb.StepSuccess(lease_id=lease_id, result=_value(len(name))))
                ack = (await raw.next("result_ack")).result_ack
                assert (ack.lease_id, ack.accepted) == (lease_id, True), ack
            done = await client.wait_for_task(task.task_id, timeout=10)
            await raw.close()
    finally:
        proc.kill()
    assert done.state == "complete"
    moves = {
        name: [(t.from_state, t.to_state) for t in done.proto.transitions if t.step_name == name]
        for name in ("a", "b", "c")
    }
    # b's acknowledgement was implied by the held lease: its attempt started on the new server.
    assert ("enqueued", "in_progress") in moves["b"], moves["b"]
    assert ("enqueued", "pending") in moves["c"], moves["c"]  # released, no attempt counted
    for name in ("a", "b", "c"):
        step = done.step(name)
        assert step.attempts == 1, (name, step.attempts)
        assert [a.outcome for a in step.proto.attempt_history] == ["complete"]


def _value(n: int) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update({"value": n})
    return result


async def test_leases_lost_with_a_killed_worker_do_not_open_the_circuit_breaker(
    db_url: str,
) -> None:
    # Three running leases of a breaker with threshold 2 die with their worker. A worker dying
    # says nothing about the dependency the breaker protects: the breaker stays closed and the
    # steps run on the next worker at once (the reset timeout of 60 s would stall them).
    builder = WorkflowBuilder("guarded", NS)
    builder.step(
        "call",
        "sleep",
        handler_config={"ms": 1500},
        circuit_breaker={"key": "ledger", "failure_threshold": 2, "reset_timeout_seconds": 60},
    )
    proc = ServerProcess(db_url).start()
    doomed = healthy = None
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(builder.build())
            doomed = await WorkerProcess(proc.address, env=server_env(), namespace=NS).start()
            tasks = [await client.create_task(NS, "guarded", {"input": i}) for i in range(3)]
            for task in tasks:
                await _wait_state(client, task.task_id, "call", "in_progress")
            doomed.kill()
            healthy = await WorkerProcess(proc.address, env=server_env(), namespace=NS).start()
            done = [await client.wait_for_task(t.task_id, timeout=15) for t in tasks]
            [breaker] = await client.get_circuit_breakers(["ledger"])
    finally:
        for worker in (doomed, healthy):
            if worker is not None:
                worker.kill()
        proc.kill()
    assert [d.state for d in done] == ["complete"] * 3
    assert (breaker.state, breaker.failure_count) == ("closed", 0)
    for d in done:
        outcomes = [a.outcome for a in d.step("call").proto.attempt_history]
        assert outcomes == ["lease_expired", "complete"], outcomes


async def test_every_call_answers_unavailable_while_the_database_is_down() -> None:
    # A database outage is a pause: clients are told to retry (UNAVAILABLE, never INTERNAL),
    # including at the moment PostgreSQL cuts the pooled connections off and while it replays
    # its log after the restart; once it is back, the same calls succeed.
    cluster = OutagePostgres(require_pg_bin_dir())
    cluster.start()
    proc = None
    try:
        proc = ServerProcess(cluster.create_database("outage")).start()
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(_three_steps())
            task = await client.create_task(NS, "reconcile_three", {"input": 1})
            async with grpc.aio.insecure_channel(proc.address) as channel:
                stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
                tasks = tgrpc.TaskServiceStub(channel)  # type: ignore[no-untyped-call]
                calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                    ("CreateTask", lambda: client.create_task(NS, "reconcile_three", {"input": 2})),
                    ("GetTask", lambda: client.get_task(task.task_id)),
                    ("ListTasks", lambda: tasks.ListTasks(tpb.ListTasksRequest(namespace=NS))),
                    (
                        "ReportStepResult",
                        lambda: stub.ReportStepResult(
                            wpb.ReportStepResultRequest(
                                worker_id="w",
                                success=wpb.StepSuccess(lease_id="some-lease", result=_value(1)),
                            )
                        ),
                    ),
                ]
                cluster.stop_immediately()
                for name, call in calls:
                    with pytest.raises(UnavailableError):
                        async with asyncio.timeout(15):
                            await _translated(call)
                    assert name  # each call named in the failure's traceback
                await asyncio.to_thread(cluster.restart)
                async with asyncio.timeout(20):
                    while True:  # the pool replaces its dead connections on first use
                        try:
                            await client.create_task(NS, "reconcile_three", {"input": 3})
                            break
                        except UnavailableError:
                            await asyncio.sleep(0.1)
                # Readable again, and nothing was lost or moved by the outage (no worker runs it).
                assert (await client.get_task(task.task_id)).state in ("pending", "in_progress")
    finally:
        if proc is not None:
            proc.kill()
        cluster.stop()


async def _translated(call: Callable[[], Awaitable[object]]) -> object:
    """Runs a client or raw-stub call, raising the SDK's error class for either."""
    try:
        return await call()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
