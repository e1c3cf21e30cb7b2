"""Applying lease outcomes in batches: results, failures, releases and expiries.

One call handles many leases in one transaction with a fixed number of statements: fence the
leases, update the steps (bulk by primary key), record attempts, decrement the children's
``pending_parents`` (one UPDATE … FROM over the grouped edges), update the tasks' counters, finish
completed or failed tasks, and write transitions and events. Work is proportional to the leases and
their direct dependents, never to the size of a DAG.

Fencing: an outcome is applied only if the step still holds that lease and is ENQUEUED or
IN_PROGRESS, and a worker's report only if it comes from the worker the lease was issued to
(LEASE_NOT_HELD otherwise: a lease id is not a bearer token). The lease id stays on the step after
the outcome, so a second delivery of the same outcome is recognised as a duplicate (accepted, not
recorded again) and a different one as a conflict (OUTCOME_CONFLICT); any other lease is stale.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain.fencing import NOT_HELD, held_by
from tasker_server.domain.outcomes import (
    Failure,
    OutcomeKind,
    StepChange,
    StepSnapshot,
    TaskEffect,
    decide_outcome,
    decide_task,
    error_class,
)
from tasker_server.domain.retry import BackoffFactors, ErrorClass, RetryPolicy
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    StepEvent,
    StepState,
    TaskEvent,
    TaskState,
)

from .journal import Journal
from .models import Step, StepAttempt, StepEdge, Task, Worker
from .types import dialect_name

__all__ = ["BatchResult", "Outcome", "OutcomeKind", "Verdict", "apply_outcomes"]

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE_STEP_STATES]
# Failures that speak about the downstream's health feed its circuit breaker; business-logic and
# permanent errors are about the request, not the dependency.
_BREAKER_FAILURES = {ErrorClass.TRANSIENT, ErrorClass.DELAYED}
_MAX_MESSAGE = 16 * 1024
_MAX_BACKTRACE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    lease_id: str
    kind: OutcomeKind
    worker_id: str = ""
    result: dict[str, Any] | None = None
    error_class: str = ErrorClass.DELAYED
    error_type: str = ""
    message: str = ""
    backtrace: str = ""
    retry_after: float | None = None
    error_metadata: dict[str, Any] = field(default_factory=dict)
    execution_ms: float | None = None
    # The lease was lost, not failed: its worker died, its stream broke, its server restarted or
    # the worker came back without it. That says nothing about the handler or the dependency it
    # calls, so it feeds neither the circuit breaker nor the handler's success rate.
    lost: bool = False
    # The authenticated identity of the reporter (None with authentication off): it must be the
    # identity that opened the stream of the worker holding the lease.
    identity: str | None = None
    # For a lease lost with its stream: when that stream connected. If the worker has connected
    # again since (to any replica), the lease went with it (``reconcile``) and stays.
    stream_since: datetime | None = None

    @property
    def reported(self) -> bool:
        """A worker's own report (a result or a classified failure), not the server's decision."""
        return self.kind in (OutcomeKind.SUCCESS, OutcomeKind.FAILURE)


@dataclass(frozen=True, slots=True)
class Verdict:
    lease_id: str
    accepted: bool
    reason: str = ""
    message: str = ""


@dataclass(slots=True)
class BatchResult:
    verdicts: list[Verdict] = field(default_factory=list)
    # Leases of other steps that workers must stop (e.g. nothing yet; reserved for task failure).
    cancellations: list[str] = field(default_factory=list)
    # True when something may have become dispatchable (steps ready, tasks finished, requeues).
    wake: bool = False
    finished_tasks: list[int] = field(default_factory=list)
    # (circuit breaker key, success, lease) per outcome that says something about the downstream.
    breaker_feed: list[tuple[str, bool, str]] = field(default_factory=list)
    # (handler, success) per attempt: the handlers' recent success rates.
    handler_feed: list[tuple[str, bool]] = field(default_factory=list)


@dataclass(slots=True)
class TaskDelta:
    in_flight: int = 0
    satisfied: int = 0
    failed_step: str | None = None
    failed_class: str = ""
    blocked: bool = False


FactorsFor = Callable[[Step, Task], BackoffFactors]


async def apply_outcomes(
    session: AsyncSession,
    journal: Journal,
    outcomes: list[Outcome],
    rng: random.Random,
    factors: FactorsFor | None = None,
) -> BatchResult:
    """Applies a batch of outcomes; ``factors`` supplies the backoff context of a step (system
    load, breaker state, handler success rate — known to the engine, not to the store)."""
    out = BatchResult()
    now = journal.now
    leases = list({o.lease_id for o in outcomes})
    # Steps and their tasks in one locked read (fencing happens against these rows).
    query = (
        select(Step, Task, Worker.identity, Worker.connect_time)
        .join(Task, Task.id == Step.task_id)
        .outerjoin(Worker, Worker.id == Step.worker_id)
        .where(Step.lease_id.in_(leases))
    )
    if dialect_name(session) == "postgresql":
        query = query.with_for_update(of=[Step.__table__, Task.__table__])
    rows: dict[str | None, Step] = {}
    tasks: dict[int, Task] = {}
    holders: dict[str | None, str | None] = {}  # lease -> identity of the worker holding it
    connected: dict[str | None, datetime | None] = {}  # lease -> its worker's latest connect
    for locked_step, locked_task, identity, connect_time in (await session.execute(query)).all():
        rows[locked_step.lease_id] = locked_step
        tasks[locked_task.id] = locked_task
        holders[locked_step.lease_id] = identity
        connected[locked_step.lease_id] = connect_time

    step_updates: list[dict[str, Any]] = []
    rows_by_id = {step.id: step for step in rows.values()}
    attempts: list[dict[str, Any]] = []
    satisfied_ids: list[int] = []
    deltas: dict[int, TaskDelta] = {}
    seen: dict[str, Outcome] = {}  # the first outcome of each lease in this batch

    for o in outcomes:
        step = rows.get(o.lease_id)
        if step is None:
            out.verdicts.append(
                Verdict(o.lease_id, False, "LEASE_STALE", "lease unknown, expired or cancelled")
            )
            continue
        if o.reported and not held_by(
            step.worker_id, holders[o.lease_id], o.worker_id, o.identity
        ):
            out.verdicts.append(Verdict(o.lease_id, False, "LEASE_NOT_HELD", NOT_HELD))
            continue
        reconnected = connected[o.lease_id]
        if o.stream_since is not None and reconnected is not None and reconnected > o.stream_since:
            # Lost with a stream the worker has since replaced (on another replica): not lost.
            out.verdicts.append(Verdict(o.lease_id, True, "SUPERSEDED", "the worker reconnected"))
            continue
        if o.lease_id in seen or step.state not in _ACTIVE:
            out.verdicts.append(_repeated(step, o, seen.get(o.lease_id)))
            continue
        seen[o.lease_id] = o
        task = tasks[step.task_id]
        change = decide_outcome(
            _snapshot(step),
            o.kind,
            Failure(error_class(o.error_class), o.retry_after),
            now,
            partial(factors, step, task) if factors else partial(_no_factors, task),
            rng,
        )
        _apply(change, step, task, o, journal, out, deltas.setdefault(task.id, TaskDelta()))
        step_updates.append(_step_row(change, step, o, now))
        if change.attempt is not None:
            attempts.append(_attempt(step, change, o, now))
        if change.satisfied:
            satisfied_ids.append(step.id)
        out.verdicts.append(Verdict(o.lease_id, True))

    if step_updates:
        await session.execute(
            _UPDATE_STEP, [_full_row(rows_by_id[r["id"]], r) for r in step_updates]
        )
    if attempts:
        await session.execute(insert(StepAttempt), attempts)
    if satisfied_ids:
        await release_children(session, journal, satisfied_ids, tasks)
    await update_tasks(session, journal, tasks, deltas, out)
    return out


def _repeated(step: Step, o: Outcome, first: Outcome | None) -> Verdict:
    """The verdict on an outcome for a lease whose outcome is already recorded (``first``: in this
    very batch): the same one again (a worker resending after a lost acknowledgement) is an
    idempotent DUPLICATE; a different one is refused, since only the first was recorded."""
    if not o.reported:
        return Verdict(o.lease_id, True, "DUPLICATE", "outcome already recorded")
    if first is not None and not first.reported:
        return Verdict(o.lease_id, False, "LEASE_STALE", "the lease was taken back")
    if first is not None:
        same = first.kind is o.kind and (
            first.result == o.result
            if o.kind is OutcomeKind.SUCCESS
            else (first.error_type, first.message) == (o.error_type, o.message)
        )
    elif o.kind is OutcomeKind.SUCCESS:
        same = step.state == StepState.COMPLETE and (o.result or {}) == (step.result or {})
    else:
        recorded = step.last_error or {}
        same = (
            step.state != StepState.COMPLETE
            and recorded.get("error_type") == o.error_type[:256]
            and recorded.get("message") == o.message[:_MAX_MESSAGE]
        )
    if same:
        return Verdict(o.lease_id, True, "DUPLICATE", "outcome already recorded")
    return Verdict(
        o.lease_id,
        False,
        "OUTCOME_CONFLICT",
        "a different outcome was already recorded for this lease",
    )


def _no_factors(task: Task) -> BackoffFactors:
    return BackoffFactors(priority=task.priority)


def _snapshot(step: Step) -> StepSnapshot:
    return StepSnapshot(
        state=StepState(step.state),
        attempts=step.attempts,
        policy=RetryPolicy(**{**step.retry, "max_attempts": step.max_attempts}),
        optional=step.optional,
        fallback_handler=step.fallback_handler,
        is_fallback=step.is_fallback,
    )


def _error(change: StepChange, o: Outcome) -> dict[str, Any]:
    """The error recorded on the step and its attempt (bounded: reports are untrusted input)."""
    expired = change.event is StepEvent.LEASE_EXPIRED
    return {
        "error_class": (change.error_class or ErrorClass.DELAYED).value,
        "error_type": (o.error_type or "LeaseExpired" if expired else o.error_type)[:256],
        "message": o.message[:_MAX_MESSAGE],
        "backtrace": o.backtrace[:_MAX_BACKTRACE],
        "retry_after": o.retry_after,
        "metadata": o.error_metadata,
    }


def _step_row(change: StepChange, step: Step, o: Outcome, now: datetime) -> dict[str, Any]:
    """The step's columns after ``change``."""
    row: dict[str, Any] = {
        "id": step.id,
        "state": change.to_state,
        "update_time": now,
        "worker_id": None,
        "lease_expires_at": None,
    }
    if not change.keeps_lease:
        # A late report for this lease is then stale, not a duplicate.
        row["lease_id"] = None
    if change.attempt is not None:
        row["attempts"] = change.attempt
        row["start_time"] = step.start_time or now
    if change.ends:
        row["end_time"] = now
    if change.to_state is StepState.COMPLETE:
        row["result"] = o.result or {}
    elif change.error_class is not None:
        row["last_error"] = _error(change, o)
    if change.ready_at is not None:
        row["ready_at"] = change.ready_at
    if change.fallback_handler is not None:
        row.update(handler=change.fallback_handler, is_fallback=True)
    if change.max_attempts is not None:
        row["max_attempts"] = change.max_attempts
    return row


