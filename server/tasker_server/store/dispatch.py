"""Admission of tasks and claiming of ready steps: the readiness SQL lives here, once.

Readiness is incremental: ``steps.pending_parents`` counts unsatisfied dependencies and is
decremented by ``outcomes.apply`` for the children of each satisfied step, so a step is ready
exactly when ``state IN ('pending','retrying') AND pending_parents = 0`` (and its backoff elapsed).
The partial index ``ix_steps_ready`` holds only such rows.

Claims are ``SELECT … FOR UPDATE SKIP LOCKED`` then an UPDATE by primary key, in one
transaction. On PostgreSQL the row locks keep concurrent claimers (other replicas) apart, and the
task rows are locked too so ``max_parallel_steps`` is checked against a stable ``in_flight``. On
SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (see ``db.py``), so the same
read-then-write runs alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, false, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain.states import (
    StepEvent,
    StepState,
    TaskEvent,
    TaskState,
    allowed_step_sources,
)

from .journal import Journal
from .models import (
    LEASED_STEP_STATES,
    READY_STEP_STATES,
    Namespace,
    Step,
    StepEdge,
    Task,
    Worker,
)
from .types import dialect_name, in_literals

__all__ = ["ClaimedStep", "DependencyRow", "admit_tasks", "claim_steps"]

_ADMISSION_LOCK = 0x7A5C3E3
# Readiness queries per claim at most (see claim_steps: tasks out of room in the first rows).
_CLAIM_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class DependencyRow:
    name: str
    state: str
    result: Any


@dataclass(frozen=True, slots=True)
class ClaimedStep:
    lease_id: str
    lease_deadline: datetime
    step_id: int
    name: str
    handler: str
    position: int
    attempt: int
    max_attempts: int
    timeout_seconds: float
    config: Any
    task_id: int
    namespace: str
    template_name: str
    template_version: str
    context: Any
    correlation_id: str | None
    priority: int
    tags: Any
    total_steps: int
    trace_parent: str | None
    trace_state: str | None
    dependencies: tuple[DependencyRow, ...]
    is_fallback: bool = False
    breaker_key: str = ""
    worker_id: str = ""  # the worker the step is leased to


async def admit_tasks(session: AsyncSession, journal: Journal, server_cap: int) -> int:
    """Moves PENDING tasks to IN_PROGRESS within the server-wide and per-namespace caps.

    Returns how many were admitted. Admission is serialised (an advisory lock on PostgreSQL, the
    single writer on SQLite) so that two replicas cannot both fill the last slot.
    """
    if dialect_name(session) == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADMISSION_LOCK})
    running = (
        await session.execute(
            select(Task.namespace, func.count())
            .where(Task.state == TaskState.IN_PROGRESS)
            .group_by(Task.namespace)
        )
    ).all()
    per_namespace = {ns: int(n) for ns, n in running}
    room = server_cap - sum(per_namespace.values())
    if room <= 0:
        return 0
    candidates = (
        await session.execute(
            select(
                Task.id,
                Task.namespace,
                Task.correlation_id,
                Task.total_steps,
                Namespace.max_parallel_tasks,
            )
            .join(Namespace, Namespace.name == Task.namespace, isouter=True)
            .where(Task.state == TaskState.PENDING)
            .order_by(Task.priority.desc(), Task.id)
            .limit(room)
        )
    ).all()
    admitted: list[int] = []
    for task_id, namespace, correlation_id, total_steps, cap in candidates:
        if cap is not None and per_namespace.get(namespace, 0) >= cap:
            continue
        per_namespace[namespace] = per_namespace.get(namespace, 0) + 1
        admitted.append(task_id)
        journal.transition(
            task_id=task_id,
            from_state=TaskState.PENDING,
            to_state=TaskState.IN_PROGRESS,
            event=TaskEvent.ADMIT,
        )
        journal.event(
            "task.started",
            task_id=task_id,
            namespace=namespace,
            correlation_id=correlation_id,
            metadata={"total_steps": total_steps},
        )
    if admitted:
        await session.execute(
            update(Task)
            .where(Task.id.in_(admitted), Task.state == TaskState.PENDING)
            .values(state=TaskState.IN_PROGRESS, start_time=journal.now, update_time=journal.now)
            .execution_options(synchronize_session=False)
        )
        # Roots of the admitted tasks are viable now.
        roots = (
            await session.execute(
                select(Step.task_id, Step.name, Step.namespace).where(
                    Step.task_id.in_(admitted), Step.pending_parents == 0
                )
            )
        ).all()
        by_task: dict[int, list[str]] = {}
        for task_id, name, _ in roots:
            by_task.setdefault(task_id, []).append(name)
        for task_id, names in by_task.items():
            journal.event(
                "viable_steps.discovered",
                task_id=task_id,
                namespace=roots[0].namespace,
                metadata={"step_names": names},
            )
    return len(admitted)


async def claim_steps(
    session: AsyncSession,
    journal: Journal,
    *,
    namespaces: list[str],
    handlers: list[str],
    workers: Sequence[tuple[str, int]],
    lease_extra_seconds: float,
    open_breakers: list[str] | None = None,
    only_breaker_key: str | None = None,
) -> list[ClaimedStep]:
    """Leases ready steps for ``workers`` (worker id, free slots), which all serve these
    namespaces and handlers: highest priority first, dealt round-robin so they share the load.

    One query for all of them rather than one per worker: within the transaction a second
    worker's query could only find what the first one's left, and on a busy tick each query is
    a round trip (plus its two UPDATEs and the read of the dependencies' results)."""
    limit = sum(max(0, free) for _, free in workers)
    if limit <= 0 or not namespaces or not handlers:
        return []
    now = journal.now
    paused = select(Namespace.name).where(Namespace.paused.is_(True))
    query = (
        select(Step, Task)
        .join(Task, Task.id == Step.task_id)
        .where(
            in_literals(Step.state, READY_STEP_STATES),
            Step.pending_parents == 0,
            Step.namespace.in_(namespaces),
            Step.handler.in_(handlers),
            or_(Step.ready_at.is_(None), Step.ready_at <= now),
            Task.state == TaskState.IN_PROGRESS,
            or_(Task.max_parallel_steps.is_(None), Task.in_flight < Task.max_parallel_steps),
            Step.namespace.not_in(paused),
        )
        .order_by(Step.priority.desc(), Step.id)
    )
    if open_breakers:
        query = query.where(Step.breaker_key.not_in(open_breakers))
    if only_breaker_key is not None:
        query = query.where(Step.breaker_key == only_breaker_key)
    if dialect_name(session) == "postgresql":
        query = query.with_for_update(of=[Step.__table__, Task.__table__], skip_locked=True)

    # max_parallel_steps: at most (limit - in flight) new leases per task in this claim. The
    # readiness query reads the top of the ready index only, so a task with many ready steps
    # can fill the LIMIT with steps it has no room for: look again past the tasks that filled
    # up (a few rounds at most; usually the first round is the only one).
    room: dict[int, int] = {}
    chosen: list[tuple[Step, Task]] = []
    for _ in range(_CLAIM_ROUNDS):
        wanted = limit - len(chosen)
        full = [task_id for task_id, left in room.items() if left <= 0]
        round_query = query.limit(wanted)
        if full:
            round_query = round_query.where(Step.task_id.not_in(full))
        if chosen:
            round_query = round_query.where(Step.id.not_in([step.id for step, _ in chosen]))
        candidates = (await session.execute(round_query)).all()
        skipped = False
        for step, task in candidates:
            if task.id not in room:
                cap = task.max_parallel_steps
                room[task.id] = (cap - task.in_flight) if cap is not None else 1 << 30
            if room[task.id] <= 0:
                skipped = True
                continue
            room[task.id] -= 1
            chosen.append((step, task))
        if not skipped or len(candidates) < wanted or len(chosen) >= limit:
            break
    if not chosen:
        return []

    # Hard deadline: the worker enforces the step timeout; this backstops workers and replicas
    # that vanished without a trace.
    deadlines = {
        step.id: now + timedelta(seconds=step.timeout_seconds + lease_extra_seconds)
        for step, _ in chosen
    }
    leases = {step.id: str(uuid.uuid4()) for step, _ in chosen}
    owners = dict(zip((step.id for step, _ in chosen), _deal(len(chosen), workers), strict=True))
    await session.execute(
        _LEASE_STEP,
        [
            {
                "b_id": step.id,
                "b_lease": leases[step.id],
                "b_expires": deadlines[step.id],
                "b_worker": owners[step.id],
                "b_now": now,
            }
            for step, _ in chosen
        ],
    )
    added: dict[int, int] = {}
    tasks: dict[int, Task] = {}
    for step, task in chosen:
        added[task.id] = added.get(task.id, 0) + 1
        tasks[task.id] = task
        journal.transition(
            task_id=task.id,
            step_id=step.id,
            from_state=step.state,
            to_state=StepState.ENQUEUED,
            event=StepEvent.CLAIM,
            actor=f"worker:{owners[step.id]}",
        )
    await session.execute(
        _ADD_IN_FLIGHT,
        [
            {"b_id": task_id, "b_in_flight": tasks[task_id].in_flight + n, "b_now": now}
            for task_id, n in added.items()
        ],
    )
    return await _contexts(session, chosen, leases, deadlines, owners)


def _deal(count: int, workers: Sequence[tuple[str, int]]) -> list[str]:
    """``count`` (at most their free slots in all) handed out one by one, in turn."""
    left = {worker_id: free for worker_id, free in workers if free > 0}
    owners: list[str] = []
    while len(owners) < count:
        for worker_id in list(left):
            if len(owners) == count:
                break
            owners.append(worker_id)
            left[worker_id] -= 1
            if not left[worker_id]:
                del left[worker_id]
    return owners


# Core executemany statements for the claim's writes (cheaper than ORM bulk updates on the hot
# path; the rows were locked by the candidate query, so no state guard is needed here).
_steps = cast(Table, Step.__table__)
_tasks = cast(Table, Task.__table__)
_LEASE_STEP = (
    update(_steps)
    .where(_steps.c.id == bindparam("b_id"))
    .values(
        state=StepState.ENQUEUED.value,
        lease_id=bindparam("b_lease"),
        lease_expires_at=bindparam("b_expires"),
        worker_id=bindparam("b_worker"),
        update_time=bindparam("b_now"),
    )
)
_ADD_IN_FLIGHT = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("b_id"))
    .values(in_flight=bindparam("b_in_flight"), update_time=bindparam("b_now"))
)


