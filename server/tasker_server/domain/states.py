"""Task and step state machines: the ONE transition table for each.

Every state change in Tasker is a compare-and-set in the store::

    UPDATE workflow_steps SET state = :to
     WHERE id = :id AND state IN (:allowed_sources(to)) RETURNING id

so the tables below are the single source of truth: the store asks ``allowed_sources()`` for the
``IN (...)`` list, and request handlers call ``check_*_transition()`` to turn an illegal request
into FAILED_PRECONDITION before touching the database. Guards that depend on other rows
(dependencies satisfied, namespace paused, breaker open, attempts left) are enforced by the caller;
here they are documented next to the edge they protect (and rendered into the docs by
``render_markdown_table()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from tasker_server.domain.errors import FailedPrecondition

__all__ = [
    "ACTIVE_STEP_STATES",
    "SATISFIED_STEP_STATES",
    "STEP_TRANSITIONS",
    "TASK_TRANSITIONS",
    "TERMINAL_STEP_STATES",
    "TERMINAL_TASK_STATES",
    "StepState",
    "TaskState",
    "Transition",
    "allowed_step_sources",
    "allowed_task_sources",
    "check_step_transition",
    "check_task_transition",
    "is_terminal",
    "render_markdown_table",
]


class TaskState(StrEnum):
    """Task state; the values are stored in the database and must never change."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RESOLVED_MANUALLY = "resolved_manually"


class StepState(StrEnum):
    """Step state; the values are stored in the database and must never change."""

    PENDING = "pending"
    # Leased to a worker but not acknowledged: lets us requeue without counting an attempt.
    ENQUEUED = "enqueued"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    # Waiting for its backoff (ready_at) to elapse.
    RETRYING = "retrying"
    # Business-logic error: waits for RetryStep / ResolveStepManually.
    BLOCKED = "blocked"
    # Optional step that exhausted its retries; dependents continue.
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    RESOLVED_MANUALLY = "resolved_manually"


@dataclass(frozen=True, slots=True)
class Transition:
    """An allowed edge: the event that fires it and the guard the caller must have checked."""

    event: str
    guard: str = ""


_S = StepState
_T = TaskState

_CANCEL_GUARD = "admin CancelTask/CancelStep; a leased step's worker is told to stop"
_RESOLVE_GUARD = "admin ResolveStepManually; the step's result is supplied by the operator"

STEP_TRANSITIONS: Mapping[tuple[StepState, StepState], Transition] = MappingProxyType(
    {
        (_S.PENDING, _S.ENQUEUED): Transition(
            "claim",
            "all dependencies complete/skipped/resolved_manually, namespace not paused, "
            "circuit breaker not open, task under max_parallel_steps",
        ),
        (_S.RETRYING, _S.ENQUEUED): Transition(
            "claim", "backoff elapsed (ready_at <= now); same guards as the first claim"
        ),
        (_S.ENQUEUED, _S.IN_PROGRESS): Transition(
            "acknowledge", "worker acknowledged the assignment; the attempt is counted here"
        ),
        (_S.ENQUEUED, _S.PENDING): Transition(
            "requeue", "assignment not acknowledged in time; no attempt counted"
        ),
        (_S.ENQUEUED, _S.RETRYING): Transition(
            "lease_expired", "lease expired after acknowledgement was lost; attempts left"
        ),
        (_S.IN_PROGRESS, _S.RETRYING): Transition(
            "fail_retryable", "lease expired or retryable error, attempts left"
        ),
        (_S.IN_PROGRESS, _S.COMPLETE): Transition("complete", "worker reported success"),
        (_S.IN_PROGRESS, _S.FAILED): Transition(
            "fail", "permanent error, or attempts exhausted on a required step"
        ),
        (_S.IN_PROGRESS, _S.BLOCKED): Transition("block", "business-logic error"),
        (_S.IN_PROGRESS, _S.SKIPPED): Transition(
            "skip", "optional step exhausted its attempts (or failed permanently)"
        ),
        (_S.FAILED, _S.RETRYING): Transition("admin_retry", "admin RetryStep; attempts reset"),
        (_S.BLOCKED, _S.RETRYING): Transition("admin_retry", "admin RetryStep; attempts reset"),
        **{
            (src, _S.CANCELLED): Transition("cancel", _CANCEL_GUARD)
            for src in (_S.PENDING, _S.ENQUEUED, _S.IN_PROGRESS, _S.RETRYING, _S.BLOCKED)
        },
        **{
            (src, _S.RESOLVED_MANUALLY): Transition("resolve_manually", _RESOLVE_GUARD)
            for src in (_S.PENDING, _S.RETRYING, _S.FAILED, _S.BLOCKED, _S.IN_PROGRESS)
        },
    }
)