def _apply(
    change: StepChange,
    step: Step,
    task: Task,
    o: Outcome,
    journal: Journal,
    out: BatchResult,
    delta: TaskDelta,
) -> None:
    """Records ``change``: its transition and event, the task's counters and the feeds."""
    out.wake = True
    delta.in_flight -= 1
    actor = f"worker:{o.worker_id}" if o.worker_id else "system"
    transition: dict[str, Any] = {
        "task_id": task.id,
        "step_id": step.id,
        "from_state": change.from_state,
        "to_state": change.to_state,
        "event": change.event,
        "actor": actor,
    }
    if change.satisfied:
        delta.satisfied += 1
    if change.task_effect is TaskEffect.BLOCK:
        delta.blocked = True
    if change.event is StepEvent.RELEASE:
        journal.transition(**transition, reason=o.message or "assignment not acknowledged")
        return
    base_event: dict[str, Any] = {
        "task_id": task.id,
        "namespace": task.namespace,
        "correlation_id": task.correlation_id,
        "step_name": step.name,
    }
    if change.from_state is StepState.ENQUEUED and o.reported:
        # A result implies the acknowledgement (workers acknowledge lazily: a short step sends
        # none). Its attempt starts and ends in this batch, and watchers still see it start.
        journal.event(
            "step.started",
            **base_event,
            metadata={"attempt": change.attempt, "worker_id": o.worker_id},
        )
    if change.error_class is None:  # a success
        out.breaker_feed.append((step.breaker_key, True, o.lease_id))
        out.handler_feed.append((step.handler, True))
        journal.transition(**transition)
        journal.event(
            "step.completed",
            **base_event,
            metadata={"attempt": change.attempt, "execution_time_ms": o.execution_ms or 0},
        )
        return
    error_type = _error(change, o)["error_type"]
    if change.clamped_hint:
        log.warning(
            "retry_after hint clamped into [0, max_delay]",
            extra={
                "lease_id": o.lease_id,
                "step": step.name,
                "hint": o.retry_after,
                "max_delay": _snapshot(step).policy.max_delay_seconds,
            },
        )
    if not o.lost:
        if change.error_class in _BREAKER_FAILURES:
            out.breaker_feed.append((step.breaker_key, False, o.lease_id))
        out.handler_feed.append((step.handler, False))
    if change.task_effect is TaskEffect.FAIL:
        delta.failed_step = step.name
        delta.failed_class = change.error_class.value
    meta: dict[str, Any] = {
        "attempt": change.attempt,
        "error_class": change.error_class.value,
        "error_type": error_type,
    }
    if change.fallback_handler is not None:
        meta["fallback_handler"] = change.fallback_handler
    journal.transition(**transition, reason=o.message[:1000] or None, metadata=meta)
    if change.delay_seconds is not None:
        meta = {**meta, "delay_ms": round(change.delay_seconds * 1000)}
    assert change.event_name is not None
    journal.event(change.event_name, **base_event, metadata=meta)


