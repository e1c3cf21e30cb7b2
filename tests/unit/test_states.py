"""The transition tables, the compare-and-set source lists and the guards around them."""

from __future__ import annotations

import pytest

from tasker_server.domain.errors import FailedPrecondition
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    SATISFIED_STEP_STATES,
    STEP_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL_STEP_STATES,
    StepState,
    TaskState,
    allowed_step_sources,
    allowed_task_sources,
    check_step_transition,
    check_task_transition,
    is_terminal,
    render_markdown_table,
)

S, T = StepState, TaskState


def test_state_values_match_the_database() -> None:
    assert [s.value for s in TaskState] == [
        "pending", "in_progress", "complete", "failed", "cancelled", "resolved_manually",
    ]  # fmt: skip
    assert {s.value for s in StepState} == {
        "pending", "enqueued", "in_progress", "complete", "failed", "retrying", "blocked",
        "skipped", "cancelled", "resolved_manually",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("to", "sources"),
    [
        (S.ENQUEUED, {S.PENDING, S.RETRYING}),
        (S.IN_PROGRESS, {S.ENQUEUED}),
        (S.PENDING, {S.ENQUEUED}),
        (S.RETRYING, {S.ENQUEUED, S.IN_PROGRESS, S.FAILED, S.BLOCKED}),
        (S.COMPLETE, {S.IN_PROGRESS}),
        (S.FAILED, {S.IN_PROGRESS}),
        (S.BLOCKED, {S.IN_PROGRESS}),
        (S.SKIPPED, {S.IN_PROGRESS}),
        (S.CANCELLED, {S.PENDING, S.ENQUEUED, S.IN_PROGRESS, S.RETRYING, S.BLOCKED}),
        (S.RESOLVED_MANUALLY, {S.PENDING, S.RETRYING, S.FAILED, S.BLOCKED, S.IN_PROGRESS}),
    ],
)
def test_step_sources(to: StepState, sources: set[StepState]) -> None:
    assert allowed_step_sources(to) == sources
    assert allowed_step_sources(to.value) == sources


@pytest.mark.parametrize(
    ("to", "sources"),
    [
        (T.PENDING, set()),
        (T.IN_PROGRESS, {T.PENDING, T.FAILED}),
        (T.COMPLETE, {T.IN_PROGRESS}),
        (T.FAILED, {T.IN_PROGRESS}),
        (T.CANCELLED, {T.PENDING, T.IN_PROGRESS, T.FAILED}),
        (T.RESOLVED_MANUALLY, {T.PENDING, T.IN_PROGRESS, T.FAILED}),
    ],
)
def test_task_sources(to: TaskState, sources: set[TaskState]) -> None:
    assert allowed_task_sources(to) == sources


def test_sources_agree_with_table() -> None:
    for to in StepState:
        for src in StepState:
            assert (src in allowed_step_sources(to)) == ((src, to) in STEP_TRANSITIONS)
    for to_t in TaskState:
        for src_t in TaskState:
            assert (src_t in allowed_task_sources(to_t)) == ((src_t, to_t) in TASK_TRANSITIONS)


def test_check_step_transition_returns_edge() -> None:
    edge = check_step_transition("pending", "enqueued")
    assert edge.event == "claim"
    assert "dependencies" in edge.guard
    assert check_step_transition(S.ENQUEUED, S.PENDING).event == "requeue"


@pytest.mark.parametrize(
    ("src", "dst"),
    [(S.COMPLETE, S.RETRYING), (S.PENDING, S.COMPLETE), (S.CANCELLED, S.PENDING),
     (S.SKIPPED, S.RESOLVED_MANUALLY), (S.FAILED, S.CANCELLED)],
)  # fmt: skip
def test_illegal_step_transition_names_current_state(src: StepState, dst: StepState) -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_step_transition(src, dst)
    assert info.value.current_state == src.value
    assert info.value.metadata["current_state"] == src.value
    assert info.value.metadata["target_state"] == dst.value
    assert info.value.reason == "ILLEGAL_STEP_TRANSITION"


def test_illegal_task_transition() -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_task_transition(T.COMPLETE, T.IN_PROGRESS)
    assert info.value.current_state == "complete"
    assert check_task_transition(T.FAILED, T.IN_PROGRESS).event == "resume"


def test_terminal_states_have_no_outgoing_edges() -> None:
    for src, _dst in STEP_TRANSITIONS:
        assert src not in TERMINAL_STEP_STATES
    for src_t, _ in TASK_TRANSITIONS:
        assert not is_terminal(src_t)
    assert is_terminal(S.COMPLETE) and is_terminal(T.CANCELLED)
    assert not is_terminal(S.FAILED) and not is_terminal(T.FAILED)


def test_state_sets() -> None:
    assert {S.COMPLETE, S.SKIPPED, S.RESOLVED_MANUALLY} == SATISFIED_STEP_STATES
    assert {S.ENQUEUED, S.IN_PROGRESS} == ACTIVE_STEP_STATES
    assert SATISFIED_STEP_STATES <= TERMINAL_STEP_STATES


def test_render_markdown_table_lists_every_edge() -> None:
    md = render_markdown_table()
    assert "### Task transitions" in md and "### Step transitions" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == len(STEP_TRANSITIONS) + len(TASK_TRANSITIONS)
    assert "| `enqueued` | `pending` | requeue |" in md
