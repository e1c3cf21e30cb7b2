"""Operator actions on steps and tasks: retry, resolve or complete by hand, resolve a task.

What each action may do is decided in ``domain.outcomes`` (``decide_admin_retry`` /
``decide_admin_settle``: an edge of the one table, or FAILED_PRECONDITION naming the current
state); here it is applied as a compare-and-set, recorded with the operator's actor and reason,
in one transaction with its events. Satisfying a step by hand goes through the same dependency
release and task completion as a worker's result (``outcomes.release_children`` /
``outcomes.update_tasks``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain import errors
from tasker_server.domain.outcomes import (
    AdminChange,
    StepSnapshot,
    decide_admin_retry,
    decide_admin_settle,
)
from tasker_server.domain.states import StepState, TaskEvent, TaskState

from .journal import Journal
from .models import Step, Task, Template
from .outcomes import BatchResult, TaskDelta, release_children, update_tasks
from .tasks import close_task, locked_task

__all__ = ["complete_or_resolve_step", "load_step", "resolve_task", "retry_step"]


async def load_step(session: AsyncSession, task_id: int, step_name: str) -> tuple[Task, Step]:
    """The task and its step, locked for the change; NOT_FOUND naming what is missing."""
    task = await locked_task(session, task_id)
    step = (
        (await session.execute(select(Step).where(Step.task_id == task_id, Step.name == step_name)))
        .scalars()
        .first()
    )
    if step is None:
        raise errors.NotFound("step", f"{task_id}/{step_name}", reason="STEP_NOT_FOUND")
    return task, step


async def _refresh_blocked(session: AsyncSession, task_id: int) -> None:
    blocked = exists().where(Step.task_id == task_id, Step.state == StepState.BLOCKED)
    await session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(blocked=select(blocked).scalar_subquery())
        .execution_options(synchronize_session=False)
    )


async def _reopen_failed_task(
    session: AsyncSession,
    journal: Journal,
    task: Task,
    change: AdminChange,
    actor: str,
    reason: str,
) -> None:
    if not change.reopen_task:
        return
    await session.execute(
        update(Task)
        .where(Task.id == task.id, Task.state == TaskState.FAILED)
        .values(state=TaskState.IN_PROGRESS, end_time=None, update_time=journal.now)
        .execution_options(synchronize_session=False)
    )
    journal.transition(
        task_id=task.id,
        from_state=TaskState.FAILED,
        to_state=TaskState.IN_PROGRESS,
        event=TaskEvent.RESUME,
        actor=actor,
        reason=reason or None,
    )
    task.state = TaskState.IN_PROGRESS


async def retry_step(
    session: AsyncSession, journal: Journal, task_id: int, step_name: str, actor: str, reason: str
) -> Step:
    task, step = await load_step(session, task_id, step_name)
    snapshot = StepSnapshot(StepState(step.state), step.attempts, is_fallback=step.is_fallback)
    change = decide_admin_retry(
        TaskState(task.state), snapshot, step.retry.get("max_attempts", step.max_attempts)
    )
    await _reopen_failed_task(session, journal, task, change, actor, reason)
    values: dict[str, Any] = {
        "state": change.to_state,
        "ready_at": journal.now,
        "max_attempts": change.max_attempts,
        "end_time": None,
        "update_time": journal.now,
    }
    if change.restore_primary:
        values.update(handler=await _primary_handler(session, task, step.name), is_fallback=False)
    await session.execute(
        update(Step)
        .where(Step.id == step.id, Step.state == step.state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    journal.transition(
        task_id=task.id,
        step_id=step.id,
        from_state=change.from_state,
        to_state=change.to_state,
        event=change.event,
        actor=actor,
        reason=reason or None,
    )
    journal.event(
        change.event_name,
        task_id=task.id,
        namespace=task.namespace,
        correlation_id=task.correlation_id,
        step_name=step.name,
        metadata={"actor": actor, "reason": reason, "manual": True, "delay_ms": 0},
    )
    await _refresh_blocked(session, task.id)
    return step


async def _primary_handler(session: AsyncSession, task: Task, step_name: str) -> str:
    """The step's own handler, from its template (environments cannot override handlers)."""
    definition = (
        await session.execute(select(Template.definition).where(Template.id == task.template_id))
    ).scalar_one()
    for spec in definition.get("step_templates", []):
        if spec.get("name") == step_name:
            return str(spec["handler_class"])
    raise errors.FailedPrecondition(
        f"step {step_name} is not in its template any more; cannot find its primary handler",
        reason="TEMPLATE_STEP_MISSING",
    )


async def complete_or_resolve_step(
    session: AsyncSession,
    journal: Journal,
    task_id: int,
    step_name: str,
    to_state: StepState,
    result: dict[str, Any],
    actor: str,
    reason: str,
) -> tuple[Step, BatchResult, str | None]:
    """COMPLETE (the work was done elsewhere) or RESOLVED_MANUALLY (waived); dependents proceed.

    Returns the step, what the change finished, and the lease to revoke if it was running.
    """
    task, step = await load_step(session, task_id, step_name)
    change = decide_admin_settle(
        TaskState(task.state), StepState(step.state), complete=to_state == StepState.COMPLETE
    )
    lease = step.lease_id if change.revoke_lease else None
    await _reopen_failed_task(session, journal, task, change, actor, reason)
    await session.execute(
        update(Step)
        .where(Step.id == step.id, Step.state == step.state)
        .values(
            state=change.to_state,
            result=result,
            lease_id=None,
            lease_expires_at=None,
            worker_id=None,
            end_time=journal.now,
            update_time=journal.now,
        )
        .execution_options(synchronize_session=False)
    )
    journal.transition(
        task_id=task.id,
        step_id=step.id,
        from_state=change.from_state,
        to_state=change.to_state,
        event=change.event,
        actor=actor,
        reason=reason or None,
    )
    journal.event(
        change.event_name,
        task_id=task.id,
        namespace=task.namespace,
        correlation_id=task.correlation_id,
        step_name=step.name,
        metadata={"actor": actor, "reason": reason, "manual": True},
    )
    await release_children(session, journal, [step.id], {task.id: task})
    out = BatchResult()
    delta = TaskDelta(in_flight=-1 if change.revoke_lease else 0, satisfied=1)
    await update_tasks(session, journal, {task.id: task}, {task.id: delta}, out)
    await _refresh_blocked(session, task.id)
    step.state = change.to_state
    step.result = result
    return step, out, lease


async def resolve_task(
    session: AsyncSession, journal: Journal, task_id: int, actor: str, reason: str
) -> tuple[Task, list[str]]:
    task = await locked_task(session, task_id)
    leases = await close_task(
        session,
        journal,
        task,
        TaskState.RESOLVED_MANUALLY,
        event=TaskEvent.RESOLVE_MANUALLY,
        event_name="task.resolved_manually",
        actor=actor,
        reason=reason,
    )
    return task, leases
