"""Two server replicas on one PostgreSQL: work created on one is dispatched by the other at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tasker import Client, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tests.support.server import ServerProcess

NS = "replicas"


async def test_task_created_on_one_replica_runs_on_the_others_worker(pg_url: str) -> None:
    # Sweeps far apart: only the cross-replica notification can wake replica B in time.
    a = ServerProcess(pg_url, sweep_interval_seconds=30).start()
    b = ServerProcess(pg_url, sweep_interval_seconds=30).start()
    try:

        async def step(ctx: StepContext) -> dict[str, Any]:
            return {"n": ctx.task.context["n"]}

        worker = Worker(b.address, [NS], capacity=4)
        worker.register("step", step)
        run = asyncio.create_task(worker.run())
        await worker.wait_connected(10)
        try:
            async with await Client.connect(a.address, timeout=10) as client:
                yaml = WorkflowBuilder("chain", NS).with_linear_steps(
                    ["s1", "s2", "s3"], handler="step"
                )
                await client.register_template(yaml.build())
                started = time.monotonic()
                task = await client.create_task(NS, "chain", {"n": 7})
                done = await client.wait_for_task(task.task_id, timeout=20)
                elapsed = time.monotonic() - started
        finally:
            await worker.shutdown(drain_timeout=2)
            await run
    finally:
        a.stop()
        b.stop()
    assert done.state == "complete"
    assert done.result == {"s3": {"n": 7}}
    # Three hops across replicas, each woken by NOTIFY rather than the 30 s sweep.
    assert elapsed < 10, elapsed
