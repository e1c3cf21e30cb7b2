"""What the Python SDK writes on its Connect stream per step, counted end to end against a real
server: a short step costs one message (its result implies the acknowledgement), a step still
running after ack_delay two (ack, then result); either way each step runs once, one attempt."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tasker import Client, StepContext, Worker
from tasker._session import Session
from tasker.testing import WorkflowBuilder
from tests.support.server import RunningServer

NS = "messages"
STEPS = 20


async def _fast(ctx: StepContext) -> dict[str, Any]:
    return {"n": ctx.task.context["n"]}


async def _slow(ctx: StepContext) -> dict[str, Any]:
    await asyncio.sleep(0.3)
    return {"n": ctx.task.context["n"]}


async def _messages_for_steps(
    server: RunningServer, client: Client, monkeypatch: pytest.MonkeyPatch, handler: Any,
    count: int, **options: Any,
) -> Counter[str]:
    """Runs ``count`` one-step tasks on a fresh worker; the ConnectRequest kinds it sent."""
    sent: Counter[str] = Counter()
    send = Session.send

    def counting(session: Session, message: Any) -> bool:
        sent[message.WhichOneof("message")] += 1
        return send(session, message)

    monkeypatch.setattr(Session, "send", counting)
    worker = Worker(server.address, [NS], capacity=4, **options)
    worker.register("h", handler)
    run = asyncio.create_task(worker.run())
    try:
        await worker.wait_connected(10)
        tasks = [await client.create_task(NS, "one", {"n": i}) for i in range(count)]
        for task in tasks:
            done = await client.wait_for_task(task.task_id, timeout=30)
            assert done.state == "complete"
            assert [s.attempts for s in done.steps] == [1]
    finally:
        await worker.shutdown(drain_timeout=2)
        await run
        monkeypatch.undo()
    return Counter({kind: sent[kind] for kind in ("ack", "result", "failure") if sent[kind]})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_short_steps_are_never_acknowledged_long_ones_once(
    server: RunningServer, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.register_template(WorkflowBuilder("one", NS).step("only", "h").build())
    eager = await _messages_for_steps(server, client, monkeypatch, _fast, STEPS, ack_delay=0)
    lazy = await _messages_for_steps(server, client, monkeypatch, _fast, STEPS)
    slow = await _messages_for_steps(server, client, monkeypatch, _slow, 4)
    print(f"\nConnectRequest kinds for {STEPS} fast steps: ack at once {dict(eager)}, "
          f"lazy ack {dict(lazy)}; for 4 steps of 0.3 s: {dict(slow)}")
    assert eager == {"ack": STEPS, "result": STEPS}
    assert lazy == {"result": STEPS}
    assert slow == {"ack": 4, "result": 4}
