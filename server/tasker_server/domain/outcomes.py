"""What a step's outcome or an operator's action does: pure decisions, applied by the store.

``decide_outcome`` turns a lease's outcome (a worker's result or error, a lease taken back or
expired) into a ``StepChange``: the edge of the transition table to take, the columns that change
with it, the lifecycle event to emit and what it means for the task. ``decide_admin_retry`` and
``decide_admin_settle`` do the same for RetryStep and Complete/ResolveStepManually. The store
fences the lease, reads the rows these functions need, and writes what they return; it decides
nothing itself. Every change returned is an edge of ``domain.states`` (tests check it).

The order of the failure decision matters and is the product's rule: retry while attempts and
the error class allow it; then the fallback handler, once; then block (business-logic error,
waits for an operator); then skip an optional step (its dependents proceed); else fail the step
and its task.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tasker_server.domain.errors import FailedPrecondition
from tasker_server.domain.retry import BackoffFactors, ErrorClass, RetryAction, RetryPolicy, decide
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    FINAL_TASK_STATES,
    StepEvent,
    StepState,
    TaskState,
    check_step_transition,
)

__all__ = [
    "AdminChange",
    "Failure",
    "OutcomeKind",
    "StepChange",
    "StepSnapshot",
    "TaskEffect",
    "decide_admin_retry",
    "decide_admin_settle",
    "decide_outcome",
    "decide_task",
    "error_class",
]


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    # Assignment never acknowledged (or its worker vanished before starting): requeue, no attempt.
    RELEASE = "release"
    # The lease ran out (worker lost, hung past its timeout): transient failure if it had started.
    EXPIRE = "expire"


class TaskEffect(StrEnum):
    """What a step's change does to its task (applied with the task's counters)."""

    NONE = "none"
    # A required step failed: the task fails.
    FAIL = "fail"
    # A step waits for an operator: the task is flagged blocked (it keeps running otherwise).
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """The step as locked by the store: what the decisions read."""

    state: StepState
    attempts: int
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    optional: bool = False
    fallback_handler: str | None = None
    is_fallback: bool = False


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified error: the worker's report, or the server's for an expired lease."""

    error_class: ErrorClass = ErrorClass.DELAYED
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class StepChange:
    """The change one outcome makes to its step (and through ``task_effect`` to its task)."""

    from_state: StepState
    to_state: StepState
    event: StepEvent
    # The attempt this outcome ends, recorded in step_attempts; None for a release (no attempt).
    attempt: int | None
    # Lifecycle event to emit ("step.completed", "step.retrying", …); None for a release.
    event_name: str | None = None
    # The step is over (end_time is set).
    ends: bool = False
    # Its dependents may proceed (their pending_parents drop).
    satisfied: bool = False
    task_effect: TaskEffect = TaskEffect.NONE
    # The lease id stays on the row so that a repeat of this outcome is a duplicate; cleared when
    # a late report for the lease must be stale instead (a release, an expiry).
    keeps_lease: bool = True
    # The error class the decision used (None for a success or release).
    error_class: ErrorClass | None = None
    ready_at: datetime | None = None
    delay_seconds: float | None = None
    # The fallback handler replaces the step's handler, with one more attempt.
    fallback_handler: str | None = None
    max_attempts: int | None = None
    # The handler's retry_after hint was outside [0, max_delay] and was clamped.
    clamped_hint: bool = False


def error_class(raw: str) -> ErrorClass:
    """A reported error class; an unclassified or unknown one is delayed/retryable (the proto
    documents this)."""
    try:
        return ErrorClass(raw)
    except ValueError:
        return ErrorClass.DELAYED


def decide_outcome(
    step: StepSnapshot,
    kind: OutcomeKind,
    failure: Failure | None,
    now: datetime,
    factors: Callable[[], BackoffFactors],
    rng: random.Random,
) -> StepChange:
    """The change for an outcome of the lease ``step`` holds (ENQUEUED or IN_PROGRESS; fencing
    and duplicates are the store's). ``failure`` is read for FAILURE only; ``factors`` (the
    backoff context: load, breaker, handler health, deadline) only when a failure is retried."""
    if step.state not in ACTIVE_STEP_STATES:
        raise ValueError(f"an outcome needs a leased step, not a {step.state.value} one")
    started = step.state is StepState.IN_PROGRESS
    # Whether an attempt started is the database's word, not the reporter's: the engine may not
    # have seen an acknowledgement that was recorded, or may have seen one not yet recorded.
    if kind is OutcomeKind.EXPIRE and not started:
        kind = OutcomeKind.RELEASE
    elif kind is OutcomeKind.RELEASE and started:
        kind = OutcomeKind.EXPIRE
    if kind is OutcomeKind.RELEASE:
        # An earlier attempt failed: back to its backoff state (already elapsed), else pending.
        to = StepState.RETRYING if step.attempts > 0 else StepState.PENDING
        return _checked(StepChange(step.state, to, StepEvent.RELEASE, None, keeps_lease=False))

    # A result implies the acknowledgement: the attempt is counted here if the ack was not.
    attempt = step.attempts if started else step.attempts + 1
    if kind is OutcomeKind.SUCCESS:
        return _checked(
            StepChange(
                step.state,
                StepState.COMPLETE,
                StepEvent.RESULT,
                attempt,
                "step.completed",
                ends=True,
                satisfied=True,
            )
        )

    expired = kind is OutcomeKind.EXPIRE
    cls = ErrorClass.TRANSIENT if expired else (failure or Failure()).error_class
    hint = None if expired else (failure or Failure()).retry_after
    decision = decide(step.policy, cls, attempt, hint, factors(), rng)
    event = StepEvent.LEASE_EXPIRED if expired else StepEvent.FAILURE

    def failed(to: StepState, **changes: Any) -> StepChange:
        return StepChange(
            step.state,
            to,
            event,
            attempt,
            error_class=cls,
            # A timed-out attempt's late result must be rejected (fencing), not taken as a copy.
            keeps_lease=not expired,
            clamped_hint=decision.clamped_hint,
            **changes,
        )

    if decision.action is RetryAction.RETRY:
        change = failed(
            StepState.RETRYING,
            event_name="step.retrying",
            ready_at=now + timedelta(seconds=decision.delay_seconds),
            delay_seconds=decision.delay_seconds,
        )
    elif step.fallback_handler and not step.is_fallback:
        # Out of retries (or never retryable): run the fallback handler once before giving up.
        change = failed(
            StepState.RETRYING,
            event_name="step.retrying",
            ready_at=now,
            delay_seconds=0.0,
            fallback_handler=step.fallback_handler,
            max_attempts=attempt + 1,
        )
    elif decision.action is RetryAction.BLOCK:
        change = failed(StepState.BLOCKED, event_name="step.blocked", task_effect=TaskEffect.BLOCK)
    elif step.optional:
        change = failed(StepState.SKIPPED, event_name="step.skipped", ends=True, satisfied=True)
    else:
        change = failed(
            StepState.FAILED, event_name="step.failed", ends=True, task_effect=TaskEffect.FAIL
        )
    return _checked(change)