def _attempt(step: Step, change: StepChange, o: Outcome, now: datetime) -> dict[str, Any]:
    error = _error(change, o) if change.error_class is not None else {}
    if change.to_state is StepState.COMPLETE:
        outcome = "complete"
    else:
        outcome = "lease_expired" if change.event is StepEvent.LEASE_EXPIRED else "failed"
    return {
        "step_id": step.id,
        "task_id": step.task_id,
        "attempt": change.attempt,
        "worker_id": o.worker_id or step.worker_id,
        "lease_id": o.lease_id,
        "outcome": outcome,
        "error_class": error.get("error_class"),
        "error_type": error.get("error_type"),
        "message": error.get("message"),
        "backtrace": error.get("backtrace"),
        "metadata_": error.get("metadata") or {},
        # An in-progress step's row last changed when this attempt was acknowledged.
        "start_time": step.update_time if step.state == StepState.IN_PROGRESS else now,
        "end_time": now,
    }


# Every column an outcome may change. Rows are completed from the locked step's current values so
# that one Core executemany writes them all (cheaper than the ORM's bulk update on this hot path).
_STEP_FIELDS = (
    "state",
    "result",
    "last_error",
    "ready_at",
    "end_time",
    "start_time",
    "lease_id",
    "lease_expires_at",
    "worker_id",
    "attempts",
    "handler",
    "is_fallback",
    "max_attempts",
    "update_time",
)
_steps = cast(Table, Step.__table__)
_UPDATE_STEP = (
    update(_steps)
    .where(_steps.c.id == bindparam("b_id"))
    .values(**{name: bindparam(f"b_{name}") for name in _STEP_FIELDS})
)