async def _contexts(
    session: AsyncSession,
    chosen: list[tuple[Step, Task]],
    leases: dict[int, str],
    deadlines: dict[int, datetime],
    owners: dict[int, str],
) -> list[ClaimedStep]:
    """Execution contexts of claimed steps: one query for all their dependencies' results."""
    step_ids = [step.id for step, _ in chosen]
    deps: dict[int, list[DependencyRow]] = {}
    parent = Step.__table__.alias("parent")
    dep_rows = await session.execute(
        select(StepEdge.child_id, parent.c.name, parent.c.state, parent.c.result)
        .join(parent, parent.c.id == StepEdge.parent_id)
        .where(StepEdge.child_id.in_(step_ids))
    )
    for child_id, name, state, result in dep_rows.all():
        deps.setdefault(child_id, []).append(DependencyRow(name, state, result))
    return [
        ClaimedStep(
            lease_id=leases[step.id],
            lease_deadline=deadlines[step.id],
            step_id=step.id,
            name=step.name,
            handler=step.handler,
            position=step.position,
            attempt=step.attempts + 1,
            max_attempts=step.max_attempts,
            timeout_seconds=step.timeout_seconds,
            config=step.config,
            task_id=task.id,
            namespace=task.namespace,
            template_name=task.template_name,
            template_version=task.template_version,
            context=task.context,
            correlation_id=task.correlation_id,
            priority=task.priority,
            tags=task.tags,
            total_steps=task.total_steps,
            trace_parent=task.trace_parent,
            trace_state=task.trace_state,
            dependencies=tuple(deps.get(step.id, ())),
            is_fallback=step.is_fallback,
            breaker_key=step.breaker_key,
            worker_id=owners[step.id],
        )
        for step, task in chosen
    ]


