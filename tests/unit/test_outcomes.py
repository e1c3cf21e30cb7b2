"""The pure outcome and admin decisions (domain/outcomes.py): every change they return is an edge
of the transition table, and the product's rules hold for any step, outcome and policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasker_server.domain.errors import FailedPrecondition
from tasker_server.domain.outcomes import (
    Failure,
    OutcomeKind,
    StepChange,
    StepSnapshot,
    TaskEffect,
    decide_admin_retry,
    decide_admin_settle,
    decide_outcome,
    decide_task,
    error_class,
)
from tasker_server.domain.retry import BackoffFactors, ErrorClass, RetryPolicy
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    FINAL_TASK_STATES,
    SATISFIED_STEP_STATES,
    STEP_TRANSITIONS,
    TASK_TRANSITIONS,
    StepEvent,
    StepState,
    TaskEvent,
    TaskState,
)
from tests.unit.test_retry import factors, policies

S, T = StepState, TaskState
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@st.composite
def leased_steps(draw: st.DrawFn) -> StepSnapshot:
    state = draw(st.sampled_from(sorted(ACTIVE_STEP_STATES)))
    return StepSnapshot(
        state=state,
        # An acknowledged (IN_PROGRESS) step has counted its attempt.
        attempts=draw(st.integers(1 if state is S.IN_PROGRESS else 0, 8)),
        policy=draw(policies),
        optional=draw(st.booleans()),
        fallback_handler=draw(st.one_of(st.none(), st.just("fallback"))),
        is_fallback=draw(st.booleans()),
    )


failures = st.builds(
    Failure,
    error_class=st.sampled_from(list(ErrorClass)),
    retry_after=st.one_of(st.none(), st.floats(-10, 10_000, allow_nan=False)),
)


def _decide(
    step: StepSnapshot, kind: OutcomeKind, failure: Failure, f: BackoffFactors, seed: int
) -> StepChange:
    return decide_outcome(step, kind, failure, NOW, lambda: f, random.Random(seed))


@given(leased_steps(), st.sampled_from(list(OutcomeKind)), failures, factors, st.integers())
def test_every_change_is_an_edge_of_the_table(
    step: StepSnapshot, kind: OutcomeKind, failure: Failure, f: BackoffFactors, seed: int
) -> None:
    change = _decide(step, kind, failure, f, seed)
    assert (change.from_state, change.to_state, change.event) in STEP_TRANSITIONS
    assert change.from_state is step.state
    # Satisfied exactly when the step lands in a satisfied state; only then do dependents run.
    assert change.satisfied == (change.to_state in SATISFIED_STEP_STATES)
    # A release counts no attempt; anything else ends the one that ran (started or implied).
    if change.event is StepEvent.RELEASE:
        assert change.attempt is None and not change.keeps_lease
    else:
        started = step.state is S.IN_PROGRESS
        assert change.attempt == (step.attempts if started else step.attempts + 1)
    if change.to_state is S.RETRYING and change.event is not StepEvent.RELEASE:
        assert change.ready_at is not None and change.ready_at >= NOW
        assert change.event_name == "step.retrying"


@given(leased_steps(), st.sampled_from(list(OutcomeKind)), failures, factors, st.integers())
def test_an_optional_step_never_fails_its_task(
    step: StepSnapshot, kind: OutcomeKind, failure: Failure, f: BackoffFactors, seed: int
) -> None:
    step = StepSnapshot(step.state, step.attempts, step.policy, True, step.fallback_handler)
    change = _decide(step, kind, failure, f, seed)
    assert change.task_effect is not TaskEffect.FAIL
    assert change.to_state is not S.FAILED


@given(leased_steps(), failures, factors, st.integers())
def test_a_success_always_satisfies_its_dependents(
    step: StepSnapshot, failure: Failure, f: BackoffFactors, seed: int
) -> None:
    change = _decide(step, OutcomeKind.SUCCESS, failure, f, seed)
    assert change.to_state is S.COMPLETE and change.satisfied and change.keeps_lease
    assert change.event is StepEvent.RESULT and change.error_class is None


@given(leased_steps(), failures, factors, st.integers())
def test_a_failed_step_fails_its_task_and_nothing_else_does(
    step: StepSnapshot, failure: Failure, f: BackoffFactors, seed: int
) -> None:
    change = _decide(step, OutcomeKind.FAILURE, failure, f, seed)
    assert (change.task_effect is TaskEffect.FAIL) == (change.to_state is S.FAILED)
    assert (change.task_effect is TaskEffect.BLOCK) == (change.to_state is S.BLOCKED)


def _plain(step: StepSnapshot, kind: OutcomeKind) -> StepChange:
    return decide_outcome(step, kind, None, NOW, BackoffFactors, random.Random())


@given(st.sampled_from(list(TaskState)), st.integers(0, 20), st.integers(1, 20), st.booleans())
def test_a_tasks_move_is_an_edge_and_a_failure_wins(
    state: TaskState, satisfied: int, total: int, failed: bool
) -> None:
    to = decide_task(state, satisfied, total, failed=failed)
    if state is not T.IN_PROGRESS or (not failed and satisfied < total):
        assert to is None
        return
    assert to is (T.FAILED if failed else T.COMPLETE)
    event = TaskEvent.STEP_FAILED if failed else TaskEvent.ALL_STEPS_SATISFIED
    assert (state, to, event) in TASK_TRANSITIONS


def test_the_database_decides_whether_an_attempt_started() -> None:
    unacked = StepSnapshot(S.ENQUEUED, attempts=0)
    expired = decide_outcome(
        unacked, OutcomeKind.EXPIRE, None, NOW, BackoffFactors, random.Random()
    )
    assert (expired.event, expired.to_state, expired.attempt) == (
        StepEvent.RELEASE,
        S.PENDING,
        None,
    )
    retried = StepSnapshot(S.ENQUEUED, attempts=2)
    released = decide_outcome(
        retried, OutcomeKind.RELEASE, None, NOW, BackoffFactors, random.Random()
    )
    assert released.to_state is S.RETRYING
    # An attempt the database counted is not taken back silently: it expires (transient).
    started = StepSnapshot(S.IN_PROGRESS, attempts=1, policy=RetryPolicy(max_attempts=3))
    lost = _plain(started, OutcomeKind.RELEASE)
    assert (lost.event, lost.to_state, lost.attempt) == (StepEvent.LEASE_EXPIRED, S.RETRYING, 1)
    assert lost.error_class is ErrorClass.TRANSIENT and not lost.keeps_lease


def test_failure_order_retry_then_fallback_then_block_then_skip_then_fail() -> None:
    def run(step: StepSnapshot, cls: ErrorClass) -> StepChange:
        return decide_outcome(
            step, OutcomeKind.FAILURE, Failure(cls), NOW, BackoffFactors, random.Random(1)
        )

    one = RetryPolicy(max_attempts=1)
    base = StepSnapshot(S.IN_PROGRESS, attempts=1, policy=RetryPolicy(max_attempts=2))
    assert run(base, ErrorClass.TRANSIENT).to_state is S.RETRYING
    with_fallback = StepSnapshot(S.IN_PROGRESS, 1, one, fallback_handler="fb")
    change = run(with_fallback, ErrorClass.BUSINESS_LOGIC)
    assert (change.to_state, change.fallback_handler, change.max_attempts) == (S.RETRYING, "fb", 2)
    assert change.ready_at == NOW
    fallback_ran = StepSnapshot(S.IN_PROGRESS, 2, one, fallback_handler="fb", is_fallback=True)
    assert run(fallback_ran, ErrorClass.BUSINESS_LOGIC).to_state is S.BLOCKED
    optional = StepSnapshot(S.IN_PROGRESS, 1, one, optional=True)
    assert run(optional, ErrorClass.BUSINESS_LOGIC).to_state is S.BLOCKED
    assert run(optional, ErrorClass.PERMANENT).to_state is S.SKIPPED
    assert run(StepSnapshot(S.IN_PROGRESS, 1, one), ErrorClass.PERMANENT).to_state is S.FAILED


def test_an_unknown_error_class_is_delayed() -> None:
    assert error_class("") is ErrorClass.DELAYED
    assert error_class("nonsense") is ErrorClass.DELAYED
    assert error_class("permanent") is ErrorClass.PERMANENT


def test_an_outcome_needs_a_leased_step() -> None:
    with pytest.raises(ValueError):
        decide_outcome(
            StepSnapshot(S.COMPLETE, 1),
            OutcomeKind.SUCCESS,
            None,
            NOW,
            BackoffFactors,
            random.Random(),
        )


# -- admin actions ----------------------------------------------------------------------------


@given(st.sampled_from(list(TaskState)), st.sampled_from(list(StepState)), st.booleans())
def test_admin_settle_is_an_edge_or_a_failed_precondition(
    task: TaskState, step: StepState, complete: bool
) -> None:
    try:
        change = decide_admin_settle(task, step, complete=complete)
    except FailedPrecondition as exc:
        assert exc.reason in ("TASK_CLOSED", "ILLEGAL_STEP_TRANSITION")
        # The refusal names the state that forbids it.
        named = task if exc.reason == "TASK_CLOSED" else step
        assert exc.current_state == named.value and named.value in str(exc)
        return
    assert task not in FINAL_TASK_STATES
    assert (change.from_state, change.to_state, change.event) in STEP_TRANSITIONS
    assert change.satisfied and change.to_state in SATISFIED_STEP_STATES
    assert change.reopen_task == (task is T.FAILED)
    assert change.revoke_lease == (step in ACTIVE_STEP_STATES)


@given(
    st.sampled_from(list(TaskState)),
    st.sampled_from(list(StepState)),
    st.integers(0, 10),
    st.booleans(),
    st.integers(1, 10),
)
def test_admin_retry_is_an_edge_or_a_failed_precondition(
    task: TaskState, state: StepState, attempts: int, is_fallback: bool, budget: int
) -> None:
    step = StepSnapshot(state, attempts, is_fallback=is_fallback)
    try:
        change = decide_admin_retry(task, step, budget)
    except FailedPrecondition as exc:
        assert exc.reason in ("TASK_CLOSED", "ILLEGAL_STEP_TRANSITION")
        named = task if exc.reason == "TASK_CLOSED" else state
        assert exc.current_state == named.value and named.value in str(exc)
        return
    assert state in (S.FAILED, S.BLOCKED)
    assert (change.from_state, change.to_state, change.event) in STEP_TRANSITIONS
    assert change.max_attempts == attempts + budget
    assert change.restore_primary == is_fallback
    assert change.reopen_task == (task is T.FAILED)


def test_admin_settle_refusals() -> None:
    with pytest.raises(FailedPrecondition) as info:
        decide_admin_settle(T.COMPLETE, S.PENDING, complete=True)
    assert info.value.reason == "TASK_CLOSED" and "complete" in str(info.value)
    with pytest.raises(FailedPrecondition) as info:
        decide_admin_settle(T.IN_PROGRESS, S.SKIPPED, complete=False)
    assert info.value.reason == "ILLEGAL_STEP_TRANSITION"
    assert info.value.metadata["current_state"] == "skipped"
