"""Task and step state machines: the ONE transition table for each, keyed by (from, to, event).

Every state change in Tasker is a compare-and-set in the store::

    UPDATE steps SET state = :to WHERE id = :id AND state IN (:allowed_sources(to, event))

and every change is recorded through ``store.journal.Journal.transition``, which checks the edge
here (``check_*_transition``): an edge missing from these tables is a bug that tests turn into a
failure and production logs and counts (``tasker_illegal_transitions_total``). The event names
are the ones written to ``transitions.event``. Guards that depend on other rows (dependencies
satisfied, namespace paused, breaker open, attempts left) are enforced by the caller; here they
are documented next to the edge they protect.

Two words for "done", each defined once:

- **final**: no outgoing edge at all (``FINAL_STEP_STATES``, ``FINAL_TASK_STATES``; derived from
  the tables). Nothing, not even an operator, changes such a row again.
- **finished** (tasks): no work runs or will run without an operator (``FINISHED_TASK_STATES``:
  the final states plus ``failed``). ``WaitForTask`` and the SDKs' ``wait`` stop here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from tasker_server.domain.errors import FailedPrecondition

__all__ = [
    "ACTIVE_STEP_STATES",
    "FINAL_STEP_STATES",
    "FINAL_TASK_STATES",
    "FINISHED_TASK_STATES",
    "SATISFIED_STEP_STATES",
    "STEP_TRANSITIONS",
    "TASK_TRANSITIONS",
    "StepEvent",
    "StepState",
    "TaskEvent",
    "TaskState",
    "allowed_step_sources",
    "allowed_task_sources",
    "check_step_transition",
    "check_task_transition",
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


class StepEvent(StrEnum):
    """What moved a step: the value written to ``transitions.event``."""

    CLAIM = "claim"
    ACK = "ack"
    RELEASE = "release"
    RESULT = "result"
    FAILURE = "failure"
    LEASE_EXPIRED = "lease_expired"
    ADMIN_RETRY = "admin_retry"
    ADMIN_COMPLETE = "admin_complete"
    RESOLVE_MANUALLY = "resolve_manually"
    CANCEL = "cancel"


class TaskEvent(StrEnum):
    """What moved a task: the value written to ``transitions.event``."""

    CREATE = "create"
    ADMIT = "admit"
    ALL_STEPS_SATISFIED = "all_steps_satisfied"
    STEP_FAILED = "step_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESUME = "resume"
    CANCEL = "cancel"
    RESOLVE_MANUALLY = "resolve_manually"


_S = StepState
_T = TaskState
_St = TypeVar("_St", StepState, TaskState)
_Ev = TypeVar("_Ev", StepEvent, TaskEvent)
_SE = StepEvent
_TE = TaskEvent


def _edges(
    sources: Iterable[_St], targets: Iterable[_St], event: _Ev, guard: str
) -> dict[tuple[_St, _St, _Ev], str]:
    targets = tuple(targets)
    return {(src, dst, event): guard for src in sources for dst in targets}


# A step an operator may settle by hand: anything not yet satisfied or cancelled. A running step's
# lease is revoked in the same transaction (its late result is then stale).
_ADMIN_SETTLE_SOURCES = (
    _S.PENDING,
    _S.ENQUEUED,
    _S.IN_PROGRESS,
    _S.RETRYING,
    _S.FAILED,
    _S.BLOCKED,
)
# Where a failed attempt can lead (domain.outcomes.decide_outcome): backoff or fallback, an
# operator, a skipped optional step, or a failed one.
_AFTER_FAILURE = (_S.RETRYING, _S.FAILED, _S.BLOCKED, _S.SKIPPED)

STEP_TRANSITIONS: Mapping[tuple[StepState, StepState, StepEvent], str] = MappingProxyType(
    {
        **_edges(
            (_S.PENDING, _S.RETRYING),
            (_S.ENQUEUED,),
            _SE.CLAIM,
            "dependencies satisfied, backoff elapsed, namespace not paused, circuit breaker not "
            "open, task in progress and under max_parallel_steps",
        ),
        **_edges(
            (_S.ENQUEUED,),
            (_S.IN_PROGRESS,),
            _SE.ACK,
            "the worker acknowledged the assignment; the attempt is counted here",
        ),
        **_edges(
            (_S.ENQUEUED,),
            (_S.PENDING, _S.RETRYING),
            _SE.RELEASE,
            "lease taken back before it was acknowledged (no attempt counted); back to retrying "
            "if an earlier attempt failed, ready at once",
        ),
        # A result implies the acknowledgement (the ack may be lost, or skipped by a lazy-ack
        # worker): the attempt is counted with the result, from ENQUEUED as from IN_PROGRESS.
        **_edges(
            (_S.ENQUEUED, _S.IN_PROGRESS),
            (_S.COMPLETE,),
            _SE.RESULT,
            "the lease holder reported success",
        ),
        **_edges(
            (_S.ENQUEUED, _S.IN_PROGRESS),
            _AFTER_FAILURE,
            _SE.FAILURE,
            "the lease holder reported an error: retry with backoff, fallback handler, block "
            "(business logic), skip (optional) or fail",
        ),
        # An expiry of an unacknowledged lease is a release, so only a started attempt expires.
        # A transient failure never blocks.
        **_edges(
            (_S.IN_PROGRESS,),
            (_S.RETRYING, _S.FAILED, _S.SKIPPED),
            _SE.LEASE_EXPIRED,
            "a started attempt's lease ran out or its worker was lost: a transient failure",
        ),
        **_edges(
            (_S.FAILED, _S.BLOCKED),
            (_S.RETRYING,),
            _SE.ADMIN_RETRY,
            "admin RetryStep; a fresh attempt budget",
        ),
        **_edges(
            _ADMIN_SETTLE_SOURCES,
            (_S.COMPLETE,),
            _SE.ADMIN_COMPLETE,
            "admin CompleteStepManually: the work was done elsewhere; the operator supplies the "
            "result",
        ),
        **_edges(
            _ADMIN_SETTLE_SOURCES,
            (_S.RESOLVED_MANUALLY,),
            _SE.RESOLVE_MANUALLY,
            "admin ResolveStepManually: the step is waived; dependents proceed",
        ),
        **_edges(
            (_S.PENDING, _S.ENQUEUED, _S.IN_PROGRESS, _S.RETRYING, _S.BLOCKED),
            (_S.CANCELLED,),
            _SE.CANCEL,
            "its task was closed (cancelled, resolved by hand, past its deadline); a leased "
            "step's worker is told to stop",
        ),
    }
)

TASK_TRANSITIONS: Mapping[tuple[TaskState, TaskState, TaskEvent], str] = MappingProxyType(
    {
        **_edges(
            (_T.PENDING,),
            (_T.IN_PROGRESS,),
            _TE.ADMIT,
            "admitted within the server's and the namespace's caps on running tasks",
        ),
        **_edges(
            (_T.IN_PROGRESS,),
            (_T.COMPLETE,),
            _TE.ALL_STEPS_SATISFIED,
            "every step complete, skipped or resolved_manually",
        ),
        **_edges(
            (_T.IN_PROGRESS,),
            (_T.FAILED,),
            _TE.STEP_FAILED,
            "a required step failed",
        ),
        # A task may wait for admission past its deadline: it fails without ever starting.
        **_edges(
            (_T.PENDING, _T.IN_PROGRESS),
            (_T.FAILED,),
            _TE.DEADLINE_EXCEEDED,
            "the task's deadline passed; its open steps are cancelled",
        ),
        **_edges(
            (_T.FAILED,),
            (_T.IN_PROGRESS,),
            _TE.RESUME,
            "admin RetryStep / CompleteStepManually / ResolveStepManually on a step of the task",
        ),
        **_edges(
            (_T.PENDING, _T.IN_PROGRESS, _T.FAILED),
            (_T.CANCELLED,),
            _TE.CANCEL,
            "admin CancelTask",
        ),
        **_edges(
            (_T.PENDING, _T.IN_PROGRESS, _T.FAILED),
            (_T.RESOLVED_MANUALLY,),
            _TE.RESOLVE_MANUALLY,
            "admin ResolveTask",
        ),
    }
)

# Tasks are born PENDING by the "create" event; they have no state before it (from_state NULL).
_INITIAL_TASK = (_T.PENDING, _TE.CREATE)

SATISFIED_STEP_STATES: frozenset[StepState] = frozenset(
    {_S.COMPLETE, _S.SKIPPED, _S.RESOLVED_MANUALLY}
)
"""A dependency in one of these states lets its dependents run (and a task whose steps are all
in these states is complete)."""

ACTIVE_STEP_STATES: frozenset[StepState] = frozenset({_S.ENQUEUED, _S.IN_PROGRESS})
"""Steps holding a lease; counted against max_parallel_steps."""

FINAL_STEP_STATES: frozenset[StepState] = frozenset(
    s for s in StepState if not any(src == s for (src, _, _) in STEP_TRANSITIONS)
)
"""Steps no event, not even an operator's, moves again (derived from the table)."""

