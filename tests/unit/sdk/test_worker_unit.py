"""Worker behaviour against an in-memory session (and, for unary reports, a refused port)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

import tasker
from tasker import StepContext, StepHandler, Worker
from tasker._convert import dict_to_struct, seconds_to_duration, struct_to_dict
from tasker.v1 import resources_pb2, worker_service_pb2, worker_service_pb2_grpc


class FakeSession:
    """Collects what the worker would write on the stream."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed = False

    def send(self, message: Any) -> bool:
        self.sent.append(message)
        return True

    def of_kind(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.sent if m.WhichOneof("message") == kind]


def _assignment(
    lease_id: str, handler: str, timeout: float = 5.0, deadline_in: float | None = None
) -> Any:
    assignment = worker_service_pb2.Assignment(
        lease_id=lease_id,
        context=resources_pb2.ExecutionContext(
            task=resources_pb2.TaskInfo(task_id="1", namespace="ns",
                                        context=dict_to_struct({"n": 2})),
            step=resources_pb2.StepInfo(name="s", handler=handler, attempt=1, max_attempts=3,
                                        timeout=seconds_to_duration(timeout)),
        ),
    )
    if deadline_in is not None:
        assignment.lease_deadline.FromMilliseconds(int((time.time() + deadline_in) * 1000))
    return assignment


def _result_ack(worker: Worker, session: FakeSession, lease_id: str, *, accepted: bool,
                reason: str = "") -> None:
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        result_ack=worker_service_pb2.ResultAck(lease_id=lease_id, accepted=accepted,
                                                reason=reason)))


async def _eventually(check: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a condition of the worker
            await asyncio.sleep(0.01)


async def _stop_delivery(worker: Worker) -> None:
    for task in worker._background:
        task.cancel()
    await asyncio.gather(*worker._background, return_exceptions=True)


def _worker(**options: Any) -> tuple[Worker, FakeSession]:
    worker = Worker("127.0.0.1:9", ["ns"], capacity=2, **options)

    @worker.handler("double")
    async def double(ctx: StepContext) -> dict[str, Any]:
        return {"n": ctx.task.context["n"] * 2}

    @worker.handler("sync")
    def sync(ctx: StepContext) -> None:
        return None

    @worker.handler("declined")
    async def declined(ctx: StepContext) -> None:
        raise tasker.PermanentError("card declined")

    @worker.handler("slow")
    async def slow(ctx: StepContext) -> None:
        await asyncio.sleep(30)

    @worker.handler("not_json")
    async def not_json(ctx: StepContext) -> Any:
        return {"when": object()}

    @worker.handler("not_dict")
    async def not_dict(ctx: StepContext) -> Any:
        return [1, 2]

    session = FakeSession()
    worker._session = session  # type: ignore[assignment]
    worker._slots = asyncio.Semaphore(worker.capacity)
    return worker, session


async def _run(worker: Worker, session: FakeSession, *assignments: Any) -> None:
    for a in assignments:
        worker._dispatch(session, worker_service_pb2.ConnectResponse(assignment=a))  # type: ignore[arg-type]
    tasks = [lease.task for lease in worker._leases.values() if lease.task]
    if tasks:
        await asyncio.wait(tasks, timeout=5)


def _kinds(session: FakeSession) -> list[str]:
    return [m.WhichOneof("message") for m in session.sent]


async def test_a_fast_handler_is_never_acknowledged_its_result_implies_it() -> None:
    worker, session = _worker(ack_delay=0.2)
    await _run(worker, session, _assignment("L1", "double"), _assignment("L2", "sync"))
    results = {r.lease_id: struct_to_dict(r.result) for r in session.of_kind("result")}
    assert results == {"L1": {"n": 4}, "L2": {}}
    assert worker.in_flight == 0
    await asyncio.sleep(0.3)  # past the delay: the timers were cancelled with the outcome
    assert _kinds(session) == ["result", "result"]
    await _stop_delivery(worker)


async def test_a_slow_handler_is_acknowledged_once_after_the_ack_delay() -> None:
    worker, session = _worker(ack_delay=0.05)
    arrived = time.monotonic()
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        assignment=_assignment("SLOW", "slow")))
    await asyncio.sleep(0)
    assert session.of_kind("ack") == []
    assert worker.held_leases() == ["SLOW"]  # held (and announced) before any ack
    await _eventually(lambda: len(session.of_kind("ack")) == 1)
    assert time.monotonic() - arrived >= 0.05
    await asyncio.sleep(0.2)
    assert [a.lease_id for a in session.of_kind("ack")] == ["SLOW"]
    task = worker._leases["SLOW"].task
    assert task is not None
    task.cancel()
    await asyncio.wait([task])


