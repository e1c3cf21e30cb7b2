"""Cancellation, deadlines and event streams, end to end with an in-process SDK worker."""

from __future__ import annotations

import asyncio
from typing import Any

from tasker import Client, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tests.support.server import RunningServer

NS = "lifecycle"


async def _run_worker(server: RunningServer, handlers: dict[str, Any]) -> tuple[Worker, Any]:
    worker = Worker(server.address, [NS], capacity=8)
    for name, fn in handlers.items():
        worker.register(name, fn)
    task = asyncio.create_task(worker.run())
    await worker.wait_connected(10)
    return worker, task


async def _stop(worker: Worker, task: Any) -> None:
    await worker.shutdown(drain_timeout=2)
    await task


async def _sum(ctx: StepContext) -> dict[str, Any]:
    parents = [ctx.sequence.get(n) or {} for n in ctx.sequence.dependencies]
    if not parents:
        return {"value": ctx.task.context["input"] + 1}
    return {"value": 1 + sum(p["value"] for p in parents)}


async def test_cancel_stops_the_running_handler(server: RunningServer, client: Client) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    yaml = WorkflowBuilder("cancel_me", NS).with_linear_steps(["a", "b"], handler="slow").build()
    await client.register_template(yaml)
    worker, run = await _run_worker(server, {"slow": slow})
    try:
        task = await client.create_task(NS, "cancel_me", {})
        await asyncio.wait_for(started.wait(), 10)
        cancelled_task = await client.cancel_task(task.task_id, actor="tester", reason="test")
        assert cancelled_task.state == "cancelled"
        await asyncio.wait_for(cancelled.wait(), 10)
        final = await client.get_task(task.task_id)
        assert [s.state for s in final.steps] == ["cancelled", "cancelled"]
        transitions = final.proto.transitions
        assert any(t.to_state == "cancelled" and t.actor == "tester" for t in transitions)
    finally:
        await _stop(worker, run)


async def test_task_deadline_fails_the_task(server: RunningServer, client: Client) -> None:
    async def slow(ctx: StepContext) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    yaml = (
        WorkflowBuilder("deadline", NS)
        .orchestration(timeout_seconds=1)
        .with_linear_steps(["a", "b"], handler="slow")
        .build()
    )
    await client.register_template(yaml)
    worker, run = await _run_worker(server, {"slow": slow})
    try:
        task = await client.create_task(NS, "deadline", {})
        final = await client.wait_for_task(task.task_id, timeout=15)
        assert final.state == "failed"
        assert [s.state for s in final.steps] == ["cancelled", "cancelled"]
        events = [e async for e in client.watch_task(task.task_id)]
        assert events[-1].event_name == "task.failed"
        assert events[-1].metadata["reason"] == "deadline_exceeded"
    finally:
        await _stop(worker, run)


async def test_watch_task_replays_the_diamond_in_order_and_resumes(
    server: RunningServer, client: Client
) -> None:
    yaml = (
        WorkflowBuilder("diamond", NS)
        .with_linear_steps(["a"], handler="sum")
        .with_diamond_pattern(["b", "c"], convergence="d", handler="sum")
        .build()
    )
    await client.register_template(yaml)
    worker, run = await _run_worker(server, {"sum": _sum})
    try:
        task = await client.create_task(NS, "diamond", {"input": 4})
        events = [e async for e in client.watch_task(task.task_id)]
    finally:
        await _stop(worker, run)
    names = [(e.event_name, e.step_name) for e in events]
    assert names[0] == ("task.started", "")
    assert names[-1] == ("task.completed", "")
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)), "ordered, no duplicates"

    def at(name: str, step: str) -> int:
        return names.index((name, step))

    for parent, child in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert at("step.completed", parent) < at("step.started", child)
    assert ("viable_steps.discovered", "") in names
    assert ("dependencies.resolved", "d") in names
    assert events[-1].metadata["total_steps"] == 4

    # Resuming from the middle yields exactly the rest.
    middle = events[len(events) // 2].sequence
    rest = [e.sequence async for e in client.watch_task(task.task_id, after_sequence=middle)]
    assert rest == [s for s in sequences if s > middle]

    final = await client.get_task(task.task_id)
    assert final.result == {"d": {"value": 1 + (6 + 6)}}


async def test_server_wide_max_parallel_tasks_is_never_exceeded(db_url: str) -> None:
    from tasker_server.app import App
    from tasker_server.config import load_settings
    from tests.support.server import FAST_TIMERS

    settings = load_settings(
        environ={},
        overrides={
            "listen": "127.0.0.1:0",
            "database_url": db_url,
            "max_parallel_tasks": 2,
            **FAST_TIMERS,
        },
    )
    app = await App.start(settings)
    address = f"127.0.0.1:{app.port}"
    try:

        async def nap(ctx: StepContext) -> dict[str, Any]:
            await asyncio.sleep(0.15)
            return {}

        worker = Worker(address, [NS], capacity=10)
        worker.register("nap", nap)
        run = asyncio.create_task(worker.run())
        await worker.wait_connected(10)
        try:
            async with await Client.connect(address, timeout=10) as c:
                yaml = WorkflowBuilder("capped", NS).with_linear_steps(["a", "b"], handler="nap")
                await c.register_template(yaml.build())
                created = [await c.create_task(NS, "capped", {}) for _ in range(5)]
                done = [await c.wait_for_task(t.task_id, timeout=30) for t in created]
        finally:
            await worker.shutdown(drain_timeout=2)
            await run
    finally:
        await app.stop(grace=0.5)
    assert all(t.state == "complete" for t in done)
    spans = [(t.proto.start_time.ToDatetime(), t.proto.end_time.ToDatetime()) for t in done]
    moments = sorted({s for s, _ in spans})
    peak = max(sum(1 for s, e in spans if s <= m < e) for m in moments)
    assert peak == 2, spans
