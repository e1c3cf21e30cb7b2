"""Property: any DAG runs every step exactly once, in dependency order, with the right data flow.

Random DAGs (2..12 steps, edges only from earlier to later steps, so every draw is acyclic) run
on one in-process server (SQLite) with one in-process SDK worker applying the workloads.md
``sum`` rule; the expected result is computed here from the DAG.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tasker import Client, StepContext, Worker
from tasker_server.app import App
from tasker_server.config import load_settings
from tests.e2e.workers.sum_worker import sum_rule
from tests.e2e.workers.sums import expected_result, expected_values, result_sum, sum_template
from tests.support.server import FAST_TIMERS

NS = "dagprops"
_names = itertools.count(1)


@dataclass
class Harness:
    client: Client
    calls: dict[tuple[str, str], int]  # (task_id, step) -> handler invocations


@pytest_asyncio.fixture(scope="module")
async def harness(sqlite_template: Path, tmp_path_factory: Any) -> AsyncIterator[Harness]:
    path = tmp_path_factory.mktemp("dagprops") / "tasker.db"
    await asyncio.to_thread(shutil.copyfile, sqlite_template, path)
    app = await App.start(
        load_settings(
            environ={},
            overrides={"listen": "127.0.0.1:0", "database_url": f"sqlite:///{path}", **FAST_TIMERS},
        )
    )
    address = f"127.0.0.1:{app.port}"
    calls: dict[tuple[str, str], int] = {}
    worker = Worker(address, [NS], capacity=8, worker_id="dag-worker")

    @worker.handler("sum")
    async def handle(ctx: StepContext) -> dict[str, Any]:
        key = (ctx.task.task_id, ctx.step.name)
        calls[key] = calls.get(key, 0) + 1
        await asyncio.sleep(0)  # let siblings interleave
        return sum_rule(ctx)

    running = asyncio.create_task(worker.run())
    client = await Client.connect(address)
    try:
        await worker.wait_connected(10)
        yield Harness(client, calls)
    finally:
        await client.close()
        await worker.shutdown(drain_timeout=2)
        await running
        await app.stop(grace=0.5)


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=2, max_value=12))
    names = [f"s{i}" for i in range(size)]
    dag: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        parents = draw(st.sets(st.integers(min_value=0, max_value=i - 1))) if i else set()
        dag[name] = [names[p] for p in sorted(parents)]
    return dag


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # Every example costs a real task: report the failing DAG as drawn instead of shrinking it
    # through hundreds of further tasks.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    database=None,
)
@given(dag=dags(), task_input=st.integers(min_value=0, max_value=1000))
async def test_random_dag_runs_each_step_once_in_dependency_order(
    harness: Harness, dag: dict[str, list[str]], task_input: int
) -> None:
    client = harness.client
    name = f"dag_{next(_names)}"
    await client.register_template(sum_template(name, NS, dag))
    created = await client.create_task(NS, name, {"input": task_input})
    task = await client.wait_for_task(created.task_id, timeout=20)

    assert task.state == "complete", task
    values = expected_values(dag, task_input)
    assert result_sum(task.result) == expected_result(dag, task_input), (dag, task.result)
    assert {s.name: s.result for s in task.steps} == {
        step: {"value": value} for step, value in values.items()
    }, dag
    for step in task.steps:
        assert step.state == "complete"
        assert step.attempts == 1, (step.name, step.attempts)
        assert [a.outcome for a in step.proto.attempt_history] == ["complete"], step.name
        assert harness.calls[(task.task_id, step.name)] == 1, step.name

    # Transitions come in the order they were written (by id).
    transitions = list(task.proto.transitions)
    enqueued: dict[str, list[int]] = {}
    completed: dict[str, int] = {}
    for index, t in enumerate(transitions):
        if t.to_state == "enqueued":
            enqueued.setdefault(t.step_name, []).append(index)
        elif t.to_state == "complete" and t.step_name:
            assert t.step_name not in completed, f"{t.step_name} completed twice"
            completed[t.step_name] = index
    assert set(completed) == set(dag)
    for child, parents in dag.items():
        assert len(enqueued.get(child, [])) == 1, (child, enqueued.get(child))
        child_at = enqueued[child][0]
        for parent in parents:
            parent_at = completed[parent]
            assert parent_at < child_at, f"{child} enqueued before its parent {parent} completed"
            assert (
                transitions[parent_at].create_time.ToDatetime()
                <= transitions[child_at].create_time.ToDatetime()
            ), (parent, child)
