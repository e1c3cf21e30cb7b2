"""Event streams: many watchers, resume after a disconnect and across a server restart, retention.

The diamond's event order itself is pinned by test_task_lifecycle.py; here every watcher's list is
compared with the task's full replay: same events, each once, in sequence order.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import text

from tasker import Client, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tasker.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
)
from tasker_server.app import App
from tasker_server.config import load_settings
from tasker_server.engine import sweeper as sweeper_module
from tasker_server.store.db import Database
from tasker_server.store.events import PRUNED_EVENT, pruned_through
from tests.e2e.workers.sums import LINEAR, spawn_sum_worker, stop_process, sum_template
from tests.support.server import FAST_TIMERS, RunningServer, ServerProcess

NS = "events"
TERMINAL = {"task.completed", "task.failed", "task.cancelled", "task.resolved_manually"}


def _diamond() -> str:
    return (
        WorkflowBuilder("diamond", NS)
        .with_linear_steps(["a"], handler="step")
        .with_diamond_pattern(["b", "c"], convergence="d", handler="step")
        .build()
    )


async def _start_worker(address: str, handler: Any) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker(address, [NS], capacity=4)
    worker.register("step", handler)
    run = asyncio.create_task(worker.run())
    await worker.wait_connected(10)
    return worker, run


async def _stop_worker(worker: Worker, run: asyncio.Task[None]) -> None:
    await worker.shutdown(drain_timeout=2)
    await run


async def _replay(client: Client, task_id: str) -> list[tuple[int, str, str]]:
    return [(e.sequence, e.event_name, e.step_name) async for e in client.watch_task(task_id)]


async def test_200_concurrent_watchers_each_see_every_event_once_in_order(
    server: RunningServer, client: Client
) -> None:
    await client.register_template(_diamond())
    task = await client.create_task(NS, "diamond", {})
    channels = [grpc.aio.insecure_channel(server.address) for _ in range(4)]
    stubs = [task_service_pb2_grpc.TaskServiceStub(ch) for ch in channels]
    opened = 0
    all_open = asyncio.Event()

    async def watch(i: int) -> list[tuple[int, str, str]]:
        nonlocal opened
        call = stubs[i % len(stubs)].WatchTask(
            task_service_pb2.WatchTaskRequest(task_id=task.task_id)
        )
        await call.wait_for_connection()
        opened += 1
        if opened == 200:
            all_open.set()
        return [(m.event.sequence, m.event.event_name, m.event.step_name) async for m in call]

    async def step(ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(0.05)  # events arrive live, over several commits
        return {}

    watchers = [asyncio.create_task(watch(i)) for i in range(200)]
    worker = run = None
    try:
        await asyncio.wait_for(all_open.wait(), 30)
        worker, run = await _start_worker(server.address, step)
        results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    finally:
        for w in watchers:
            w.cancel()
        if worker is not None and run is not None:
            await _stop_worker(worker, run)
        for ch in channels:
            await ch.close()
    expected = await _replay(client, task.task_id)
    assert expected[-1][1] == "task.completed"
    assert len(expected) >= 10
    for got in results:
        assert got == expected


async def test_watcher_that_disconnects_mid_task_resumes_without_gap_or_duplicate(
    server: RunningServer, client: Client
) -> None:
    await client.register_template(_diamond())
    gate = asyncio.Event()

    async def step(ctx: StepContext) -> dict[str, Any]:
        if ctx.step.name == "d":
            await gate.wait()  # hold the task mid-way until the watcher has disconnected
        return {}

    worker, run = await _start_worker(server.address, step)
    channel = grpc.aio.insecure_channel(server.address)
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    try:
        task = await client.create_task(NS, "diamond", {})
        seen: list[tuple[int, str, str]] = []
        call = stub.WatchTask(task_service_pb2.WatchTaskRequest(task_id=task.task_id))
        async for m in call:
            seen.append((m.event.sequence, m.event.event_name, m.event.step_name))
            if (m.event.event_name, m.event.step_name) == ("step.started", "d"):
                break
        call.cancel()  # the watcher goes away mid-task
        gate.set()
        await client.wait_for_task(task.task_id, timeout=20)
        resumed = stub.WatchTask(
            task_service_pb2.WatchTaskRequest(task_id=task.task_id, after_sequence=seen[-1][0])
        )
        seen += [(m.event.sequence, m.event.event_name, m.event.step_name) async for m in resumed]
    finally:
        gate.set()
        await _stop_worker(worker, run)
        await channel.close()
    assert seen == await _replay(client, task.task_id)
    assert seen[-1][1] == "task.completed"


@pytest.mark.timeout(120)
async def test_watch_resumes_across_a_server_killed_and_restarted(db_url: str) -> None:
    proc = ServerProcess(db_url).start()
    worker: subprocess.Popen[str] | None = None
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            # Short step timeout: the dead server's leases expire soon after the restart.
            await client.register_template(sum_template("linear", NS, LINEAR, timeout_seconds=3))
            task = await client.create_task(NS, "linear", {"input": 1})
            worker = await spawn_sum_worker(proc.address, NS, sleep=0.3, capacity=1)
            seen: list[tuple[int, str, str]] = []
            killed = False
            # The SDK stream resumes by itself (UNAVAILABLE -> reconnect after the last sequence).
            async for e in client.watch_task(task.task_id):
                seen.append((e.sequence, e.event_name, e.step_name))
                if not killed and (e.event_name, e.step_name) == ("step.completed", "A"):
                    killed = True
                    proc.kill()
                    await asyncio.sleep(0.5)
                    proc = ServerProcess(db_url, port=proc.port)
                    await asyncio.to_thread(proc.start)
            assert killed
            assert seen[-1][1] == "task.completed"
            assert seen == await _replay(client, task.task_id)
    finally:
        if worker is not None:
            stop_process(worker)
        proc.kill()


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def test_old_events_are_pruned_and_resuming_before_the_window_is_out_of_range(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeper_module, "PRUNE_INTERVAL_SECONDS", 0.2)
    settings = load_settings(
        environ={},
        overrides={
            "listen": "127.0.0.1:0",
            "database_url": db_url,
            **FAST_TIMERS,
            "event_retention_seconds": 1.0,
        },
    )
    app = await App.start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    db = Database.from_url(db_url)
    try:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        events = event_service_pb2_grpc.EventServiceStub(channel)
        async with await Client.connect(f"127.0.0.1:{app.port}") as client:
            await client.register_template(_diamond())  # creates the namespace
        who = {"namespace": NS, "actor": "tester", "reason": "retention test"}
        await admin.PauseNamespace(admin_service_pb2.PauseNamespaceRequest(**who))
        await admin.ResumeNamespace(admin_service_pb2.ResumeNamespaceRequest(**who))
        first = [
            m.event.sequence
            async for m in _take(events.WatchEvents(event_service_pb2.WatchEventsRequest()), 2)
        ]
        through = 0
        async with asyncio.timeout(15):
            while through < first[-1]:
                await asyncio.sleep(0.2)
                through = await _pruned_through(db)
        async with db.engine.connect() as conn:
            query = text("SELECT count(*) FROM events WHERE seq <= :s")
            left = (await conn.execute(query, {"s": through})).scalar_one()
        assert left == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call = events.WatchEvents(event_service_pb2.WatchEventsRequest(after_sequence=1))
            await call.read()
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        info = _error_info(caught.value)
        assert info.reason == "EVENTS_PRUNED"
        assert int(info.metadata["pruned_through"]) >= first[-1]
        # From the watermark on, the stream works and shows the pruning itself.
        after = int(info.metadata["pruned_through"])
        call = events.WatchEvents(event_service_pb2.WatchEventsRequest(after_sequence=after))
        message = await asyncio.wait_for(call.read(), 10)
        call.cancel()
        assert message.event.event_name == PRUNED_EVENT
    finally:
        await channel.close()
        await db.dispose()
        await app.stop(grace=0.5)


async def _take(call: Any, n: int) -> AsyncIterator[Any]:
    count = 0
    async for m in call:
        yield m
        count += 1
        if count >= n:
            call.cancel()
            return


async def _pruned_through(db: Database) -> int:
    async with db.session(read_only=True) as s:
        return await pruned_through(s)


async def test_sdk_subscriptions_by_event_name(server: RunningServer, client: Client) -> None:
    await client.register_template(_diamond())
    completed: asyncio.Queue[Any] = asyncio.Queue()
    steps: list[str] = []

    async def on_completed(event: Any) -> None:
        await completed.put(event)

    client.on("task.completed", on_completed)
    client.on("step.*", lambda e: steps.append(e.event_name))
    client.on("task.completed", lambda e: 1 / 0)  # a failing callback does not stop the others
    subscriptions = asyncio.create_task(client.run_subscriptions(namespaces=[NS], after_sequence=0))

    async def step(ctx: StepContext) -> dict[str, Any]:
        return {}

    worker, run = await _start_worker(server.address, step)
    try:
        task = await client.create_task(NS, "diamond", {}, correlation_id="sub-1")
        event = await asyncio.wait_for(completed.get(), 20)
    finally:
        subscriptions.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await subscriptions
        await _stop_worker(worker, run)
    assert (event.task_id, event.correlation_id) == (task.task_id, "sub-1")
    assert steps.count("step.completed") == 4
    assert not {n for n in steps if not n.startswith("step.")}