def _full_row(step: Step, changes: dict[str, Any]) -> dict[str, Any]:
    row = {f"b_{name}": changes.get(name, getattr(step, name)) for name in _STEP_FIELDS}
    row["b_id"] = step.id
    return row


async def release_children(
    session: AsyncSession, journal: Journal, satisfied_ids: list[int], tasks: dict[int, Task]
) -> None:
    """Decrements ``pending_parents`` of the satisfied steps' children by the number of their
    satisfied parents in this batch; reports the ones that became ready."""
    counts = (
        select(StepEdge.child_id, func.count().label("n"))
        .where(StepEdge.parent_id.in_(satisfied_ids))
        .group_by(StepEdge.child_id)
        .subquery()
    )
    ready = (
        await session.execute(
            update(Step)
            .where(Step.id == counts.c.child_id)
            .values(pending_parents=Step.pending_parents - counts.c.n, update_time=journal.now)
            .returning(Step.task_id, Step.name, Step.pending_parents, Step.state)
            .execution_options(synchronize_session=False)
        )
    ).all()
    by_task: dict[int, list[str]] = {}
    for task_id, name, pending, state in ready:
        if pending == 0 and state == StepState.PENDING:
            by_task.setdefault(task_id, []).append(name)
    for task_id, names in by_task.items():
        task = tasks.get(task_id)
        journal.event(
            "viable_steps.discovered",
            task_id=task_id,
            namespace=task.namespace if task else None,
            correlation_id=task.correlation_id if task else None,
            metadata={"step_names": names},
        )
        for name in names:
            journal.event(
                "dependencies.resolved",
                task_id=task_id,
                namespace=task.namespace if task else None,
                correlation_id=task.correlation_id if task else None,
                step_name=name,
            )


