"""Every operator action through the real grpcurl binary against server reflection.

One ``tasker serve`` child process on SQLite serves the module (each test uses its own
namespace); an in-process SDK worker drives the workflows into the states the actions need. The
actions themselves and the reads that check them go through grpcurl with ``-d`` JSON; its output
is protojson with the proto field names (int64 as strings, enums by name, defaults omitted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tasker import (
    Client,
    Event,
    ManualInterventionError,
    PermanentError,
    RetryableError,
    StepContext,
)
from tasker.testing import WorkflowBuilder
from tests.support.server import ServerProcess, running_worker

ACTOR = "ops-carol"
ADMIN = "tasker.v1.AdminService"
TASKS = "tasker.v1.TaskService"


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("grpcurl") / "admin.db"
    server = ServerProcess(f"sqlite:///{db}").start()
    try:
        yield server
    finally:
        assert server.stop() == 0


@pytest_asyncio.fixture
async def client(proc: ServerProcess) -> AsyncIterator[Client]:
    async with await Client.connect(proc.address, timeout=10) as c:
        yield c


class Grpcurl:
    def __init__(self, binary: str, address: str) -> None:
        self.binary = binary
        self.address = address

    async def run(self, method: str, data: dict[str, Any]) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-plaintext",
            "-d",
            json.dumps(data),
            self.address,
            method,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def __call__(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        code, out, err = await self.run(method, data)
        assert code == 0, f"grpcurl {method} {data} failed ({code}): {err}"
        reply: dict[str, Any] = json.loads(out)
        return reply

    async def error(self, method: str, data: dict[str, Any], status: str) -> str:
        """Runs a call that must fail with ``status``; returns grpcurl's error text."""
        code, out, err = await self.run(method, data)
        assert code != 0, f"grpcurl {method} {data} succeeded: {out}"
        assert f"Code: {status}" in err, err
        return err


@pytest.fixture
def grpc_cli(grpcurl: str, proc: ServerProcess) -> Grpcurl:
    return Grpcurl(grpcurl, proc.address)


async def get_task(cli: Grpcurl, task_id: str) -> dict[str, Any]:
    reply = await cli(f"{TASKS}/GetTask", {"task_id": task_id})
    task: dict[str, Any] = reply["task"]
    return task


def step_of(task: dict[str, Any], name: str) -> dict[str, Any]:
    [step] = [s for s in task["steps"] if s["name"] == name]
    return step


