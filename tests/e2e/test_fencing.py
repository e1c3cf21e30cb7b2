"""Lease fencing on the raw Connect protocol (grpc.aio, no SDK logic between the test and the
server): unacknowledged leases are re-offered, stale results are rejected without closing the
stream, duplicate results are recorded once, silent workers are disconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from tasker import Client, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tasker.v1 import admin_service_pb2, admin_service_pb2_grpc
from tasker.v1 import worker_service_pb2 as wpb
from tasker.v1 import worker_service_pb2_grpc as wgrpc
from tests.e2e.workers.raw import RawWorker, decode
from tests.support.server import FAST_TIMERS, RunningServer

NS = "fencing"
TEMPLATE = "single"
ACK_TIMEOUT = FAST_TIMERS["ack_timeout_seconds"]
KEEPALIVE_TIMEOUT = FAST_TIMERS["keepalive_timeout_seconds"]


def _result(value: int) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update({"value": value})
    return out


@pytest_asyncio.fixture
async def setup(server: RunningServer) -> AsyncIterator[tuple[Client, grpc.aio.Channel]]:
    client = await Client.connect(server.address)
    await client.register_template(WorkflowBuilder(TEMPLATE, NS).step("only", "h").build())
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield client, channel
    finally:
        await channel.close()
        await client.close()


async def test_unacked_lease_is_reoffered_and_its_late_result_is_rejected_stream_stays_open(
    setup: tuple[Client, grpc.aio.Channel],
) -> None:
    client, channel = setup
    worker = RawWorker(channel)
    await worker.connect("raw-1", [NS], ["h"], capacity=1)
    try:
        task = await client.create_task(NS, TEMPLATE, {"input": 1})
        loop = asyncio.get_running_loop()
        first = (await worker.next("assignment")).assignment
        offered = loop.time()
        assert first.context.step.attempt == 1

        # Never acknowledged: taken back and re-offered after ack_timeout, no attempt counted.
        second = (await worker.next("assignment", ACK_TIMEOUT + 5)).assignment
        waited = loop.time() - offered
        assert second.lease_id != first.lease_id
        assert ACK_TIMEOUT - 0.3 <= waited <= ACK_TIMEOUT + 2.0, waited
        assert second.context.task.task_id == task.task_id
        assert second.context.step.attempt == 1
        kinds = [m.WhichOneof("message") for m in worker.received]
        cancelled = [m.cancellation for m in worker.received if m.HasField("cancellation")]
        assert [c.lease_id for c in cancelled] == [first.lease_id], kinds

        # The late result for the old lease is fenced off; the stream stays usable.
        worker.send(result=wpb.StepSuccess(lease_id=first.lease_id, result=_result(-1)))
        stale = (await worker.next("result_ack")).result_ack
        assert (stale.lease_id, stale.accepted, stale.reason) == (
            first.lease_id,
            False,
            "LEASE_STALE",
        )
        assert not worker.ended.is_set()

        worker.send(ack=wpb.AssignmentAck(lease_id=second.lease_id))
        worker.send(result=wpb.StepSuccess(lease_id=second.lease_id, result=_result(2)))
        ok = (await worker.next("result_ack")).result_ack
        assert (ok.lease_id, ok.accepted) == (second.lease_id, True), ok
        done = await client.wait_for_task(task.task_id, timeout=10)
    finally:
        await worker.close()

    step = done.step("only")
    assert done.state == "complete"
    assert step.result == {"value": 2}
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
    moves = [(t.from_state, t.to_state, t.event) for t in done.proto.transitions if t.step_name]
    assert moves.count(("enqueued", "pending", "release")) == 1, moves


async def test_duplicate_result_for_one_lease_is_accepted_and_recorded_once(
    setup: tuple[Client, grpc.aio.Channel],
) -> None:
    client, channel = setup
    worker = RawWorker(channel)
    await worker.connect("raw-dup", [NS], ["h"], capacity=1)
    try:
        task = await client.create_task(NS, TEMPLATE, {"input": 1})
        lease = (await worker.next("assignment")).assignment.lease_id
        worker.send(ack=wpb.AssignmentAck(lease_id=lease))
        success = wpb.StepSuccess(lease_id=lease, result=_result(7))
        worker.send(result=success)
        worker.send(result=success)
        acks = [(await worker.next("result_ack")).result_ack for _ in range(2)]
        assert [(a.lease_id, a.accepted) for a in acks] == [(lease, True), (lease, True)], acks
        done = await client.wait_for_task(task.task_id, timeout=10)

        # Once more after the step completed, on the stream and by the unary call: the same
        # result is an idempotent duplicate, a different one a conflict (only the first counts).
        worker.send(result=success)
        again = (await worker.next("result_ack")).result_ack
        assert (again.lease_id, again.accepted, again.reason) == (lease, True, "DUPLICATE")
        worker.send(result=wpb.StepSuccess(lease_id=lease, result=_result(8)))
        other = (await worker.next("result_ack")).result_ack
        assert (other.lease_id, other.accepted, other.reason) == (lease, False, "OUTCOME_CONFLICT")
        stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.ReportStepResult(
            wpb.ReportStepResultRequest(worker_id="raw-dup", success=success)
        )
        assert reply.accepted
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReportStepResult(
                wpb.ReportStepResultRequest(
                    worker_id="raw-dup",
                    success=wpb.StepSuccess(lease_id=lease, result=_result(9)),
                )
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert decode(caught.value).reason == "OUTCOME_CONFLICT"
    finally:
        await worker.close()

    after = await client.get_task(task.task_id)
    step = after.step("only")
    assert done.state == after.state == "complete"
    assert step.result == {"value": 7}, "a repeated outcome must not overwrite the first"
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
    completes = [
        t for t in after.proto.transitions if t.step_name == "only" and t.to_state == "complete"
    ]
    assert len(completes) == 1
    finished = [t for t in after.proto.transitions if not t.step_name and t.to_state == "complete"]
    assert len(finished) == 1


async def test_a_lease_is_valid_only_from_the_worker_it_was_issued_to(
    setup: tuple[Client, grpc.aio.Channel],
) -> None:
    # Lease ids are not bearer tokens: worker B reporting worker A's lease (on its stream or by
    # the unary call) is refused LEASE_NOT_HELD and records nothing; A's own result then counts.
    client, channel = setup
    holder, intruder = RawWorker(channel), RawWorker(channel)
    await holder.connect("raw-holder", [NS], ["h"], capacity=1)
    try:
        task = await client.create_task(NS, TEMPLATE, {"input": 1})
        lease = (await holder.next("assignment")).assignment.lease_id
        await intruder.connect("raw-intruder", [NS], ["h"], capacity=1)
        intruder.send(result=wpb.StepSuccess(lease_id=lease, result=_result(666)))
        refused = (await intruder.next("result_ack")).result_ack
        assert (refused.accepted, refused.reason) == (False, "LEASE_NOT_HELD")
        stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReportStepResult(
                wpb.ReportStepResultRequest(
                    worker_id="raw-intruder",
                    success=wpb.StepSuccess(lease_id=lease, result=_result(666)),
                )
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert decode(caught.value).reason == "LEASE_NOT_HELD"
        holder.send(result=wpb.StepSuccess(lease_id=lease, result=_result(7)))
        ack = (await holder.next("result_ack")).result_ack
        assert (ack.accepted, ack.reason) == (True, "")
        done = await client.wait_for_task(task.task_id, timeout=10)
    finally:
        await intruder.close()
        await holder.close()
    step = done.step("only")
    assert step.result == {"value": 7}
    assert [(a.worker_id, a.outcome) for a in step.proto.attempt_history] == [
        ("raw-holder", "complete")
    ]


async def test_unary_report_for_unknown_lease_is_failed_precondition_lease_stale(
    server: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        for request in (
            wpb.ReportStepResultRequest(
                worker_id="raw",
                success=wpb.StepSuccess(lease_id="no-such-lease", result=_result(1)),
            ),
            wpb.ReportStepResultRequest(
                worker_id="raw", failure=wpb.StepFailure(lease_id="no-such-lease")
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ReportStepResult(request)
            details = decode(caught.value)
            assert details.code == grpc.StatusCode.FAILED_PRECONDITION
            assert details.reason == "LEASE_STALE"
            assert details.metadata.get("lease_id") == "no-such-lease"


async def test_silent_worker_is_disconnected_and_its_lease_retried_elsewhere(
    setup: tuple[Client, grpc.aio.Channel],
    server: RunningServer,
) -> None:
    client, channel = setup
    silent = RawWorker(channel, pong=False)
    await silent.connect("silent", [NS], ["h"], capacity=1)
    rescuer = Worker(server.address, [NS], worker_id="rescuer")

    @rescuer.handler("h")
    async def handle(ctx: StepContext) -> dict[str, int]:
        return {"value": 10 * ctx.step.attempt}

    running: asyncio.Task[None] | None = None
    try:
        task = await client.create_task(NS, TEMPLATE, {"input": 1})
        lease = (await silent.next("assignment")).assignment.lease_id
        silent.send(ack=wpb.AssignmentAck(lease_id=lease))
        loop = asyncio.get_running_loop()
        # From here on the worker sends nothing: no pong, no heartbeat, no result.
        running = asyncio.create_task(rescuer.run())
        await rescuer.wait_connected(10)
        async with asyncio.timeout(KEEPALIVE_TIMEOUT + 5):
            await silent.ended.wait()
        silent_for = loop.time() - silent.last_sent
        assert silent.keepalives >= 2, "the server must probe the stream before giving up"
        assert KEEPALIVE_TIMEOUT - 0.6 <= silent_for <= KEEPALIVE_TIMEOUT + 1.5, silent_for
        done = await client.wait_for_task(task.task_id, timeout=15)
        async with grpc.aio.insecure_channel(server.address) as admin_channel:
            listed = await admin_service_pb2_grpc.AdminServiceStub(  # type: ignore[no-untyped-call]
                admin_channel
            ).ListWorkers(admin_service_pb2.ListWorkersRequest())
    finally:
        await silent.close()
        await rescuer.shutdown(drain_timeout=2)
        if running is not None:
            await running

    listed_ids = {w.worker_id for w in listed.workers}  # ListWorkers lists connected ones
    assert "silent" not in listed_ids and "rescuer" in listed_ids, listed_ids
    step = done.step("only")
    assert done.state == "complete"
    assert step.result == {"value": 20}
    history = list(step.proto.attempt_history)
    assert [(a.attempt, a.outcome, a.worker_id) for a in history] == [
        (1, "lease_expired", "silent"),
        (2, "complete", "rescuer"),
    ]
    # The retry may first be re-offered to the silent worker (not yet known to be dead): that
    # offer is released without counting an attempt. Exactly one attempt expired.
    expired = [t for t in done.proto.transitions if t.event == "lease_expired"]
    assert [(t.step_name, t.from_state, t.to_state) for t in expired] == [
        ("only", "in_progress", "retrying")
    ]


async def test_hung_handler_is_stopped_at_the_lease_deadline_even_with_heartbeats(
    server: RunningServer,
) -> None:
    """A worker that keeps heartbeating but never finishes is cancelled by the server once the
    lease's hard deadline (ack timeout + step timeout + grace) passes; the attempt counts as a
    transient StepTimeout and the step is offered again."""
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(
            WorkflowBuilder("hung", NS).step("only", "h", timeout_seconds=1).build()
        )
        async with grpc.aio.insecure_channel(server.address) as channel:
            hung = RawWorker(channel)
            await hung.connect("hung", [NS], ["h"], capacity=1)
            try:
                task = await client.create_task(NS, "hung", {"input": 1})
                first = (await hung.next("assignment")).assignment
                hung.send(ack=wpb.AssignmentAck(lease_id=first.lease_id))
                beat = asyncio.create_task(_heartbeat_forever(hung, first.lease_id))
                try:
                    cancel = (await hung.next("cancellation", timeout=15)).cancellation
                finally:
                    beat.cancel()
                assert (cancel.lease_id, cancel.reason) == (first.lease_id, "timed_out")
                second = (await hung.next("assignment", timeout=15)).assignment
                assert second.lease_id != first.lease_id
                assert second.context.step.attempt == 2
                hung.send(ack=wpb.AssignmentAck(lease_id=second.lease_id))
                hung.send(result=wpb.StepSuccess(lease_id=second.lease_id))
                done = await client.wait_for_task(task.task_id, timeout=15)
            finally:
                await hung.close()
    step = done.step("only")
    outcomes = [(a.outcome, a.error.error_type) for a in step.proto.attempt_history]
    assert outcomes == [("lease_expired", "StepTimeout"), ("complete", "")]


async def _heartbeat_forever(worker: RawWorker, lease_id: str) -> None:
    while True:
        worker.send(heartbeat=wpb.LeaseHeartbeat(lease_ids=[lease_id]))
        await asyncio.sleep(0.3)


# --- the job-queue pattern: leases handed to jobs outlive the stream --------------------------


async def _step_state(client: Client, task_id: str, state: str) -> None:
    async with asyncio.timeout(10):
        while True:
            if (await client.get_task(task_id)).step("only").state == state:
                return
            await asyncio.sleep(0.05)


async def _unlisted(channel: grpc.aio.Channel, worker_id: str) -> None:
    """Until the server has handled the end of ``worker_id``'s stream."""
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
    async with asyncio.timeout(10):
        while True:
            listed = await admin.ListWorkers(admin_service_pb2.ListWorkersRequest())
            if worker_id not in {w.worker_id for w in listed.workers}:
                return
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _acknowledged_lease(
    client: Client, channel: grpc.aio.Channel, worker_id: str, hands_off: bool
) -> AsyncIterator[tuple[str, str]]:
    """A raw worker has acknowledged a new task's step (recorded: in_progress); yields (task id,
    lease id) while its stream is open, and closes the stream on exit."""
    worker = RawWorker(channel)  # answers keepalives: the stream itself stays healthy
    await worker.connect(worker_id, [NS], ["h"], capacity=1, hands_off_leases=hands_off)
    try:
        task = await client.create_task(NS, TEMPLATE, {"input": 1})
        lease = (await worker.next("assignment")).assignment.lease_id
        worker.send(ack=wpb.AssignmentAck(lease_id=lease))
        await _step_state(client, task.task_id, "in_progress")
        yield task.task_id, lease
    finally:
        await worker.close()