async def update_tasks(
    session: AsyncSession,
    journal: Journal,
    tasks: dict[int, Task],
    deltas: dict[int, TaskDelta],
    out: BatchResult,
) -> None:
    now = journal.now
    completing: list[Task] = []
    rows: list[dict[str, Any]] = []
    for task_id, delta in deltas.items():
        task = tasks[task_id]
        satisfied = task.satisfied_steps + delta.satisfied
        row: dict[str, Any] = {
            "id": task_id,
            "in_flight": max(0, task.in_flight + delta.in_flight),
            "satisfied_steps": satisfied,
            "update_time": now,
        }
        if delta.blocked:
            row["blocked"] = True
        decided = decide_task(
            TaskState(task.state), satisfied, task.total_steps, failed=delta.failed_step is not None
        )
        if decided is TaskState.FAILED:
            row.update(state=TaskState.FAILED, end_time=now)
            out.finished_tasks.append(task_id)
            journal.transition(
                task_id=task_id,
                from_state=task.state,
                to_state=TaskState.FAILED,
                event=TaskEvent.STEP_FAILED,
                reason=f"step {delta.failed_step} failed",
            )
            journal.event(
                "task.failed",
                task_id=task_id,
                namespace=task.namespace,
                correlation_id=task.correlation_id,
                metadata={
                    "failed_step": delta.failed_step,
                    "error_class": delta.failed_class,
                    "total_steps": task.total_steps,
                },
            )
        elif decided is TaskState.COMPLETE:
            completing.append(task)
            row.update(state=TaskState.COMPLETE, end_time=now)
            out.finished_tasks.append(task_id)
        rows.append(row)
    if completing:
        results = await _leaf_results(session, [t.id for t in completing])
        for task in completing:
            for row in rows:
                if row["id"] == task.id:
                    row["result"] = results.get(task.id, {})
            elapsed = (now - (task.start_time or task.create_time)).total_seconds() * 1000
            journal.transition(
                task_id=task.id,
                from_state=task.state,
                to_state=TaskState.COMPLETE,
                event=TaskEvent.ALL_STEPS_SATISFIED,
            )
            journal.event(
                "task.completed",
                task_id=task.id,
                namespace=task.namespace,
                correlation_id=task.correlation_id,
                metadata={
                    "total_steps": task.total_steps,
                    "execution_time_ms": round(elapsed),
                    "success_rate": 1.0,
                },
            )
    # Group by key set: SQLAlchemy's bulk UPDATE batches rows with identical keys together.
    rows.sort(key=lambda r: tuple(sorted(r)))
    if rows:
        await session.execute(update(Task), rows)


async def _leaf_results(session: AsyncSession, task_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Results of the steps no other step depends on, by step name."""
    has_child = select(StepEdge.parent_id).where(StepEdge.task_id.in_(task_ids))
    rows = await session.execute(
        select(Step.task_id, Step.name, Step.result).where(
            Step.task_id.in_(task_ids), Step.id.not_in(has_child)
        )
    )
    out: dict[int, dict[str, Any]] = {}
    for task_id, name, result in rows.all():
        out.setdefault(task_id, {})[name] = result
    return out