FINAL_TASK_STATES: frozenset[TaskState] = frozenset(
    s for s in TaskState if not any(src == s for (src, _, _) in TASK_TRANSITIONS)
)
"""Tasks no event, not even an operator's, moves again (derived from the table)."""

FINISHED_TASK_STATES: frozenset[TaskState] = FINAL_TASK_STATES | {_T.FAILED}
"""Tasks with no work running or scheduled: final, or failed (only an operator reopens it)."""


def allowed_step_sources(
    to_state: StepState | str, event: StepEvent | str | None = None
) -> frozenset[StepState]:
    """States ``event`` (any event if None) moves a step to ``to_state`` from: the
    compare-and-set ``IN (...)`` list."""
    dst = StepState(to_state)
    return frozenset(
        src
        for (src, d, ev) in STEP_TRANSITIONS
        if d == dst and (event is None or ev == StepEvent(event))
    )


def allowed_task_sources(
    to_state: TaskState | str, event: TaskEvent | str | None = None
) -> frozenset[TaskState]:
    """States ``event`` (any event if None) moves a task to ``to_state`` from."""
    dst = TaskState(to_state)
    return frozenset(
        src
        for (src, d, ev) in TASK_TRANSITIONS
        if d == dst and (event is None or ev == TaskEvent(event))
    )