async def _handed_off_lease(
    client: Client, channel: grpc.aio.Channel, hands_off: bool
) -> tuple[str, str]:
    """A worker acknowledges the task's step, then its stream ends (the host process restarts,
    its job queue does not). Returns (task id, lease id)."""
    async with _acknowledged_lease(client, channel, "raw-queue", hands_off) as acknowledged:
        pass
    await _unlisted(channel, "raw-queue")
    return acknowledged


@pytest.mark.parametrize("hands_off", [True, False], ids=["job-queue", "stream-worker"])
async def test_a_job_queue_workers_acknowledged_lease_outlives_its_stream(
    setup: tuple[Client, grpc.aio.Channel], hands_off: bool
) -> None:
    client, channel = setup
    task_id, lease = await _handed_off_lease(client, channel, hands_off)
    stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
    # The job, still running somewhere, heartbeats by lease id for a while, then reports.
    alive = []
    for _ in range(4):
        reply = await stub.Heartbeat(wpb.HeartbeatRequest(lease_ids=[lease]))
        alive.append(reply.leases[0].active)
        await asyncio.sleep(0.4)
    report = wpb.ReportStepResultRequest(
        worker_id="raw-queue", success=wpb.StepSuccess(lease_id=lease, result=_result(5))
    )
    if not hands_off:  # a stream worker's leases end with its stream
        assert alive[-1] is False, alive
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReportStepResult(report)
        assert decode(caught.value).reason == "LEASE_STALE"
        return
    assert alive == [True] * 4
    assert (await stub.ReportStepResult(report)).accepted
    done = await client.wait_for_task(task_id, timeout=10)
    step = done.step("only")
    assert done.state == "complete"
    assert step.result == {"value": 5}
    history = [(a.attempt, a.outcome, a.worker_id) for a in step.proto.attempt_history]
    assert history == [(1, "complete", "raw-queue")]