async def test_a_lease_waiting_for_a_slot_is_acknowledged_after_the_delay_too() -> None:
    worker, session = _worker(ack_delay=0.05)
    worker._slots = asyncio.Semaphore(1)
    for lease_id in ("RUNS", "WAITS"):
        worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
            assignment=_assignment(lease_id, "slow")))
    await _eventually(lambda: len(session.of_kind("ack")) == 2)
    assert sorted(a.lease_id for a in session.of_kind("ack")) == ["RUNS", "WAITS"]
    tasks = [lease.task for lease in worker._leases.values() if lease.task]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


async def test_ack_delay_zero_acknowledges_at_once_and_reoffers_are_acknowledged_at_once() -> None:
    worker, session = _worker(ack_delay=0)
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        assignment=_assignment("NOW", "slow")))
    assert _kinds(session) == ["ack"]
    lazy, lazy_session = _worker(ack_delay=5.0)
    for _ in range(2):  # the second: re-offered (e.g. after a reconnect), already running here
        lazy._dispatch(lazy_session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
            assignment=_assignment("AGAIN", "slow")))
    assert _kinds(lazy_session) == ["ack"]
    assert lazy._leases["AGAIN"].ack_timer is None  # the delayed ack will not follow
    tasks = [lt.task for w in (worker, lazy) for lt in w._leases.values() if lt.task]
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


async def test_ack_delay_is_capped_at_a_quarter_of_the_servers_ack_timeout() -> None:
    worker, _ = _worker(ack_delay=5.0)
    assert worker._effective_ack_delay() == 5.0
    worker._on_welcome(worker_service_pb2.Welcome(
        worker_id="w", ack_timeout=seconds_to_duration(2.0)))
    assert worker._effective_ack_delay() == 0.5


async def test_invalid_and_unhandled_assignments_fail_without_an_ack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker, session = _worker(ack_delay=0)
    await _run(worker, session, _assignment("NONE", "missing"))

    def unreadable(assignment: Any) -> StepContext:
        raise ValueError("unreadable context")

    monkeypatch.setattr(StepContext, "from_assignment", unreadable)
    await _run(worker, session, _assignment("BAD", "double"))
    await _eventually(lambda: len(session.sent) == 2)
    await asyncio.sleep(0.05)
    assert _kinds(session) == ["failure", "failure"]  # each failure implies the ack
    failures = {f.lease_id: f.error for f in session.of_kind("failure")}
    assert failures["NONE"].error_type == "HandlerNotFound"
    assert "unreadable context" in failures["BAD"].message
    await _stop_delivery(worker)


async def test_failures_are_classified() -> None:
    worker, session = _worker()
    await _run(worker, session, _assignment("P", "declined"), _assignment("J", "not_json"),
               _assignment("D", "not_dict"), _assignment("T", "slow", timeout=0.05))
    failures = {f.lease_id: f.error for f in session.of_kind("failure")}
    assert failures["P"].error_class == resources_pb2.ERROR_CLASS_PERMANENT
    assert failures["J"].error_class == resources_pb2.ERROR_CLASS_PERMANENT
    assert failures["J"].error_type == "InvalidResult" and "$.when" in failures["J"].message
    assert failures["D"].error_type == "InvalidResult"
    assert failures["T"].error_class == resources_pb2.ERROR_CLASS_TRANSIENT
    assert failures["T"].error_type == "StepTimeout"