async def wait_task_state(cli: Grpcurl, task_id: str, state: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            task = await get_task(cli, task_id)
            if task["state"] == state:
                return task
            await asyncio.sleep(0.1)


async def wait_step_state(cli: Grpcurl, task_id: str, step: str, state: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            task = await get_task(cli, task_id)
            if step_of(task, step)["state"] == state:
                return task
            await asyncio.sleep(0.1)


def admin_moves(task: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(step, from, to, reason) of the transitions made by ACTOR."""
    return [
        (t.get("step_name", ""), t.get("from_state", ""), t["to_state"], t.get("reason", ""))
        for t in task.get("transitions", [])
        if t.get("actor") == ACTOR
    ]


async def events_named(
    client: Client, namespaces: list[str], names: list[str], count: int
) -> list[Event]:
    """The first ``count`` events (from the start of the log) matching the filters."""
    out: list[Event] = []
    async with asyncio.timeout(5):
        async for event in client.watch_events(namespaces=namespaces, event_names=names):
            out.append(event)
            if len(out) == count:
                return out
    return out


# --- step and task actions ---------------------------------------------------------------------


async def test_retry_complete_and_resolve_steps_over_grpcurl(
    proc: ServerProcess, client: Client, grpc_cli: Grpcurl
) -> None:
    ns = "grpcurl_steps"
    fixed = asyncio.Event()
    seen: dict[str, Any] = {}

    async def work(ctx: StepContext) -> dict[str, Any]:
        mode = ctx.task.context["mode"]
        if mode == "block":
            raise ManualInterventionError("needs a human")
        if not fixed.is_set():
            raise PermanentError("downstream rejected it")
        return {"by": "handler"}

    async def after(ctx: StepContext) -> dict[str, Any]:
        seen[ctx.task.context["mode"]] = ctx.sequence.get("work")
        return {"got": ctx.sequence.get("work")}

    yaml = (
        WorkflowBuilder("admin_steps", ns)
        .step("work", "work", retry={"max_attempts": 2, "backoff_base_seconds": 0.05})
        .step("after", "after", depends_on=["work"])
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(
        proc.address, ns, {"work": work, "after": after}, worker_id=f"grpcurl-{ns}"
    ):
        to_retry = (await client.create_task(ns, "admin_steps", {"mode": "retry"})).task_id
        to_complete = (await client.create_task(ns, "admin_steps", {"mode": "complete"})).task_id
        to_resolve = (await client.create_task(ns, "admin_steps", {"mode": "block"})).task_id
        await wait_task_state(grpc_cli, to_retry, "TASK_STATE_FAILED")
        await wait_task_state(grpc_cli, to_complete, "TASK_STATE_FAILED")
        blocked = await wait_step_state(grpc_cli, to_resolve, "work", "STEP_STATE_BLOCKED")
        assert blocked["blocked"] is True

        # CompleteStepManually on the failed step (the handler is still broken).
        reply = await grpc_cli(
            f"{ADMIN}/CompleteStepManually",
            {
                "task_id": to_complete,
                "step_name": "work",
                "result": {"by": "hand", "rows": 3},
                "actor": ACTOR,
                "reason": "done in the console",
            },
        )
        assert reply["step"]["state"] == "STEP_STATE_COMPLETE"
        assert reply["step"]["result"] == {"by": "hand", "rows": 3}

        # ResolveStepManually on the blocked step.
        reply = await grpc_cli(
            f"{ADMIN}/ResolveStepManually",
            {
                "task_id": to_resolve,
                "step_name": "work",
                "result": {"waived": True},
                "actor": ACTOR,
                "reason": "approved by risk",
            },
        )
        assert reply["step"]["state"] == "STEP_STATE_RESOLVED_MANUALLY"

        # RetryStep on the failed step, once the downstream is fixed.
        fixed.set()
        reply = await grpc_cli(
            f"{ADMIN}/RetryStep",
            {"task_id": to_retry, "step_name": "work", "actor": ACTOR, "reason": "fixed"},
        )
        assert reply["step"]["state"] == "STEP_STATE_RETRYING"

        finals = {
            tid: await wait_task_state(grpc_cli, tid, "TASK_STATE_COMPLETE")
            for tid in (to_retry, to_complete, to_resolve)
        }

    assert seen == {
        "retry": {"by": "handler"},
        "complete": {"by": "hand", "rows": 3},
        "block": {"waived": True},
    }
    retried = finals[to_retry]
    assert step_of(retried, "work")["attempts"] == 2
    assert admin_moves(retried) == [
        ("", "failed", "in_progress", "fixed"),
        ("work", "failed", "retrying", "fixed"),
    ]
    assert admin_moves(finals[to_complete]) == [
        ("", "failed", "in_progress", "done in the console"),
        ("work", "failed", "complete", "done in the console"),
    ]
    resolved = finals[to_resolve]
    assert admin_moves(resolved) == [("work", "blocked", "resolved_manually", "approved by risk")]
    assert "blocked" not in resolved  # false: omitted by protojson

    # Illegal now: the step is complete.
    err = await grpc_cli.error(
        f"{ADMIN}/RetryStep",
        {"task_id": to_retry, "step_name": "work", "actor": ACTOR},
        "FailedPrecondition",
    )
    assert "complete" in err


async def test_cancel_and_resolve_tasks_over_grpcurl(
    proc: ServerProcess, client: Client, grpc_cli: Grpcurl
) -> None:
    ns = "grpcurl_tasks"
    cancelled_handler = asyncio.Event()

    async def slow(ctx: StepContext) -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled_handler.set()
            raise
        return {}

    async def gate(ctx: StepContext) -> dict[str, Any]:
        raise ManualInterventionError("KYC documents missing")

    yaml = (
        WorkflowBuilder("admin_tasks", ns)
        .step("first", "slow")
        .step("second", "slow", depends_on=["first"])
        .build()
    )
    gated = WorkflowBuilder("gated", ns).step("gate", "gate").step("next", "slow", ["gate"])
    await client.register_template(yaml)
    await client.register_template(gated.build())
    async with running_worker(
        proc.address, ns, {"slow": slow, "gate": gate}, worker_id=f"grpcurl-{ns}"
    ):
        created = await grpc_cli(
            f"{TASKS}/CreateTask", {"namespace": ns, "template_name": "admin_tasks", "context": {}}
        )
        running = created["task"]["task_id"]
        await wait_step_state(grpc_cli, running, "first", "STEP_STATE_IN_PROGRESS")
        reply = await grpc_cli(
            f"{TASKS}/CancelTask", {"task_id": running, "actor": ACTOR, "reason": "duplicate"}
        )
        assert reply["task"]["state"] == "TASK_STATE_CANCELLED"
        await asyncio.wait_for(cancelled_handler.wait(), 10)

        blocked = (await client.create_task(ns, "gated", {})).task_id
        await wait_step_state(grpc_cli, blocked, "gate", "STEP_STATE_BLOCKED")
        reply = await grpc_cli(
            f"{ADMIN}/ResolveTaskManually",
            {"task_id": blocked, "actor": ACTOR, "reason": "customer left"},
        )
        assert reply["task"]["state"] == "TASK_STATE_RESOLVED_MANUALLY"

    cancelled = await get_task(grpc_cli, running)
    assert [s["state"] for s in cancelled["steps"]] == ["STEP_STATE_CANCELLED"] * 2
    moves = admin_moves(cancelled)
    assert ("", "in_progress", "cancelled", "duplicate") in moves
    assert ("first", "in_progress", "cancelled", "duplicate") in moves

    resolved = await get_task(grpc_cli, blocked)
    assert resolved["state"] == "TASK_STATE_RESOLVED_MANUALLY"
    assert [s["state"] for s in resolved["steps"]] == ["STEP_STATE_CANCELLED"] * 2
    assert ("", "in_progress", "resolved_manually", "customer left") in admin_moves(resolved)

    # Illegal on a cancelled task, naming the state.
    for method, data in (
        ("ResolveStepManually", {"task_id": running, "step_name": "first", "actor": ACTOR}),
        ("CompleteStepManually", {"task_id": running, "step_name": "first", "actor": ACTOR}),
        ("RetryStep", {"task_id": running, "step_name": "first", "actor": ACTOR}),
        ("ResolveTaskManually", {"task_id": running, "actor": ACTOR}),
    ):
        err = await grpc_cli.error(f"{ADMIN}/{method}", data, "FailedPrecondition")
        assert "cancelled" in err, (method, err)


# --- workers, namespaces, breakers -------------------------------------------------------------


async def test_workers_and_namespaces_over_grpcurl(
    proc: ServerProcess, client: Client, grpc_cli: Grpcurl
) -> None:
    ns = "grpcurl_ns"
    ran: list[float] = []

    async def tick(ctx: StepContext) -> dict[str, Any]:
        ran.append(time.monotonic())
        return {"tick": True}

    await client.register_template(WorkflowBuilder("ticker", ns).step("tick", "tick").build())
    async with running_worker(
        proc.address, ns, {"tick": tick}, worker_id=f"grpcurl-{ns}"
    ) as worker:
        listed = await grpc_cli(f"{ADMIN}/ListWorkers", {"namespace": ns})
        [info] = listed["workers"]
        assert info["worker_id"] == worker.worker_id
        assert (info["namespaces"], info["handlers"]) == ([ns], ["tick"])
        assert (info["sdk_language"], info["state"], info["capacity"]) == ("python", "connected", 4)
        assert (await grpc_cli(f"{ADMIN}/ListWorkers", {"namespace": "nobody_here"})) == {}

        paused = await grpc_cli(
            f"{ADMIN}/PauseNamespace", {"namespace": ns, "actor": ACTOR, "reason": "deploy"}
        )
        assert paused["namespace"] == {**paused["namespace"], "name": ns, "paused": True}

        # A paused namespace accepts tasks but dispatches nothing.
        created = await grpc_cli(
            f"{TASKS}/CreateTask", {"namespace": ns, "template_name": "ticker", "context": {}}
        )
        task_id = created["task"]["task_id"]
        until = time.monotonic() + 0.7
        while time.monotonic() < until:
            task = await get_task(grpc_cli, task_id)
            assert step_of(task, "tick")["state"] == "STEP_STATE_PENDING"
            await asyncio.sleep(0.1)
        assert not ran

        resumed = await grpc_cli(
            f"{ADMIN}/ResumeNamespace", {"namespace": ns, "actor": ACTOR, "reason": "deployed"}
        )
        assert "paused" not in resumed["namespace"]
        await wait_task_state(grpc_cli, task_id, "TASK_STATE_COMPLETE")
        assert len(ran) == 1

    updated = await grpc_cli(
        f"{ADMIN}/UpdateNamespace",
        {"namespace": ns, "max_parallel_tasks": 3, "actor": ACTOR, "reason": "quota"},
    )
    assert updated["namespace"]["max_parallel_tasks"] == 3
    listed = await grpc_cli(f"{ADMIN}/ListNamespaces", {})
    [mine] = [n for n in listed["namespaces"] if n["name"] == ns]
    assert (mine["max_parallel_tasks"], mine.get("paused", False)) == (3, False)

    events = await events_named(client, [ns], ["namespace.*"], 3)
    assert [(e.event_name, e.metadata["actor"], e.metadata["reason"]) for e in events] == [
        ("namespace.paused", ACTOR, "deploy"),
        ("namespace.resumed", ACTOR, "deployed"),
        ("namespace.updated", ACTOR, "quota"),
    ]


async def test_circuit_breakers_over_grpcurl(
    proc: ServerProcess, client: Client, grpc_cli: Grpcurl
) -> None:
    ns = "grpcurl_breakers"
    key = "grpcurl-gateway"
    healthy = asyncio.Event()

    async def call(ctx: StepContext) -> dict[str, Any]:
        if not healthy.is_set():
            raise RetryableError("gateway timeout", immediate=True)
        return {"ok": True}

    yaml = (
        WorkflowBuilder("breaker", ns)
        .step(
            "call",
            "call",
            retry={"max_attempts": 5},
            circuit_breaker={"key": key, "failure_threshold": 1, "reset_timeout_seconds": 60},
        )
        .build()
    )
    await client.register_template(yaml)
    async with running_worker(proc.address, ns, {"call": call}, worker_id=f"grpcurl-{ns}"):
        task_id = (await client.create_task(ns, "breaker", {})).task_id
        async with asyncio.timeout(10):
            while True:
                reply = await grpc_cli(f"{ADMIN}/GetCircuitBreakers", {"keys": [key]})
                [breaker] = reply["circuit_breakers"]
                if breaker["state"] == "CIRCUIT_BREAKER_STATE_OPEN":
                    break
                await asyncio.sleep(0.1)
        assert (breaker["key"], breaker["failure_threshold"]) == (key, 1)
        assert breaker["reset_timeout"] == "60s"
        assert "opened_time" in breaker
        everything = await grpc_cli(f"{ADMIN}/GetCircuitBreakers", {})
        assert key in {b["key"] for b in everything["circuit_breakers"]}

        healthy.set()
        reply = await grpc_cli(
            f"{ADMIN}/ResetCircuitBreaker", {"key": key, "actor": ACTOR, "reason": "gateway fixed"}
        )
        assert reply["circuit_breaker"]["state"] == "CIRCUIT_BREAKER_STATE_CLOSED"
        assert "failure_count" not in reply["circuit_breaker"]  # 0
        await wait_task_state(grpc_cli, task_id, "TASK_STATE_COMPLETE")

    events = await events_named(client, [], ["circuit_breaker.*"], 2)
    assert [(e.event_name, e.metadata["key"]) for e in events] == [
        ("circuit_breaker.opened", key),
        ("circuit_breaker.closed", key),
    ]
    assert (events[1].metadata["actor"], events[1].metadata["reason"]) == (ACTOR, "gateway fixed")


# --- bad calls ---------------------------------------------------------------------------------


async def test_unknown_ids_and_missing_actor_over_grpcurl(grpc_cli: Grpcurl) -> None:
    unknown = "918273645"
    not_found = [
        ("RetryStep", {"task_id": unknown, "step_name": "a", "actor": ACTOR}, "TASK_NOT_FOUND"),
        ("ResolveStepManually", {"task_id": unknown, "step_name": "a", "actor": ACTOR}, "TASK"),
        (
            "CompleteStepManually",
            {"task_id": unknown, "step_name": "a", "result": {}, "actor": ACTOR},
            "TASK_NOT_FOUND",
        ),
        ("ResolveTaskManually", {"task_id": unknown, "actor": ACTOR}, "TASK_NOT_FOUND"),
        ("ResetCircuitBreaker", {"key": "no-such-key", "actor": ACTOR}, "CIRCUIT_BREAKER"),
    ]
    for method, data, reason in not_found:
        err = await grpc_cli.error(f"{ADMIN}/{method}", data, "NotFound")
        assert reason in err, (method, err)
    err = await grpc_cli.error(
        f"{TASKS}/CancelTask", {"task_id": unknown, "actor": ACTOR}, "NotFound"
    )
    assert "TASK_NOT_FOUND" in err

    no_actor = [
        ("RetryStep", {"task_id": unknown, "step_name": "a"}),
        ("ResolveStepManually", {"task_id": unknown, "step_name": "a"}),
        ("CompleteStepManually", {"task_id": unknown, "step_name": "a", "result": {}}),
        ("ResolveTaskManually", {"task_id": unknown}),
        ("ResetCircuitBreaker", {"key": "no-such-key"}),
        ("PauseNamespace", {"namespace": "grpcurl_bad"}),
        ("ResumeNamespace", {"namespace": "grpcurl_bad"}),
        ("UpdateNamespace", {"namespace": "grpcurl_bad", "max_parallel_tasks": 1}),
    ]
    for method, data in no_actor:
        err = await grpc_cli.error(f"{ADMIN}/{method}", data, "InvalidArgument")
        assert '"field":"actor"' in err, (method, err)