async def test_a_handed_off_lease_nobody_heartbeats_is_taken_back_after_the_silence_window(
    setup: tuple[Client, grpc.aio.Channel], server: RunningServer
) -> None:
    client, channel = setup
    task_id, _ = await _handed_off_lease(client, channel, hands_off=True)
    # The job died with the host: no heartbeat, no report. The worker counts as vanished after
    # keepalive_timeout + lease TTL of silence (5.5 s with the test timers) and the step retries.
    rescuer = Worker(server.address, [NS], worker_id="rescuer")

    @rescuer.handler("h")
    async def handle(ctx: StepContext) -> dict[str, int]:
        return {"value": 10 * ctx.step.attempt}

    running = asyncio.create_task(rescuer.run())
    try:
        done = await client.wait_for_task(task_id, timeout=30)
    finally:
        await rescuer.shutdown(drain_timeout=2)
        await running
    step = done.step("only")
    assert done.state == "complete"
    assert step.result == {"value": 20}
    history = [(a.attempt, a.outcome, a.worker_id) for a in step.proto.attempt_history]
    assert history == [(1, "lease_expired", "raw-queue"), (2, "complete", "rescuer")]


@pytest.mark.parametrize("hands_off", [True, False], ids=["job-queue", "stream-worker"])
async def test_a_handed_off_lease_needs_no_stream_heartbeats(
    setup: tuple[Client, grpc.aio.Channel], hands_off: bool
) -> None:
    # The job waits in its queue past the lease TTL (no heartbeat from anyone), then runs and
    # reports. A stream worker's lease without heartbeats expires after the TTL instead.
    client, channel = setup
    lease_ttl = 3 * FAST_TIMERS["heartbeat_interval_seconds"] + FAST_TIMERS["lease_grace_seconds"]
    async with _acknowledged_lease(client, channel, "raw-queued", hands_off) as (task_id, lease):
        await asyncio.sleep(lease_ttl + 1.5)
        stub = wgrpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
        report = wpb.ReportStepResultRequest(
            worker_id="raw-queued", success=wpb.StepSuccess(lease_id=lease, result=_result(6))
        )
        if not hands_off:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ReportStepResult(report)
            assert decode(caught.value).reason == "LEASE_STALE"
            return
        assert (await stub.Heartbeat(wpb.HeartbeatRequest(lease_ids=[lease]))).leases[0].active
        assert (await stub.ReportStepResult(report)).accepted
        done = await client.wait_for_task(task_id, timeout=10)
    step = done.step("only")
    assert (done.state, step.result, step.attempts) == ("complete", {"value": 6}, 1)
