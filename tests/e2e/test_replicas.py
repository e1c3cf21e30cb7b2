"""Two server replicas on one PostgreSQL: work created on one is dispatched by the other at once."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from tasker import Client, RetryableError, StepContext, Worker
from tasker.testing import WorkflowBuilder
from tests.e2e.workers.sums import spawn_sum_worker, stop_process, sum_template
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


async def test_crashed_replicas_orphaned_lease_is_taken_back_long_before_the_step_timeout(
    pg_url: str,
) -> None:
    """Replica A and its only worker die together: no stream is left to release the lease, and
    the step's timeout is two minutes. Replica B sees the worker silent (nobody refreshes its
    ``last_seen_time``) and takes the lease back after the documented silence window."""
    a = ServerProcess(pg_url).start()
    b = ServerProcess(pg_url).start()
    doomed: subprocess.Popen[str] | None = None
    rescuer: subprocess.Popen[str] | None = None
    try:
        async with await Client.connect(b.address, timeout=10) as client:
            await client.register_template(
                sum_template("slow", NS, {"only": []}, timeout_seconds=120)
            )
            doomed = await spawn_sum_worker(a.address, NS, sleep=600, worker_id="doomed")
            task = await client.create_task(NS, "slow", {"input": 1})
            async with asyncio.timeout(15):
                while (await client.get_task(task.task_id)).step("only").state != "in_progress":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            a.kill()
            doomed.kill()
            doomed.wait(10)
            rescuer = await spawn_sum_worker(b.address, NS, worker_id="rescuer")
            started = time.monotonic()
            done = await client.wait_for_task(task.task_id, timeout=60)
            elapsed = time.monotonic() - started
    finally:
        for proc in (doomed, rescuer):
            if proc is not None:
                stop_process(proc)
        a.stop()
        b.stop()
    assert done.state == "complete"
    history = list(done.step("only").proto.attempt_history)
    assert [(h.worker_id, h.outcome) for h in history] == [
        ("doomed", "lease_expired"),
        ("rescuer", "complete"),
    ]
    assert history[0].error.error_type == "LeaseExpired"
    assert "not seen by any server" in history[0].error.message
    # Silence window with the test timers: keepalive_timeout 3 s + lease ttl 2.5 s.
    assert elapsed < 30, elapsed


async def test_breaker_failures_are_counted_across_replicas(pg_url: str) -> None:
    """Four steps fail at once, two on each replica's worker, against a breaker of threshold 4:
    the count is shared in the database, so the breaker opens after those four, as on one
    replica (per-replica counts would need eight; the retries wait 2 s, long enough for both
    replicas to have seen it open)."""
    a = ServerProcess(pg_url).start()
    b = ServerProcess(pg_url).start()
    calls: list[str] = []

    def failing(replica: str) -> Any:
        async def handler(ctx: StepContext) -> dict[str, Any]:
            calls.append(replica)
            await asyncio.sleep(0.5)  # both slots of each worker busy: two steps per replica
            raise RetryableError("ledger answered 503")

        return handler

    workers = []
    try:
        for name, replica in (("a", a), ("b", b)):
            worker = Worker(replica.address, [NS], capacity=2)
            worker.register("post", failing(name))
            workers.append((worker, asyncio.create_task(worker.run())))
            await worker.wait_connected(10)
        async with await Client.connect(a.address, timeout=10) as client:
            await client.register_template(
                WorkflowBuilder("ledger_post", NS)
                .step(
                    "post",
                    "post",
                    retry={"max_attempts": 5, "backoff_base_seconds": 2, "max_delay_seconds": 2},
                    circuit_breaker={
                        "key": "ledger",
                        "failure_threshold": 4,
                        "reset_timeout_seconds": 60,
                    },
                )
                .build()
            )
            for i in range(4):
                await client.create_task(NS, "ledger_post", {"i": i})
            async with asyncio.timeout(15):
                while True:
                    [breaker] = await client.get_circuit_breakers(["ledger"])
                    if breaker.state == "open":
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(3)  # past the retries' backoff: nothing more may run
    finally:
        for worker, run in workers:
            await worker.shutdown(drain_timeout=2)
            await run
        a.stop()
        b.stop()
    assert sorted(calls) == ["a", "a", "b", "b"], calls
    assert breaker.failure_count == 4
