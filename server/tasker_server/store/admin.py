"""Operator actions on steps and tasks: retry, resolve or complete by hand, resolve a task.

Each action is a compare-and-set transition from the one table (``domain.states``), recorded with
the operator's actor and reason, in one transaction with its events. Satisfying a step by hand
goes through the same dependency release and task completion as a worker's result
(``outcomes.release_children`` / ``outcomes.update_tasks``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tasker_server.domain import errors
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    StepState,
    TaskState,
    check_step_transition,
    check_task_transition,
)

from .journal import Journal
from .models import Step, Task, Template
from .outcomes import BatchResult, TaskDelta, release_children, update_tasks
from .tasks import close_task, locked_task

__all__ = ["complete_or_resolve_step", "load_step", "resolve_task", "retry_step"]

_OPEN_TASK_STATES = {TaskState.PENDING, TaskState.IN_PROGRESS, TaskState.FAILED}


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


def _require_open_task(task: Task, action: str) -> None:
    if task.state not in _OPEN_TASK_STATES:
        raise errors.FailedPrecondition(
            f"cannot {action}: task {task.id} is {task.state}",
            current_state=task.state,
            reason="TASK_CLOSED",
        )


async def _refresh_blocked(session: AsyncSession, task_id: int) -> None:
    blocked = exists().where(Step.task_id == task_id, Step.state == StepState.BLOCKED)
    await session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(blocked=select(blocked).scalar_subquery())
        .execution_options(synchronize_session=False)
    )


async def _reopen_failed_task(
    session: AsyncSession, journal: Journal, task: Task, actor: str, reason: str
) -> None:
    if task.state != TaskState.FAILED:
        return
    check_task_transition(task.state, TaskState.IN_PROGRESS)
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
        event="resume",
        actor=actor,
        reason=reason or None,
    )
    task.state = TaskState.IN_PROGRESS


async def retry_step(
    session: AsyncSession, journal: Journal, task_id: int, step_name: str, actor: str, reason: str
) -> Step:
    task, step = await load_step(session, task_id, step_name)
    _require_open_task(task, "retry a step")
    if step.state not in (StepState.FAILED, StepState.BLOCKED):
        raise errors.FailedPrecondition(
            f"only a failed or blocked step can be retried; step {step_name} is {step.state}",
            current_state=step.state,
            reason="ILLEGAL_STEP_TRANSITION",
        )
    check_step_transition(step.state, StepState.RETRYING)
    await _reopen_failed_task(session, journal, task, actor, reason)
    values: dict[str, Any] = {
        "state": StepState.RETRYING,
        "ready_at": journal.now,
        # A fresh attempt budget: the operator fixed what made it fail.
        "max_attempts": step.attempts + step.retry.get("max_attempts", step.max_attempts),
        "end_time": None,
        "update_time": journal.now,
    }
    if step.is_fallback:
        # The fallback replaced the primary handler on the row and failed too: the operator's
        # retry is of the step, so the primary runs again, with its fallback behind it.
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
        from_state=step.state,
        to_state=StepState.RETRYING,
        event="admin_retry",
        actor=actor,
        reason=reason or None,
    )
    journal.event(
        "step.retrying",
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
    verb = "complete" if to_state == StepState.COMPLETE else "resolve"
    _require_open_task(task, f"{verb} a step")
    allowed = {
        StepState.PENDING,
        StepState.ENQUEUED,
        StepState.IN_PROGRESS,
        StepState.RETRYING,
        StepState.FAILED,
        StepState.BLOCKED,
    }
    if step.state not in allowed:
        raise errors.FailedPrecondition(
            f"cannot {verb} step {step_name}: it is {step.state}",
            current_state=step.state,
            reason="ILLEGAL_STEP_TRANSITION",
        )
    was_active = step.state in {s.value for s in ACTIVE_STEP_STATES}
    lease = step.lease_id if was_active else None
    await _reopen_failed_task(session, journal, task, actor, reason)
    await session.execute(
        update(Step)
        .where(Step.id == step.id, Step.state == step.state)
        .values(
            state=to_state,
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
        from_state=step.state,
        to_state=to_state,
        event="admin_complete" if to_state == StepState.COMPLETE else "resolve_manually",
        actor=actor,
        reason=reason or None,
    )
    journal.event(
        "step.completed" if to_state == StepState.COMPLETE else "step.resolved_manually",
        task_id=task.id,
        namespace=task.namespace,
        correlation_id=task.correlation_id,
        step_name=step.name,
        metadata={"actor": actor, "reason": reason, "manual": True},
    )
    await release_children(session, journal, [step.id], {task.id: task})
    out = BatchResult()
    delta = TaskDelta(in_flight=-1 if was_active else 0, satisfied=1)
    await update_tasks(session, journal, {task.id: task}, {task.id: delta}, out)
    await _refresh_blocked(session, task.id)
    step.state = to_state
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
        event="resolve_manually",
        event_name="task.resolved_manually",
        actor=actor,
        reason=reason,
    )
    return task, leases