def decide_task(
    state: TaskState, satisfied_steps: int, total_steps: int, *, failed: bool
) -> TaskState | None:
    """Where a running task goes after its steps changed (``failed``: a required step failed):
    FAILED (step_failed), COMPLETE once every step is satisfied (all_steps_satisfied), or
    nowhere (None). Only a running task moves: a failed one waits for an operator, and the steps
    of a closed one no longer count."""
    if state is not TaskState.IN_PROGRESS:
        return None
    if failed:
        return TaskState.FAILED
    if satisfied_steps >= total_steps:
        return TaskState.COMPLETE
    return None


def _checked(change: StepChange) -> StepChange:
    # The table is the rule; a decision outside it is a bug here, caught by the unit tests.
    check_step_transition(change.from_state, change.to_state, change.event)
    return change


# -- operator actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminChange:
    """The change an operator's action makes to a step (and its task)."""

    from_state: StepState
    to_state: StepState
    event: StepEvent
    event_name: str
    # The task had failed: it resumes (FAILED -> IN_PROGRESS) before the step changes.
    reopen_task: bool = False
    # The step held a lease: it is revoked (the worker is told to stop) and in_flight drops.
    revoke_lease: bool = False
    satisfied: bool = False
    # RetryStep: the new attempt budget, and whether the primary handler replaces a fallback.
    max_attempts: int | None = None
    restore_primary: bool = False


def _require_open_task(task_state: TaskState, action: str) -> None:
    if task_state in FINAL_TASK_STATES:
        raise FailedPrecondition(
            f"cannot {action}: the task is {task_state.value}",
            current_state=task_state.value,
            reason="TASK_CLOSED",
        )


def _require_edge(step: StepState, to: StepState, event: StepEvent, action: str) -> None:
    try:
        check_step_transition(step, to, event)
    except FailedPrecondition:
        raise FailedPrecondition(
            f"cannot {action}: the step is {step.value}",
            current_state=step.value,
            reason="ILLEGAL_STEP_TRANSITION",
            metadata={"target_state": to.value},
        ) from None


def decide_admin_retry(
    task_state: TaskState, step: StepSnapshot, configured_max_attempts: int
) -> AdminChange:
    """RetryStep on a failed or blocked step: a fresh budget of ``configured_max_attempts`` (the
    template's), since the operator fixed what made it fail; FAILED_PRECONDITION otherwise."""
    _require_open_task(task_state, "retry a step")
    _require_edge(step.state, StepState.RETRYING, StepEvent.ADMIN_RETRY, "retry the step")
    return AdminChange(
        step.state,
        StepState.RETRYING,
        StepEvent.ADMIN_RETRY,
        "step.retrying",
        reopen_task=task_state is TaskState.FAILED,
        max_attempts=step.attempts + configured_max_attempts,
        # The fallback replaced the primary handler on the row and failed too: the operator's
        # retry is of the step, so the primary runs again, with its fallback behind it.
        restore_primary=step.is_fallback,
    )


def decide_admin_settle(task_state: TaskState, step: StepState, *, complete: bool) -> AdminChange:
    """CompleteStepManually (``complete``: the work was done elsewhere) or ResolveStepManually
    (waived): the step is satisfied and its dependents proceed; FAILED_PRECONDITION when the step
    is already satisfied or cancelled, or the task is closed."""
    verb = "complete" if complete else "resolve"
    to = StepState.COMPLETE if complete else StepState.RESOLVED_MANUALLY
    event = StepEvent.ADMIN_COMPLETE if complete else StepEvent.RESOLVE_MANUALLY
    _require_open_task(task_state, f"{verb} a step")
    _require_edge(step, to, event, f"{verb} the step")
    return AdminChange(
        step,
        to,
        event,
        "step.completed" if complete else "step.resolved_manually",
        reopen_task=task_state is TaskState.FAILED,
        revoke_lease=step in ACTIVE_STEP_STATES,
        satisfied=True,
    )
