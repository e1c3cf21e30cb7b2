"""Tasks: creation (task, steps and edges in one transaction), reads, listing and cancellation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain import errors
from tasker_server.domain.states import (
    FINISHED_TASK_STATES,
    StepEvent,
    StepState,
    TaskEvent,
    TaskState,
    allowed_step_sources,
    check_task_transition,
)

from .journal import Journal
from .models import Step, StepAttempt, StepEdge, Task, Transition

__all__ = [
    "NewStep",
    "NewTask",
    "TaskDetail",
    "cancel_steps",
    "close_task",
    "find_by_idempotency_key",
    "insert_tasks",
    "list_tasks",
    "load_task",
    "load_task_detail",
    "locked_task",
]

# Tasks that may still pass their deadline.
_UNFINISHED_TASK_STATES = [s.value for s in TaskState if s not in FINISHED_TASK_STATES]


@dataclass(frozen=True, slots=True)
class NewStep:
    name: str
    handler: str
    position: int
    depends_on: tuple[str, ...]
    max_attempts: int
    retry: dict[str, Any]
    timeout_seconds: float
    config: dict[str, Any]
    optional: bool
    fallback_handler: str | None
    breaker_key: str


@dataclass(frozen=True, slots=True)
class NewTask:
    namespace: str
    template_name: str
    template_version: str
    template_id: int
    context: dict[str, Any]
    correlation_id: str | None
    priority: int
    tags: list[str]
    idempotency_key: str | None
    max_parallel_steps: int | None
    deadline: datetime | None
    trace_parent: str | None
    trace_state: str | None
    steps: list[NewStep]


@dataclass(slots=True)
class TaskDetail:
    task: Task
    steps: list[Step] = field(default_factory=list)
    parents: dict[int, list[str]] = field(default_factory=dict)
    attempts: dict[int, list[StepAttempt]] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)


async def find_by_idempotency_key(session: AsyncSession, namespace: str, key: str) -> Task | None:
    query = select(Task).where(Task.namespace == namespace, Task.idempotency_key == key)
    return (await session.execute(query)).scalars().first()


def _task_row(new: NewTask, now: datetime) -> dict[str, Any]:
    return {
        "namespace": new.namespace,
        "template_name": new.template_name,
        "template_version": new.template_version,
        "template_id": new.template_id,
        "state": TaskState.PENDING,
        "context": new.context,
        "correlation_id": new.correlation_id,
        "priority": new.priority,
        "tags": new.tags,
        "idempotency_key": new.idempotency_key,
        "total_steps": len(new.steps),
        "satisfied_steps": 0,
        "in_flight": 0,
        "max_parallel_steps": new.max_parallel_steps,
        "trace_parent": new.trace_parent,
        "trace_state": new.trace_state,
        "deadline": new.deadline,
        "blocked": False,
        "create_time": now,
        "update_time": now,
    }


def _step_rows(task_id: int, new: NewTask, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "task_id": task_id,
            "name": s.name,
            "handler": s.handler,
            "position": s.position,
            "state": StepState.PENDING,
            "namespace": new.namespace,
            "priority": new.priority,
            "pending_parents": len(s.depends_on),
            "attempts": 0,
            "max_attempts": s.max_attempts,
            "retry": s.retry,
            "timeout_seconds": s.timeout_seconds,
            "config": s.config,
            "optional": s.optional,
            "fallback_handler": s.fallback_handler,
            "breaker_key": s.breaker_key,
            "create_time": now,
            "update_time": now,
        }
        for s in new.steps
    ]


async def insert_tasks(
    session: AsyncSession, journal: Journal, news: list[NewTask]
) -> list[tuple[TaskDetail, bool]]:
    """Writes many tasks with their steps and edges; returns (detail, created) per input.

    Four statements whatever the number of tasks and the size of their DAGs: the idempotency
    lookup, one multi-row task INSERT, one multi-row step INSERT, one multi-row edge INSERT.
    ``pending_parents`` starts at the number of dependencies, so roots are ready as soon as a
    task is admitted. A task whose idempotency key exists (in the table or earlier in the batch)
    is not written: its existing task is returned with created=False. The details are built from
    the rows written, not read back.
    """
    now = journal.now
    keys = {(n.namespace, n.idempotency_key) for n in news if n.idempotency_key}
    existing: dict[tuple[str, str], Task] = {}
    if keys:
        rows = await session.execute(
            select(Task).where(tuple_(Task.namespace, Task.idempotency_key).in_(list(keys)))
        )
        existing = {(t.namespace, t.idempotency_key or ""): t for t in rows.scalars()}
    fresh: list[int] = []
    first_of: dict[tuple[str, str], int] = {}
    for i, n in enumerate(news):
        key = (n.namespace, n.idempotency_key or "")
        if n.idempotency_key and (key in existing or key in first_of):
            continue
        if n.idempotency_key:
            first_of[key] = i
        fresh.append(i)

    created: dict[int, TaskDetail] = {}
    if fresh:
        try:
            async with session.begin_nested():
                tasks = list(
                    (
                        await session.execute(
                            insert(Task).returning(Task, sort_by_parameter_order=True),
                            [_task_row(news[i], now) for i in fresh],
                        )
                    ).scalars()
                )
        except IntegrityError:
            # Another writer inserted one of these keys since the lookup: take them one by one,
            # and a lone loser returns the winner's task.
            if len(news) > 1:
                return [(await insert_tasks(session, journal, [n]))[0] for n in news]
            n = news[0]
            winner = (
                await find_by_idempotency_key(session, n.namespace, n.idempotency_key)
                if n.idempotency_key
                else None
            )
            if winner is None:
                raise
            detail = await load_task_detail(session, winner.id)
            assert detail is not None
            return [(detail, False)]
        step_rows = [
            row for i, t in zip(fresh, tasks, strict=True) for row in _step_rows(t.id, news[i], now)
        ]
        steps = list(
            (
                await session.execute(
                    insert(Step).returning(Step, sort_by_parameter_order=True), step_rows
                )
            ).scalars()
        )
        by_task: dict[int, list[Step]] = {}
        for step in steps:
            by_task.setdefault(step.task_id, []).append(step)
        edges = []
        for i, task in zip(fresh, tasks, strict=True):
            ids = {step.name: step.id for step in by_task[task.id]}
            new = news[i]
            edges += [
                {"task_id": task.id, "parent_id": ids[parent], "child_id": ids[s.name]}
                for s in new.steps
                for parent in s.depends_on
            ]
            journal.transition(
                task_id=task.id, from_state=None, to_state=TaskState.PENDING, event=TaskEvent.CREATE
            )
            created[i] = TaskDetail(
                task=task,
                steps=by_task[task.id],
                parents={ids[s.name]: list(s.depends_on) for s in new.steps if s.depends_on},
                transitions=[Transition(**journal.transitions[-1])],
            )
        if edges:
            await session.execute(insert(StepEdge), edges)

    out: list[tuple[TaskDetail, bool]] = []
    for i, n in enumerate(news):
        if i in created:
            out.append((created[i], True))
            continue
        key = (n.namespace, n.idempotency_key or "")
        if key in existing:
            detail = await load_task_detail(session, existing[key].id)
            assert detail is not None
            out.append((detail, False))
        else:  # the same key earlier in this batch
            out.append((created[first_of[key]], False))
    return out


async def load_task(
    session: AsyncSession, task_id: int, *, for_update: bool = False
) -> Task | None:
    query = select(Task).where(Task.id == task_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalars().first()


async def locked_task(session: AsyncSession, task_id: int) -> Task:
    """The task, row-locked for a change (PostgreSQL; SQLite writers run alone); NOT_FOUND."""
    task = await load_task(session, task_id, for_update=True)
    if task is None:
        raise errors.NotFound("task", str(task_id), reason="TASK_NOT_FOUND")
    return task


async def load_task_detail(session: AsyncSession, task_id: int) -> TaskDetail | None:
    """The task with steps, dependencies, attempts and transitions in four queries."""
    task = await load_task(session, task_id)
    if task is None:
        return None
    detail = TaskDetail(task=task)
    detail.steps = list(
        (await session.execute(select(Step).where(Step.task_id == task_id).order_by(Step.position)))
        .scalars()
        .all()
    )
    names = {s.id: s.name for s in detail.steps}
    edges = await session.execute(
        select(StepEdge.parent_id, StepEdge.child_id).where(StepEdge.task_id == task_id)
    )
    for parent_id, child_id in edges.all():
        detail.parents.setdefault(child_id, []).append(names[parent_id])
    attempts = await session.execute(
        select(StepAttempt)
        .where(StepAttempt.task_id == task_id)
        .order_by(StepAttempt.step_id, StepAttempt.attempt, StepAttempt.id)
    )
    for attempt in attempts.scalars():
        detail.attempts.setdefault(attempt.step_id, []).append(attempt)
    detail.transitions = list(
        (
            await session.execute(
                select(Transition).where(Transition.task_id == task_id).order_by(Transition.id)
            )
        )
        .scalars()
        .all()
    )
    return detail


async def list_tasks(
    session: AsyncSession,
    *,
    namespace: str,
    state: str,
    template_name: str,
    limit: int,
    before_id: int | None,
) -> list[Task]:
    """Newest first, keyset-paginated on the id."""
    query = select(Task)
    if namespace:
        query = query.where(Task.namespace == namespace)
    if state:
        query = query.where(Task.state == state)
    if template_name:
        query = query.where(Task.template_name == template_name)
    if before_id is not None:
        query = query.where(Task.id < before_id)
    query = query.order_by(Task.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars().all())


async def cancel_steps(
    session: AsyncSession,
    journal: Journal,
    task: Task,
    *,
    actor: str,
    reason: str | None,
    to_state: StepState = StepState.CANCELLED,
) -> list[str]:
    """Moves every cancellable step of the task to CANCELLED; returns the leases to revoke."""
    sources = [s.value for s in allowed_step_sources(to_state, StepEvent.CANCEL)]
    rows = (
        await session.execute(
            select(Step.id, Step.name, Step.state, Step.lease_id).where(
                Step.task_id == task.id, Step.state.in_(sources)
            )
        )
    ).all()
    if not rows:
        return []
    await session.execute(
        update(Step)
        .where(Step.id.in_([r.id for r in rows]), Step.state.in_(sources))
        .values(
            state=to_state,
            lease_id=None,
            lease_expires_at=None,
            worker_id=None,
            end_time=journal.now,
            update_time=journal.now,
        )
        .execution_options(synchronize_session=False)
    )
    leases: list[str] = []
    for step_id, name, from_state, lease_id in rows:
        if lease_id:
            leases.append(lease_id)
        journal.transition(
            task_id=task.id,
            step_id=step_id,
            from_state=from_state,
            to_state=to_state,
            event=StepEvent.CANCEL,
            actor=actor,
            reason=reason,
        )
        journal.event(
            f"step.{to_state}",
            task_id=task.id,
            namespace=task.namespace,
            correlation_id=task.correlation_id,
            step_name=name,
            metadata={"actor": actor, "reason": reason or ""},
        )
    return leases


async def close_task(
    session: AsyncSession,
    journal: Journal,
    task: Task,
    to_state: TaskState,
    *,
    event: str,
    event_name: str,
    actor: str,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> list[str]:
    """Ends a task that still has work (cancel, resolve by hand, deadline): its cancellable steps
    are cancelled and the task moves to ``to_state`` (compare-and-set on its current state).
    Returns the leases whose workers must be told to stop."""
    check_task_transition(task.state, to_state, event)
    leases = await cancel_steps(session, journal, task, actor=actor, reason=reason or None)
    await session.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == task.state)
        .values(
            state=to_state,
            in_flight=0,
            blocked=False,
            end_time=journal.now,
            update_time=journal.now,
        )
        .execution_options(synchronize_session=False)
    )
    journal.transition(
        task_id=task.id,
        from_state=task.state,
        to_state=to_state,
        event=event,
        actor=actor,
        reason=reason or None,
    )
    journal.event(
        event_name,
        task_id=task.id,
        namespace=task.namespace,
        correlation_id=task.correlation_id,
        metadata={"actor": actor, "reason": reason, **(metadata or {})},
    )
    task.state = to_state
    return leases


def overdue_query(now: datetime, limit: int) -> Any:
    return (
        select(Task.id)
        .where(
            Task.deadline.is_not(None),
            Task.deadline < now,
            Task.state.in_(_UNFINISHED_TASK_STATES),
        )
        .limit(limit)
    )


async def has_overdue_tasks(session: AsyncSession, now: datetime) -> bool:
    return (await session.execute(overdue_query(now, 1))).first() is not None


async def fail_overdue_tasks(
    session: AsyncSession, journal: Journal, limit: int = 100
) -> list[str]:
    """Tasks past their deadline: remaining steps cancelled, task FAILED; returns leases."""
    now = journal.now
    overdue = (
        (
            await session.execute(
                select(Task).where(Task.id.in_(overdue_query(now, limit).scalar_subquery()))
            )
        )
        .scalars()
        .all()
    )
    leases: list[str] = []
    for task in overdue:
        leases += await close_task(
            session,
            journal,
            task,
            TaskState.FAILED,
            event=TaskEvent.DEADLINE_EXCEEDED,
            event_name="task.failed",
            actor="system",
            reason="task deadline exceeded",
            metadata={"reason": "deadline_exceeded", "total_steps": task.total_steps},
        )
    return leases