async def test_cancellation_stops_the_handler_and_reports_nothing() -> None:
    worker, session = _worker()
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        assignment=_assignment("C", "slow")))
    lease = worker._leases["C"]
    await asyncio.sleep(0)
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        cancellation=worker_service_pb2.Cancellation(lease_id="C", reason="task_cancelled")))
    assert lease.task is not None
    await asyncio.wait([lease.task], timeout=5)
    assert lease.ctx.cancelled.is_set()
    assert session.of_kind("result") == [] and session.of_kind("failure") == []


async def test_keepalive_is_answered_and_rejections_tolerated() -> None:
    worker, session = _worker()
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        keepalive=worker_service_pb2.Keepalive(nonce=99)))
    assert session.of_kind("pong")[0].nonce == 99
    await _run(worker, session, _assignment("X", "double"))
    assert worker.held_leases() == ["X"]
    _result_ack(worker, session, "X", accepted=False, reason="LEASE_STALE")
    assert worker.held_leases() == []


async def test_capacity_limits_concurrent_handlers() -> None:
    worker = Worker("127.0.0.1:9", ["ns"], capacity=2)
    running = 0
    peak = 0

    @worker.handler("h")
    async def h(ctx: StepContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    session = FakeSession()
    worker._session = session  # type: ignore[assignment]
    worker._slots = asyncio.Semaphore(worker.capacity)
    await _run(worker, session, *[_assignment(f"L{i}", "h") for i in range(6)])
    assert peak == 2
    assert len(session.of_kind("result")) == 6


def test_registration_rules() -> None:
    worker = Worker("127.0.0.1:9", "ns")
    assert worker.namespaces == ["ns"]

    class Charge(StepHandler):
        async def call(self, ctx: StepContext) -> dict[str, Any]:
            return {}

    worker.register("Charge", Charge())
    worker.register("Plain", lambda ctx: {})
    assert worker.handlers == ["Charge", "Plain"]
    with pytest.raises(ValueError):
        worker.register("Charge", Charge())
    with pytest.raises(ValueError):
        worker.register("", Charge())
    with pytest.raises(TypeError):
        worker.register("X", 42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"namespaces": []}, {"namespaces": [""]}, {"namespaces": ["ns"], "capacity": 0},
     {"namespaces": ["ns"], "capacity": 10_001}, {"namespaces": ["ns"], "worker_id": "x" * 65}],
)
def test_constructor_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Worker("127.0.0.1:9", **kwargs)


@pytest.mark.parametrize("ack_delay", [-0.01, float("inf"), float("nan"), True, "0.02"])
def test_ack_delay_validation(ack_delay: Any) -> None:
    with pytest.raises(ValueError):
        Worker("127.0.0.1:9", ["ns"], ack_delay=ack_delay)


async def test_run_without_handlers_fails_fast() -> None:
    with pytest.raises(ValueError):
        await Worker("127.0.0.1:9", ["ns"]).run()


async def test_shutdown_before_run_is_idempotent() -> None:
    worker = Worker("127.0.0.1:9", ["ns"])
    await worker.shutdown(drain_timeout=0)
    await worker.shutdown(drain_timeout=0)


# --- unacknowledged outcomes (kept until acknowledged or the lease's hard deadline) ------------


async def test_held_leases_name_running_handlers_and_unacknowledged_outcomes() -> None:
    worker, session = _worker()
    await _run(worker, session, _assignment("DONE", "double"))
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        assignment=_assignment("RUNNING", "slow")))
    assert session.of_kind("ack") == []  # not acknowledged yet, and still announced
    assert sorted(worker.held_leases()) == ["DONE", "RUNNING"]
    _result_ack(worker, session, "DONE", accepted=True)
    assert worker.held_leases() == ["RUNNING"]
    worker._leases["RUNNING"].task.cancel()  # type: ignore[union-attr]
    await _stop_delivery(worker)


