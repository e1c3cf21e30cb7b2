"""Applying lease outcomes in the store (store.outcomes.apply_outcomes), on both backends.

Each test drives the store by hand (admit, claim, acknowledge, report) the way an engine tick
does, one transaction per step, and ends by checking that every transition row written is an edge
of the table (the journal already refuses others in tests: TASKER_STRICT_TRANSITIONS).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tasker_server.config import load_settings
from tasker_server.domain.states import (
    STEP_TRANSITIONS,
    TASK_TRANSITIONS,
    StepState,
    TaskState,
    check_task_transition,
)
from tasker_server.engine.commands import Commands
from tasker_server.engine.orchestrator import Orchestrator
from tasker_server.store.db import Database
from tasker_server.store.dispatch import ClaimedStep, admit_tasks, claim_steps, start_leases
from tasker_server.store.journal import Journal
from tasker_server.store.models import (
    Event,
    Namespace,
    Step,
    StepAttempt,
    Task,
    Transition,
    Worker,
)
from tasker_server.store.outcomes import BatchResult, Outcome, OutcomeKind, apply_outcomes
from tasker_server.store.types import utcnow
from tasker_server.store.workers import upsert_worker
from tests.support.server import FAST_TIMERS

NS = "outcomes"
TEMPLATE = f"""
name: chain
namespace: {NS}
version: 1.0.0
step_templates:
  - {{name: a, handler_class: h, retry: {{max_attempts: 2, backoff_base_seconds: 60}}}}
  - {{name: b, handler_class: h, depends_on_steps: [a]}}
  - {{name: opt, handler_class: h, optional: true, retry: {{max_attempts: 1}}}}
  - {{name: after_opt, handler_class: h, depends_on_steps: [opt]}}