@dataclass(frozen=True, slots=True)
class StartedStep:
    lease_id: str
    step_id: int
    task_id: int
    name: str
    attempt: int


async def start_leases(
    session: AsyncSession,
    journal: Journal,
    lease_ids: list[str],
    worker_id: str = "",
    correlation_ids: dict[str, str | None] | None = None,
) -> list[StartedStep]:
    """ENQUEUED -> IN_PROGRESS for acknowledged leases; the attempt is counted here.

    ``correlation_ids`` (by lease, known to the dispatcher since the claim) spares a read of the
    tasks for the events; leases missing from it are looked up."""
    if not lease_ids:
        return []
    rows = (
        await session.execute(
            update(Step)
            .where(
                Step.lease_id.in_(lease_ids),
                Step.state.in_(allowed_step_sources(StepState.IN_PROGRESS, StepEvent.ACK)),
            )
            .values(
                state=StepState.IN_PROGRESS,
                attempts=Step.attempts + 1,
                start_time=func.coalesce(Step.start_time, journal.now),
                update_time=journal.now,
            )
            .returning(
                Step.lease_id,
                Step.id,
                Step.task_id,
                Step.name,
                Step.attempts,
                Step.worker_id,
                Step.namespace,
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not rows:
        return []
    known = correlation_ids or {}
    unknown = {r.task_id for r in rows if r.lease_id not in known}
    correlation: dict[int, str | None] = {}
    if unknown:
        found = await session.execute(
            select(Task.id, Task.correlation_id).where(Task.id.in_(unknown))
        )
        correlation = {task_id: corr for task_id, corr in found.all()}
    started = []
    for lease_id, step_id, task_id, name, attempt, holder, namespace in rows:
        started.append(StartedStep(lease_id or "", step_id, task_id, name, attempt))
        journal.transition(
            task_id=task_id,
            step_id=step_id,
            from_state=StepState.ENQUEUED,
            to_state=StepState.IN_PROGRESS,
            event=StepEvent.ACK,
            actor=f"worker:{holder or worker_id}",
        )
        journal.event(
            "step.started",
            task_id=task_id,
            namespace=namespace,
            correlation_id=known[lease_id] if lease_id in known else correlation.get(task_id),
            step_name=name,
            metadata={"attempt": attempt, "worker_id": holder or worker_id},
        )
    return started


async def ready_depth(session: AsyncSession) -> dict[str, int]:
    """Ready steps per namespace (served by the ready partial index)."""
    rows = await session.execute(
        select(Step.namespace, func.count())
        .where(in_literals(Step.state, READY_STEP_STATES), Step.pending_parents == 0)
        .group_by(Step.namespace)
    )
    return {ns: int(n) for ns, n in rows.all()}


async def expired_leases(
    session: AsyncSession, now: datetime, silent_before: datetime | None = None, limit: int = 500
) -> list[tuple[str, bool]]:
    """Leases to take back, each with whether its worker vanished: past their hard deadline, or
    (``silent_before``) held by a worker that no replica has seen since then — its stream died
    with a replica that crashed, so nothing else would release it before the deadline."""
    leased = in_literals(Step.state, LEASED_STEP_STATES)
    vanished = (
        Worker.last_seen_time < silent_before if silent_before is not None else false()
    ).label("vanished")
    rows = await session.execute(
        select(Step.lease_id, vanished)
        .outerjoin(Worker, Worker.id == Step.worker_id)
        .where(leased, or_(Step.lease_expires_at < now, vanished))
        .limit(limit)
    )
    return [(lease_id, bool(gone)) for lease_id, gone in rows.all() if lease_id]
