"""Durability: worker processes and server processes killed with SIGKILL mid-run.

Real worker processes (tests/e2e/workers/sum_worker.py) run the workloads.md ``sum`` rule; the
expected values are computed here from the DAG, so mixed-up or lost results are caught.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import pytest

from tasker import Client
from tasker.v1 import resources_pb2
from tasker_server.engine import dispatcher as dispatcher_module
from tests.e2e.workers.sums import (
    DIAMOND,
    LINEAR,
    expected_result,
    expected_values,
    result_sum,
    spawn_sum_worker,
    stop_process,
    sum_template,
)
from tests.support.server import RunningServer, ServerProcess

NS = "durability"


async def _wait_step_state(client: Client, task_id: str, step: str, state: str) -> None:
    async with asyncio.timeout(15):
        while True:
            if (await client.get_task(task_id)).step(step).state == state:
                return
            await asyncio.sleep(0.05)


async def test_worker_killed_mid_step_is_released_and_finished_by_another_worker(
    server: RunningServer,
) -> None:
    dag = {"only": []}
    client = await Client.connect(server.address)
    first: subprocess.Popen[str] | None = None
    second: subprocess.Popen[str] | None = None
    try:
        await client.register_template(sum_template("one_step", NS, dag))
        first = await spawn_sum_worker(server.address, NS, sleep=60, worker_id="doomed")
        task = await client.create_task(NS, "one_step", {"input": 41})
        await _wait_step_state(client, task.task_id, "only", "in_progress")

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = await spawn_sum_worker(server.address, NS, worker_id="rescuer")
        done = await client.wait_for_task(task.task_id, timeout=20)
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_process(proc)
        await client.close()

    assert done.state == "complete"
    step = done.step("only")
    assert step.result == {"value": 42}
    assert done.result == {"only": {"value": 42}}
    assert step.attempts == 2
    history = list(step.proto.attempt_history)
    assert [a.attempt for a in history] == [1, 2]
    assert [a.outcome for a in history] == ["lease_expired", "complete"]
    assert [a.worker_id for a in history] == ["doomed", "rescuer"]
    assert history[0].error.error_class == resources_pb2.ERROR_CLASS_TRANSIENT


async def test_acknowledgement_is_kept_when_the_engine_tick_fails(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick that fails (database error) must not lose the acknowledgement it carried: the
    attempt it counts has no reporter to send it again."""
    real_start_leases = dispatcher_module.start_leases
    injected: list[list[str]] = []

    async def start_leases_failing_once(session: Any, journal: Any, lease_ids: list[str],
                                        *args: Any, **kwargs: Any) -> Any:
        if lease_ids and not injected:
            injected.append(list(lease_ids))
            raise RuntimeError("injected failure: the tick's transaction is rolled back")
        return await real_start_leases(session, journal, lease_ids, *args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "start_leases", start_leases_failing_once)
    client = await Client.connect(server.address)
    worker: subprocess.Popen[str] | None = None
    try:
        await client.register_template(sum_template("acked", NS, {"only": []}))
        # The handler outlasts the ack coalescing delay: the ack has a tick of its own.
        worker = await spawn_sum_worker(server.address, NS, sleep=1.0)
        task = await client.create_task(NS, "acked", {"input": 1})
        done = await client.wait_for_task(task.task_id, timeout=20)
    finally:
        if worker is not None:
            stop_process(worker)
        await client.close()

    assert injected, "the failure was never injected"
    assert done.state == "complete"
    step = done.step("only")
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
    states = [(t.from_state, t.to_state) for t in done.proto.transitions if t.step_name == "only"]
    assert ("enqueued", "in_progress") in states


async def _completed_steps(client: Client) -> tuple[int, int]:
    tasks = [t async for t in client.list_tasks(namespace=NS, page_size=500)]
    return sum(t.completed_steps for t in tasks), sum(t.state == "complete" for t in tasks)


@pytest.mark.timeout(90)
async def test_server_killed_mid_run_restarts_and_every_task_completes_once(
    db_url: str,
) -> None:
    dags = {"linear": LINEAR, "diamond": DIAMOND}
    n_tasks = 30
    total_steps = n_tasks * 4
    # A short step timeout bounds the hard deadline (ack 2 s + 5 s + grace 1 s) of leases the
    # dead server handed out and the restarted one never heard about.
    proc = ServerProcess(db_url).start()
    worker: subprocess.Popen[str] | None = None
    tasks: dict[str, tuple[str, int]] = {}
    try:
        async with await Client.connect(proc.address) as client:
            for name, dag in dags.items():
                await client.register_template(sum_template(name, NS, dag, timeout_seconds=5))
            for i in range(n_tasks):
                name = "linear" if i % 2 == 0 else "diamond"
                task = await client.create_task(NS, name, {"input": i}, idempotency_key=f"t{i}")
                tasks[task.task_id] = (name, i)
            worker = await spawn_sum_worker(
                proc.address, NS, sleep=0.05, capacity=4, worker_id="w1"
            )
            async with asyncio.timeout(30):
                while True:
                    progress = await _completed_steps(client)
                    if progress[0] >= total_steps // 4:
                        break
                    await asyncio.sleep(0.02)
        proc.kill()
        killed_at = time.monotonic()
        assert progress[0] < total_steps, "the run finished before the kill: nothing was tested"

        await asyncio.sleep(1.0)  # in-flight handlers finish while the server is down
        proc = ServerProcess(db_url, port=proc.port).start()
        async with await Client.connect(proc.address) as client:
            done = {
                task_id: await client.wait_for_task(
                    task_id, timeout=max(5, 60 - (time.monotonic() - killed_at))
                )
                for task_id in tasks
            }
            workers = await client.list_workers()
        assert worker.poll() is None, "the worker process must survive the server's death"
    finally:
        if worker is not None:
            stop_process(worker)
        proc.kill()

    assert [w.state for w in workers if w.worker_id == "w1"] == ["connected"]
    for task_id, (name, i) in tasks.items():
        task = done[task_id]
        assert task.state == "complete", (task_id, task.state)
        assert result_sum(task.result) == expected_result(dags[name], i), (task_id, task.result)
        values = expected_values(dags[name], i)
        for step in task.steps:
            assert step.state == "complete"
            assert step.result == {"value": values[step.name]}, (task_id, step.name)
            outcomes = [a.outcome for a in step.proto.attempt_history]
            assert outcomes.count("complete") == 1, (task_id, step.name, outcomes)
            assert outcomes[-1] == "complete"
            completions = [
                t
                for t in task.proto.transitions
                if t.step_name == step.name and t.to_state == "complete"
            ]
            assert len(completions) == 1, (task_id, step.name)


async def test_graceful_server_restart_keeps_running_leases(db_url: str) -> None:
    """SIGTERM is not a crash: a handler running across a server restart reports to the new
    server and its result counts; the step is not re-run."""
    proc = ServerProcess(db_url).start()
    worker = await spawn_sum_worker(proc.address, NS, sleep=2.0, worker_id="steady")
    try:
        async with await Client.connect(proc.address, timeout=10) as client:
            await client.register_template(sum_template("one", NS, {"a": []}))
            task = await client.create_task(NS, "one", {"input": 4})
            await _wait_step_state(client, task.task_id, "a", "in_progress")
            assert proc.stop() == 0
            proc.start()
            done = await client.wait_for_task(task.task_id, timeout=30)
    finally:
        stop_process(worker)
        proc.stop()
    assert done.state == "complete"
    assert done.result == {"a": {"value": 5}}
    step = done.step("a")
    assert step.attempts == 1
    assert [a.outcome for a in step.proto.attempt_history] == ["complete"]