"""


@dataclass
class Store:
    """The store driven by hand: what an engine tick does, one call per transaction."""

    database: Database
    commands: Commands
    engine: Orchestrator

    async def create(self, count: int = 1) -> list[int]:
        ids = []
        for i in range(count):
            detail, _ = await self.commands.create_task(
                namespace=NS,
                template_name="chain",
                template_version="",
                context={"i": i},
                idempotency_key="",
                correlation_id="",
                priority=0,
                tags=[],
                deadline=None,
                trace_parent=None,
                trace_state=None,
            )
            ids.append(detail.task.id)
        return ids

    async def admit(self, cap: int = 100) -> int:
        async with self.database.session() as s:
            journal = Journal()
            admitted = await admit_tasks(s, journal, cap)
            await journal.flush(s)
        return admitted

    async def claim(self, worker: str = "w", free: int = 10) -> dict[str, ClaimedStep]:
        async with self.database.session() as s:
            journal = Journal()
            claimed = await claim_steps(
                s,
                journal,
                namespaces=[NS],
                handlers=["h"],
                workers=[(worker, free)],
                lease_extra_seconds=5,
            )
            await journal.flush(s)
        return {c.name: c for c in claimed}

    async def ack(self, *leases: str) -> None:
        async with self.database.session() as s:
            journal = Journal()
            await start_leases(s, journal, list(leases))
            await journal.flush(s)

    async def report(self, *outcomes: Outcome) -> BatchResult:
        async with self.database.session() as s:
            journal = Journal()
            result = await apply_outcomes(s, journal, list(outcomes), random.Random(7))
            await journal.flush(s)
        return result

    async def steps(self, task_id: int) -> dict[str, Step]:
        async with self.database.session(read_only=True) as s:
            rows = await s.execute(select(Step).where(Step.task_id == task_id))
            return {step.name: step for step in rows.scalars()}

    async def task(self, task_id: int) -> Task:
        async with self.database.session(read_only=True) as s:
            return (await s.execute(select(Task).where(Task.id == task_id))).scalar_one()

    async def attempts(self, step_id: int) -> list[str]:
        async with self.database.session(read_only=True) as s:
            rows = await s.execute(
                select(StepAttempt.outcome)
                .where(StepAttempt.step_id == step_id)
                .order_by(StepAttempt.id)
            )
            return list(rows.scalars())


@pytest.fixture
async def store(database: Database, db_url: str) -> AsyncIterator[Store]:
    settings = load_settings(environ={}, overrides={"database_url": db_url, **FAST_TIMERS})
    engine = Orchestrator(database, settings)
    commands = Commands(engine)
    await commands.register_template(TEMPLATE)
    engine.creator.start()  # only the creator runs: admission, claims and outcomes are by hand
    try:
        yield Store(database, commands, engine)
    finally:
        await engine.creator.stop()
    await _assert_transitions_are_edges(database)


async def _assert_transitions_are_edges(database: Database) -> None:
    async with database.session(read_only=True) as s:
        rows = (
            await s.execute(
                select(
                    Transition.entity, Transition.from_state, Transition.to_state, Transition.event
                )
            )
        ).all()
    assert rows, "the scenario wrote no transitions"
    for entity, src, dst, event in rows:
        if entity == "step":
            assert (src, dst, event) in STEP_TRANSITIONS, (src, dst, event)
        elif src is None:
            check_task_transition(None, dst, event)
        else:
            assert (src, dst, event) in TASK_TRANSITIONS, (src, dst, event)


def success(lease: str, result: Any = None, worker: str = "w") -> Outcome:
    return Outcome(lease, OutcomeKind.SUCCESS, worker, result={"v": result})


def failure(lease: str, error_class: str, worker: str = "w", message: str = "boom") -> Outcome:
    return Outcome(
        lease, OutcomeKind.FAILURE, worker, error_class=error_class, error_type="E", message=message
    )


async def test_results_release_dependents_and_complete_the_task(store: Store) -> None:
    [task_id] = await store.create()
    assert await store.admit() == 1
    first = await store.claim()
    assert set(first) == {"a", "opt"}  # the roots; b and after_opt wait for their parent
    await store.ack(first["a"].lease_id)
    # A result without its acknowledgement (lost, or a lazy-ack worker) implies it.
    result = await store.report(success(first["a"].lease_id, 1), success(first["opt"].lease_id, 2))
    assert all(v.accepted and not v.reason for v in result.verdicts)
    steps = await store.steps(task_id)
    assert {n: (s.state, s.attempts) for n, s in steps.items() if n in ("a", "opt")} == {
        "a": ("complete", 1),
        "opt": ("complete", 1),
    }
    assert steps["b"].pending_parents == 0 and steps["after_opt"].pending_parents == 0
    assert (await store.task(task_id)).satisfied_steps == 2

    second = await store.claim()
    assert set(second) == {"b", "after_opt"}
    assert {d.name for d in second["b"].dependencies} == {"a"}
    result = await store.report(*(success(c.lease_id, c.name) for c in second.values()))
    assert result.finished_tasks == [task_id]
    task = await store.task(task_id)
    assert (task.state, task.in_flight, task.satisfied_steps) == ("complete", 0, 4)
    # The task's result is its leaves' results.
    assert task.result == {"b": {"v": "b"}, "after_opt": {"v": "after_opt"}}


async def test_a_duplicate_is_recorded_once_and_a_different_outcome_is_a_conflict(
    store: Store,
) -> None:
    [task_id] = await store.create()
    await store.admit()
    lease = (await store.claim())["a"].lease_id
    # The same outcome twice in one batch, then again in a later one.
    first = await store.report(success(lease, 1), success(lease, 1))
    assert [(v.accepted, v.reason) for v in first.verdicts] == [(True, ""), (True, "DUPLICATE")]
    again = await store.report(success(lease, 1))
    assert [(v.accepted, v.reason) for v in again.verdicts] == [(True, "DUPLICATE")]
    other = await store.report(success(lease, 2), failure(lease, "transient"))
    assert [(v.accepted, v.reason) for v in other.verdicts] == [
        (False, "OUTCOME_CONFLICT"),
        (False, "OUTCOME_CONFLICT"),
    ]
    a = (await store.steps(task_id))["a"]
    assert (a.state, a.result, a.attempts) == ("complete", {"v": 1}, 1)
    assert await store.attempts(a.id) == ["complete"]
    assert (await store.task(task_id)).satisfied_steps == 1


async def test_stale_and_foreign_reports_are_refused(store: Store) -> None:
    [task_id] = await store.create()
    await store.admit()
    lease = (await store.claim(worker="w"))["a"].lease_id
    unknown = await store.report(success("no-such-lease"))
    assert [(v.accepted, v.reason) for v in unknown.verdicts] == [(False, "LEASE_STALE")]
    # A lease id is not a bearer token: only the worker it was issued to may report on it.
    foreign = await store.report(success(lease, worker="intruder"))
    assert [(v.accepted, v.reason) for v in foreign.verdicts] == [(False, "LEASE_NOT_HELD")]
    assert (await store.steps(task_id))["a"].state == "enqueued"


async def test_an_expired_attempt_retries_and_its_late_result_is_stale(store: Store) -> None:
    [task_id] = await store.create()
    await store.admit()
    lease = (await store.claim())["a"].lease_id
    await store.ack(lease)
    expired = await store.report(Outcome(lease, OutcomeKind.EXPIRE, "w", lost=True))
    assert [v.accepted for v in expired.verdicts] == [True]
    # A lost lease says nothing about the handler or its dependency.
    assert expired.breaker_feed == [] and expired.handler_feed == []
    a = (await store.steps(task_id))["a"]
    assert (a.state, a.lease_id, a.attempts) == ("retrying", None, 1)
    assert (a.last_error or {})["error_type"] == "LeaseExpired"
    assert await store.attempts(a.id) == ["lease_expired"]
    late = await store.report(success(lease, 1))
    assert [(v.accepted, v.reason) for v in late.verdicts] == [(False, "LEASE_STALE")]
    assert (await store.steps(task_id))["a"].state == "retrying"


async def test_a_lease_lost_with_a_stream_the_worker_replaced_stays_with_the_worker(
    store: Store,
) -> None:
    # The worker reconnected (to another replica, which adopted its lease) before the replica
    # holding its old stream noticed that stream die: the old stream's loss is superseded, and
    # its "disconnected" does not overwrite where the worker is now.
    [task_id] = await store.create()
    await store.admit()
    lease = (await store.claim(worker="w"))["a"].lease_id
    await store.ack(lease)
    old_stream, new_stream = utcnow() - timedelta(seconds=30), utcnow()
    row = {
        "id": "w",
        "name": "w",
        "namespaces": [NS],
        "handlers": ["h"],
        "capacity": 1,
        "sdk_language": "python",
        "sdk_version": "0",
        "server_id": "b",
        "connect_time": new_stream,
        "last_seen_time": new_stream,
        "state": "connected",
    }
    async with store.database.session() as s:
        await upsert_worker(s, row)
        stale = {**row, "server_id": "a", "connect_time": old_stream, "state": "disconnected"}
        await upsert_worker(s, stale)
    lost = Outcome(lease, OutcomeKind.EXPIRE, "w", lost=True, stream_since=old_stream)
    result = await store.report(lost)
    assert [(v.accepted, v.reason) for v in result.verdicts] == [(True, "SUPERSEDED")]
    a = (await store.steps(task_id))["a"]
    assert (a.state, a.lease_id) == ("in_progress", lease)
    async with store.database.session(read_only=True) as s:
        worker = (await s.execute(select(Worker).where(Worker.id == "w"))).scalar_one()
    assert (worker.server_id, worker.state) == ("b", "connected")
    # A loss from the stream the worker is on now still counts.
    current = Outcome(lease, OutcomeKind.EXPIRE, "w", lost=True, stream_since=new_stream)
    assert [v.reason for v in (await store.report(current)).verdicts] == [""]
    assert (await store.steps(task_id))["a"].state == "retrying"


async def test_an_unacknowledged_release_requeues_without_an_attempt(store: Store) -> None:
    [task_id] = await store.create()
    await store.admit()
    lease = (await store.claim())["a"].lease_id
    # An expiry of a lease never acknowledged is a release: no attempt counted.
    result = await store.report(Outcome(lease, OutcomeKind.EXPIRE, "w"))
    assert [v.accepted for v in result.verdicts] == [True]
    a = (await store.steps(task_id))["a"]
    assert (a.state, a.lease_id, a.attempts) == ("pending", None, 0)
    assert await store.attempts(a.id) == []
    assert (await store.task(task_id)).in_flight == 1  # opt is still leased
    assert "a" in await store.claim()  # ready again at once


async def test_failures_retry_then_fail_the_task_and_an_optional_step_is_skipped(
    store: Store,
) -> None:
    [task_id] = await store.create()
    await store.admit()
    claimed = await store.claim()
    result = await store.report(
        failure(claimed["a"].lease_id, "delayed"), failure(claimed["opt"].lease_id, "permanent")
    )
    assert [v.accepted for v in result.verdicts] == [True, True]
    assert result.finished_tasks == []
    steps = await store.steps(task_id)
    # a: attempt 1 of 2 failed, retried after its backoff; opt: optional, so skipped, and its
    # dependent is released.
    assert (steps["a"].state, steps["a"].attempts) == ("retrying", 1)
    assert steps["a"].ready_at is not None
    assert steps["opt"].state == "skipped" and steps["after_opt"].pending_parents == 0
    async with store.database.session(read_only=True) as s:
        [meta] = (
            await s.execute(
                select(Transition.metadata_).where(
                    Transition.step_id == steps["a"].id, Transition.event == "failure"
                )
            )
        ).scalars()
        [event] = (
            await s.execute(select(Event.payload).where(Event.name == "step.retrying"))
        ).scalars()
    # The delay is the event's news; the transition records the attempt and its error.
    assert meta == {"attempt": 1, "error_class": "delayed", "error_type": "E"}
    assert event["metadata"]["delay_ms"] > 0
    assert set(await store.claim()) == {"after_opt"}  # a waits for its backoff

    async with store.database.session() as s:  # the backoff elapses
        await s.execute(update(Step).where(Step.id == steps["a"].id).values(ready_at=None))
    retry = (await store.claim())["a"].lease_id
    result = await store.report(failure(retry, "transient"))
    assert result.finished_tasks == [task_id]
    a = (await store.steps(task_id))["a"]
    assert (a.state, a.attempts) == ("failed", 2)
    assert await store.attempts(a.id) == ["failed", "failed"]
    task = await store.task(task_id)
    assert task.state == "failed" and task.end_time is not None


async def test_admission_respects_the_server_and_namespace_caps(store: Store) -> None:
    await store.create(4)
    assert await store.admit(cap=2) == 2
    assert await store.admit(cap=2) == 0  # two already running
    async with store.database.session() as s:
        await s.execute(update(Namespace).where(Namespace.name == NS).values(max_parallel_tasks=3))
    assert await store.admit(cap=100) == 1  # the namespace's cap, not the server's
    async with store.database.session(read_only=True) as s:
        rows = await s.execute(select(Task.state, func.count()).group_by(Task.state))
        states = {state: n for state, n in rows.all()}
    assert states == {TaskState.IN_PROGRESS: 3, TaskState.PENDING: 1}


async def test_max_parallel_steps_caps_a_tasks_leases(store: Store) -> None:
    [task_id] = await store.create()
    async with store.database.session() as s:
        await s.execute(update(Task).where(Task.id == task_id).values(max_parallel_steps=1))
    await store.admit()
    first = await store.claim()
    assert len(first) == 1  # two roots ready, room for one
    assert await store.claim() == {}
    [(name, claimed)] = first.items()
    await store.report(success(claimed.lease_id))
    second = await store.claim()
    assert len(second) == 1 and name not in second
    steps = await store.steps(task_id)
    assert sum(s.state == StepState.ENQUEUED for s in steps.values()) == 1