TASK_TRANSITIONS: Mapping[tuple[TaskState, TaskState], Transition] = MappingProxyType(
    {
        (_T.PENDING, _T.IN_PROGRESS): Transition("start", "first step claimed"),
        (_T.IN_PROGRESS, _T.COMPLETE): Transition(
            "complete", "every step complete, skipped or resolved_manually"
        ),
        (_T.IN_PROGRESS, _T.FAILED): Transition(
            "fail", "a required step failed, or the task deadline passed"
        ),
        (_T.FAILED, _T.IN_PROGRESS): Transition(
            "resume", "admin RetryStep on a step of the failed task"
        ),
        **{
            (src, _T.CANCELLED): Transition("cancel", "admin CancelTask")
            for src in (_T.PENDING, _T.IN_PROGRESS, _T.FAILED)
        },
        **{
            (src, _T.RESOLVED_MANUALLY): Transition("resolve_manually", "admin ResolveTask")
            for src in (_T.PENDING, _T.IN_PROGRESS, _T.FAILED)
        },
    }
)

TERMINAL_STEP_STATES: frozenset[StepState] = frozenset(
    {_S.COMPLETE, _S.SKIPPED, _S.CANCELLED, _S.RESOLVED_MANUALLY}
)
"""States with no outgoing edge except by admin action.

``failed`` and ``blocked`` are *not* terminal: both can be retried by an admin. They are
"settled" for task-completion purposes but a task containing them is failed/stuck, not done.
"""

SATISFIED_STEP_STATES: frozenset[StepState] = frozenset(
    {_S.COMPLETE, _S.SKIPPED, _S.RESOLVED_MANUALLY}
)
"""A dependency in one of these states lets its dependents run (and a task whose steps are all
in these states is complete)."""

ACTIVE_STEP_STATES: frozenset[StepState] = frozenset({_S.ENQUEUED, _S.IN_PROGRESS})
"""Steps holding a lease; counted against max_parallel_steps."""

TERMINAL_TASK_STATES: frozenset[TaskState] = frozenset(
    {_T.COMPLETE, _T.CANCELLED, _T.RESOLVED_MANUALLY}
)


_STEP_SOURCES: Mapping[StepState, frozenset[StepState]] = {
    dst: frozenset(src for (src, d) in STEP_TRANSITIONS if d == dst) for dst in StepState
}
_TASK_SOURCES: Mapping[TaskState, frozenset[TaskState]] = {
    dst: frozenset(src for (src, d) in TASK_TRANSITIONS if d == dst) for dst in TaskState
}


def allowed_step_sources(to_state: StepState | str) -> frozenset[StepState]:
    """States a step may move to ``to_state`` from (the compare-and-set ``IN (...)`` list)."""
    return _STEP_SOURCES[StepState(to_state)]


def allowed_task_sources(to_state: TaskState | str) -> frozenset[TaskState]:
    """States a task may move to ``to_state`` from (the compare-and-set ``IN (...)`` list)."""
    return _TASK_SOURCES[TaskState(to_state)]


def check_step_transition(from_state: StepState | str, to_state: StepState | str) -> Transition:
    """Return the edge, or raise FailedPrecondition naming the step's current state."""
    src, dst = StepState(from_state), StepState(to_state)
    edge = STEP_TRANSITIONS.get((src, dst))
    if edge is None:
        raise FailedPrecondition(
            f"step cannot move from {src.value} to {dst.value}",
            current_state=src.value,
            reason="ILLEGAL_STEP_TRANSITION",
            metadata={"target_state": dst.value},
        )
    return edge


def check_task_transition(from_state: TaskState | str, to_state: TaskState | str) -> Transition:
    """Return the edge, or raise FailedPrecondition naming the task's current state."""
    src, dst = TaskState(from_state), TaskState(to_state)
    edge = TASK_TRANSITIONS.get((src, dst))
    if edge is None:
        raise FailedPrecondition(
            f"task cannot move from {src.value} to {dst.value}",
            current_state=src.value,
            reason="ILLEGAL_TASK_TRANSITION",
            metadata={"target_state": dst.value},
        )
    return edge


def is_terminal(state: StepState | TaskState) -> bool:
    """True for states nothing but an admin can leave (see TERMINAL_STEP_STATES for why)."""
    if isinstance(state, StepState):
        return state in TERMINAL_STEP_STATES
    return state in TERMINAL_TASK_STATES


def _render(title: str, rows: list[tuple[str, str, Transition]]) -> str:
    lines = [f"### {title}", "", "| from | to | event | guard |", "|---|---|---|---|"]
    lines += [f"| `{src}` | `{dst}` | {edge.event} | {edge.guard} |" for src, dst, edge in rows]
    return "\n".join(lines)


def render_markdown_table() -> str:
    """Both transition tables as Markdown, for the docs (generated, so they cannot drift)."""
    task_rows = [(s.value, d.value, e) for (s, d), e in TASK_TRANSITIONS.items()]
    step_rows = [(s.value, d.value, e) for (s, d), e in STEP_TRANSITIONS.items()]
    return (
        _render("Task transitions", task_rows)
        + "\n\n"
        + _render("Step transitions", step_rows)
        + "\n"
    )