def check_step_transition(
    from_state: StepState | str, to_state: StepState | str, event: StepEvent | str
) -> str:
    """Return the edge's guard, or raise FailedPrecondition naming the step's current state."""
    src, dst = StepState(from_state), StepState(to_state)
    ev = _step_event(event)
    guard = None if ev is None else STEP_TRANSITIONS.get((src, dst, ev))
    if guard is None:
        raise FailedPrecondition(
            f"step cannot move from {src.value} to {dst.value} by {event}",
            current_state=src.value,
            reason="ILLEGAL_STEP_TRANSITION",
            metadata={"target_state": dst.value},
        )
    return guard


def check_task_transition(
    from_state: TaskState | str | None, to_state: TaskState | str, event: TaskEvent | str
) -> str:
    """Return the edge's guard, or raise FailedPrecondition naming the task's current state.
    ``from_state`` is None only for the creation of a task."""
    dst = TaskState(to_state)
    if from_state is None:
        if (dst, _task_event(event)) == _INITIAL_TASK:
            return "the task was created"
        raise FailedPrecondition(
            f"a task is created {_INITIAL_TASK[0].value}, not {dst.value} by {event}",
            reason="ILLEGAL_TASK_TRANSITION",
            metadata={"target_state": dst.value},
        )
    src = TaskState(from_state)
    ev = _task_event(event)
    guard = None if ev is None else TASK_TRANSITIONS.get((src, dst, ev))
    if guard is None:
        raise FailedPrecondition(
            f"task cannot move from {src.value} to {dst.value} by {event}",
            current_state=src.value,
            reason="ILLEGAL_TASK_TRANSITION",
            metadata={"target_state": dst.value},
        )
    return guard


def _step_event(event: StepEvent | str) -> StepEvent | None:
    try:
        return StepEvent(event)
    except ValueError:
        return None


def _task_event(event: TaskEvent | str) -> TaskEvent | None:
    try:
        return TaskEvent(event)
    except ValueError:
        return None


def _render(title: str, rows: list[tuple[str, str, str, str]]) -> str:
    lines = [f"### {title}", "", "| from | to | event | guard |", "|---|---|---|---|"]
    lines += [f"| `{src}` | `{dst}` | {event} | {guard} |" for src, dst, event, guard in rows]
    return "\n".join(lines)


def render_markdown_table() -> str:
    """Both transition tables as Markdown (generated, so they cannot drift from the code)."""
    task_rows = [(s.value, d.value, e.value, g) for (s, d, e), g in TASK_TRANSITIONS.items()]
    step_rows = [(s.value, d.value, e.value, g) for (s, d, e), g in STEP_TRANSITIONS.items()]
    return (
        _render("Task transitions", task_rows)
        + "\n\n"
        + _render("Step transitions", step_rows)
        + "\n"
    )