async def test_unavailable_ack_keeps_the_outcome_and_sends_it_again_after_a_backoff() -> None:
    worker, session = _worker()
    await _run(worker, session, _assignment("L", "double"))
    assert len(session.of_kind("result")) == 1
    _result_ack(worker, session, "L", accepted=False, reason="UNAVAILABLE")
    assert worker.held_leases() == ["L"]
    await asyncio.sleep(0.05)
    assert len(session.of_kind("result")) == 1  # not at once: after a backoff
    await _eventually(lambda: len(session.of_kind("result")) == 2)
    _result_ack(worker, session, "L", accepted=True, reason="DUPLICATE")
    assert worker.held_leases() == []
    await asyncio.sleep(0.3)
    assert len(session.of_kind("result")) == 2
    await _stop_delivery(worker)


async def test_cancellation_keeps_a_pending_outcome_and_lease_stale_drops_it() -> None:
    worker, session = _worker()
    await _run(worker, session, _assignment("L", "declined"))
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        cancellation=worker_service_pb2.Cancellation(lease_id="L", reason="lease_expired")))
    worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
        cancellation=worker_service_pb2.Cancellation(lease_id="NEVER_HELD", reason="x")))
    assert worker.held_leases() == ["L"]
    _result_ack(worker, session, "L", accepted=False, reason="LEASE_STALE")
    assert worker.held_leases() == []
    await asyncio.sleep(0.3)
    assert len(session.of_kind("failure")) == 1
    await _stop_delivery(worker)


async def test_a_rejected_outcome_is_given_up_and_other_rejections_only_logged() -> None:
    worker, session = _worker()
    await _run(worker, session, _assignment("L", "double"))
    assert worker.held_leases() == ["L"]
    for lease_id in ("", "OTHER", "L"):
        worker._dispatch(session, worker_service_pb2.ConnectResponse(  # type: ignore[arg-type]
            rejected=worker_service_pb2.MessageRejected(
                code="INVALID_ARGUMENT", reason="INVALID_ARGUMENT", lease_id=lease_id)))
    assert worker.held_leases() == []
    await asyncio.sleep(0.3)
    assert len(session.of_kind("result")) == 1  # not sent again: it cannot be recorded
    await _stop_delivery(worker)


async def test_a_broken_stream_hands_the_outcome_to_the_next_stream() -> None:
    worker, first = _worker()
    await _run(worker, first, _assignment("L", "double"))
    first.closed = True
    worker._session = None
    worker._unacked_outcomes["L"].nudge.set()  # what the end of the stream does
    second = FakeSession()
    await asyncio.sleep(0.05)  # no stream, no server: unary attempts fail meanwhile
    worker._session = second  # type: ignore[assignment]
    for pending in worker._unacked_outcomes.values():  # what a welcome does
        pending.nudge.set()
    await _eventually(lambda: len(second.of_kind("result")) == 1)
    assert worker.held_leases() == ["L"]
    await _stop_delivery(worker)


async def test_unary_reports_retry_until_the_lease_deadline_then_give_up() -> None:
    """No stream and nothing listening: ReportStepResult fails with UNAVAILABLE (a real
    refused connection): the outcome is kept and retried until its lease's deadline, then
    dropped."""
    worker, _ = _worker()
    worker._session = None
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    worker._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        await _run(worker, FakeSession(), _assignment("L", "double", deadline_in=3.0))
        await asyncio.sleep(2.0)
        assert worker.held_leases() == ["L"]
        await _eventually(lambda: worker.held_leases() == [], timeout=3.0)
        await asyncio.sleep(0)
        assert not worker._background
    finally:
        await channel.close()
