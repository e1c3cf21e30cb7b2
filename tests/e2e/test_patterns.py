"""Orchestration patterns observed from the outside, on both backends, with real worker
processes (the conformance worker, tests/conformance/python_worker.py):

(a) independent steps run concurrently; (b) no step starts before all its parents completed;
(c) two worker processes share the load, idle workers taking ready steps in turn;
(d) an idempotency key yields one task;
(e) ``orchestration.max_parallel_steps`` and a worker's capacity are never exceeded;
(f) a namespace's ``max_parallel_tasks`` (AdminService.UpdateNamespace) is never exceeded.

Concurrency is measured from what the server recorded: attempt intervals (StepAttempt
start_time = lease acknowledged, end_time = outcome recorded), task start/end times and the
transition log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import grpc
import pytest
import yaml

from tasker import Client, Task
from tasker.v1 import admin_service_pb2, admin_service_pb2_grpc
from tests.conformance.harness import WorkerProcess
from tests.conformance.scenarios import (
    SCENARIO_DIR,
    expected_step_results,
    load,
    ordering_problems,
    step_state,
)
from tests.support.server import RunningServer, server_env

NS = "conformance"
Interval = tuple[datetime, datetime]


def template(name: str, steps: list[dict[str, Any]], **orchestration: Any) -> str:
    doc: dict[str, Any] = {"name": name, "namespace": NS, "version": "1.0.0"}
    if orchestration:
        doc["orchestration"] = orchestration
    doc["step_templates"] = steps
    return yaml.safe_dump(doc, sort_keys=False)


def step(name: str, handler: str = "sum", deps: Iterable[str] = (), **extra: Any) -> dict[str, Any]:
    return {"name": name, "handler_class": handler, "depends_on_steps": list(deps), **extra}


def fanout(width: int, handler: str = "sum", **config: Any) -> list[dict[str, Any]]:
    middle = [f"B{i}" for i in range(1, width + 1)]
    extra = {"handler_config": config} if config else {}
    return [
        step("A"),
        *(step(b, handler, ["A"], **extra) for b in middle),
        step("E", deps=middle),
    ]


def attempts(task: Task) -> Iterator[tuple[str, Any]]:
    for s in task.proto.steps:
        for a in s.attempt_history:
            yield s.name, a


def interval(a: Any) -> Interval:
    assert a.start_time.seconds and a.end_time.seconds, f"attempt without times: {a}"
    return a.start_time.ToDatetime(), a.end_time.ToDatetime()


def max_overlap(intervals: Iterable[Interval]) -> int:
    """Largest number of intervals open at one instant (an end at t closes before a start at
    t opens: touching intervals do not overlap)."""
    points = sorted(p for start, end in intervals for p in ((start, 1), (end, -1)))
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


@asynccontextmanager
async def workers(address: str, *specs: dict[str, Any]) -> Any:
    """Start one conformance worker process per spec (kwargs of WorkerProcess); on exit stop
    them all with SIGTERM and assert each exits 0."""
    procs = [WorkerProcess(address, env=server_env(), namespace=NS, **spec) for spec in specs]
    try:
        for p in procs:
            await p.start()
        yield procs
    finally:
        codes = [await p.stop() for p in procs if p.proc is not None]
    assert codes == [0] * len(procs), f"worker exit codes on SIGTERM: {codes}"


async def run_tasks(client: Client, name: str, inputs: Iterable[int]) -> list[Task]:
    created = [await client.create_task(NS, name, {"input": i}) for i in inputs]
    return list(
        await asyncio.gather(*(client.wait_for_task(t.task_id, timeout=90) for t in created))
    )


# --- (a) independent steps run concurrently -----------------------------------------------------


async def test_independent_steps_overlap(server: RunningServer) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(
            template(
                "pattern_sleepy_diamond",
                [
                    step("a"),
                    step("b", "sleep", ["a"], handler_config={"ms": 300}),
                    step("c", "sleep", ["a"], handler_config={"ms": 300}),
                    step("d", deps=["b", "c"]),
                ],
            )
        )
        async with workers(server.address, {"capacity": 10}):
            (task,) = await run_tasks(client, "pattern_sleepy_diamond", [1])
    assert task.state == "complete"
    assert task.result == {"d": {"value": 7}}
    (b,) = [interval(a) for name, a in attempts(task) if name == "b"]
    (c,) = [interval(a) for name, a in attempts(task) if name == "c"]
    overlap = (min(b[1], c[1]) - max(b[0], c[0])).total_seconds()
    assert overlap > 0.1, f"b {b} and c {c} should run concurrently (overlap {overlap:.3f}s)"
    # start_time is stamped when the server applies the ack batch, a few ms after the worker
    # started the handler, so an attempt of a 300 ms step can show slightly less than 300 ms.
    assert (b[1] - b[0]).total_seconds() >= 0.25 and (c[1] - c[0]).total_seconds() >= 0.25


# --- (b) no step starts before all its parents completed ----------------------------------------


async def test_steps_never_start_before_their_parents_complete(server: RunningServer) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(template("pattern_fanout", fanout(10)))
        async with workers(server.address, {"capacity": 10}):
            tasks = await run_tasks(client, "pattern_fanout", range(8))
    for task in tasks:
        assert task.state == "complete"
        assert task.result == {"E": {"value": 1 + 10 * (task.context["input"] + 2)}}
        # Commit order of the transition log and the attempt times (see test below for the
        # transitions' create_time).
        assert ordering_problems(task.proto, timestamps=False) == []
        transitions = task.proto.transitions
        for s in task.proto.steps:
            enqueued = [
                i
                for i, t in enumerate(transitions)
                if t.step_name == s.name and t.to_state == "enqueued"
            ]
            assert enqueued, f"step {s.name} never enqueued"
            for parent in s.depends_on:
                done = [
                    i
                    for i, t in enumerate(transitions)
                    if t.step_name == parent and t.to_state == "complete"
                ]
                assert done and done[0] < enqueued[0], f"{s.name} enqueued before {parent}"


async def test_enqueued_transition_time_not_before_parent_complete_time(
    server: RunningServer,
) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(template("pattern_fanout", fanout(10)))
        async with workers(server.address, {"capacity": 10}):
            tasks = await run_tasks(client, "pattern_fanout", range(8))
    problems = [p for task in tasks for p in ordering_problems(task.proto, timestamps=True)]
    assert problems == []


# --- (c) two worker processes share the load ----------------------------------------------------


async def test_two_worker_processes_share_the_load(server: RunningServer) -> None:
    diamond = load(SCENARIO_DIR / "diamond.yaml")
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(diamond.template_yaml())
        async with workers(
            server.address,
            {"capacity": 4, "worker_id": "conformance-w1"},
            {"capacity": 4, "worker_id": "conformance-w2"},
        ):
            tasks = await run_tasks(client, diamond.template_name, range(20))
    seen: set[str] = set()
    for task in tasks:
        i = task.context["input"]
        expected = expected_step_results(diamond, int(i))
        assert task.state == "complete", task
        assert task.result == {"d": expected["d"]}
        for s in task.steps:
            assert s.result == expected[s.name], (task.task_id, s.name)
        seen.update(a.worker_id for _, a in attempts(task))
    assert seen == {"conformance-w1", "conformance-w2"}


async def test_ready_steps_are_dealt_in_turn_to_idle_workers(server: RunningServer) -> None:
    # Four independent steps, two idle workers with room for all of them: one claim for both
    # workers deals the steps in turn, rather than filling the first worker's capacity.
    roots = [step(f"r{i}", "sleep", handler_config={"ms": 50}) for i in range(4)]
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(template("pattern_dealt", roots))
        async with workers(
            server.address,
            {"capacity": 8, "worker_id": "dealt-w1"},
            {"capacity": 8, "worker_id": "dealt-w2"},
        ):
            (task,) = await run_tasks(client, "pattern_dealt", [1])
    assert task.state == "complete", task
    per_worker = Counter(a.worker_id for _, a in attempts(task))
    assert per_worker == {"dealt-w1": 2, "dealt-w2": 2}, per_worker


# --- (d) idempotency key ------------------------------------------------------------------------


async def test_same_idempotency_key_gives_one_task(server: RunningServer) -> None:
    diamond = load(SCENARIO_DIR / "diamond.yaml")
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(diamond.template_yaml())
        first = await client.create_task(
            NS, diamond.template_name, {"input": 1}, idempotency_key="order-42"
        )
        second = await client.create_task(
            NS, diamond.template_name, {"input": 1}, idempotency_key="order-42"
        )
        other = await client.create_task(
            NS, diamond.template_name, {"input": 1}, idempotency_key="order-43"
        )
        listed = [t async for t in client.list_tasks(namespace=NS)]
    assert first.created is True
    assert second.created is False
    assert second.task_id == first.task_id
    assert other.created is True and other.task_id != first.task_id
    assert sorted(t.task_id for t in listed) == sorted({first.task_id, other.task_id})


# --- (e) max_parallel_steps and worker capacity -------------------------------------------------


async def test_max_parallel_steps_is_never_exceeded(server: RunningServer) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(
            template("pattern_throttled", fanout(10, "sleep", ms=200), max_parallel_steps=2)
        )
        async with workers(server.address, {"capacity": 10}):
            (task,) = await run_tasks(client, "pattern_throttled", [3])
    assert task.state == "complete"
    assert task.result == {"E": {"value": 1 + 10 * 5}}
    peak = max_overlap(interval(a) for _, a in attempts(task))
    assert peak == 2, f"max_parallel_steps 2 with a worker of capacity 10: peak {peak}"


async def test_worker_capacity_is_never_exceeded(server: RunningServer) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(template("pattern_wide_sleep", fanout(10, "sleep", ms=200)))
        async with workers(server.address, {"capacity": 3, "worker_id": "conformance-cap3"}):
            tasks = await run_tasks(client, "pattern_wide_sleep", [0, 1])
    assert [t.state for t in tasks] == ["complete", "complete"]
    spans = [interval(a) for t in tasks for _, a in attempts(t)]
    assert {a.worker_id for t in tasks for _, a in attempts(t)} == {"conformance-cap3"}
    peak = max_overlap(spans)
    assert peak == 3, f"a worker of capacity 3 ran {peak} attempts at once"


# --- (f) per-namespace max_parallel_tasks -------------------------------------------------------


async def test_namespace_max_parallel_tasks(server: RunningServer) -> None:
    async with await Client.connect(server.address, timeout=10) as client:
        await client.register_template(
            template(
                "pattern_sleepy_linear",
                [
                    step("a", "sleep", handler_config={"ms": 150}),
                    step("b", "sleep", ["a"], handler_config={"ms": 150}),
                ],
            )
        )
        async with grpc.aio.insecure_channel(server.address) as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing_actor:
                await admin.UpdateNamespace(
                    admin_service_pb2.UpdateNamespaceRequest(namespace=NS, max_parallel_tasks=1)
                )
            assert missing_actor.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            reply = await admin.UpdateNamespace(
                admin_service_pb2.UpdateNamespaceRequest(
                    namespace=NS, max_parallel_tasks=1, actor="conformance-test", reason="e2e"
                )
            )
            assert reply.namespace.max_parallel_tasks == 1
        async with workers(server.address, {"capacity": 10}):
            tasks = await run_tasks(client, "pattern_sleepy_linear", [0, 1, 2])
    assert [t.state for t in tasks] == ["complete"] * 3
    spans = []
    for t in tasks:
        assert t.start_time is not None and t.end_time is not None
        spans.append((t.start_time, t.end_time))
    assert max_overlap(spans) == 1, f"tasks in progress at once: {sorted(spans)}"
    assert all(step_state(s.state) == "complete" for t in tasks for s in t.proto.steps)
