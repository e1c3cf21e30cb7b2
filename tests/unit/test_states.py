"""The transition tables, the compare-and-set source lists and the guards around them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasker_server.domain.errors import FailedPrecondition
from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    FINAL_STEP_STATES,
    FINAL_TASK_STATES,
    FINISHED_TASK_STATES,
    SATISFIED_STEP_STATES,
    STEP_TRANSITIONS,
    TASK_TRANSITIONS,
    StepEvent,
    StepState,
    TaskEvent,
    TaskState,
    allowed_step_sources,
    allowed_task_sources,
    check_step_transition,
    check_task_transition,
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


_UNSETTLED = "pending enqueued in_progress retrying failed blocked"
# The whole step table, as (event, sources, targets): a change to the table changes this test.
_STEP_EDGES = [
    ("claim", "pending retrying", "enqueued"),
    ("ack", "enqueued", "in_progress"),
    ("release", "enqueued", "pending retrying"),
    ("result", "enqueued in_progress", "complete"),
    ("failure", "enqueued in_progress", "retrying failed blocked skipped"),
    ("lease_expired", "in_progress", "retrying failed skipped"),
    ("admin_retry", "failed blocked", "retrying"),
    ("admin_complete", _UNSETTLED, "complete"),
    ("resolve_manually", _UNSETTLED, "resolved_manually"),
    ("cancel", "pending enqueued in_progress retrying blocked", "cancelled"),
]
_TASK_EDGES = [
    ("admit", "pending", "in_progress"),
    ("all_steps_satisfied", "in_progress", "complete"),
    ("step_failed", "in_progress", "failed"),
    ("deadline_exceeded", "pending in_progress", "failed"),
    ("resume", "failed", "in_progress"),
    ("cancel", "pending in_progress failed", "cancelled"),
    ("resolve_manually", "pending in_progress failed", "resolved_manually"),
]


def _expand(edges: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return {
        (src, dst, event)
        for event, sources, targets in edges
        for src in sources.split()
        for dst in targets.split()
    }


def test_step_table_is_exactly_the_reviewed_edges() -> None:
    assert {(s.value, d.value, e.value) for s, d, e in STEP_TRANSITIONS} == _expand(_STEP_EDGES)


def test_task_table_is_exactly_the_reviewed_edges() -> None:
    assert {(s.value, d.value, e.value) for s, d, e in TASK_TRANSITIONS} == _expand(_TASK_EDGES)


def test_every_event_has_an_edge_and_every_edge_a_guard() -> None:
    assert {e for _, _, e in STEP_TRANSITIONS} == set(StepEvent)
    # "create" has no source state: it is checked by check_task_transition(None, ...).
    assert {e for _, _, e in TASK_TRANSITIONS} == set(TaskEvent) - {TaskEvent.CREATE}
    assert all(STEP_TRANSITIONS.values()) and all(TASK_TRANSITIONS.values())


def test_sources_agree_with_table() -> None:
    for to in StepState:
        for src in StepState:
            assert (src in allowed_step_sources(to)) == any(
                (src, to, e) in STEP_TRANSITIONS for e in StepEvent
            )
            for event in StepEvent:
                assert (src in allowed_step_sources(to, event)) == (
                    (src, to, event) in STEP_TRANSITIONS
                )
    for to_t in TaskState:
        for src_t in TaskState:
            for task_event in TaskEvent:
                assert (src_t in allowed_task_sources(to_t, task_event)) == (
                    (src_t, to_t, task_event) in TASK_TRANSITIONS
                )


def test_claim_and_ack_sources() -> None:
    assert allowed_step_sources(S.ENQUEUED, "claim") == {S.PENDING, S.RETRYING}
    assert allowed_step_sources(S.IN_PROGRESS, StepEvent.ACK) == {S.ENQUEUED}
    assert allowed_task_sources(T.IN_PROGRESS) == {T.PENDING, T.FAILED}


def test_check_step_transition_returns_guard() -> None:
    assert "dependencies" in check_step_transition("pending", "enqueued", "claim")
    assert check_step_transition(S.ENQUEUED, S.PENDING, StepEvent.RELEASE)


@pytest.mark.parametrize(
    ("src", "dst", "event"),
    [(S.COMPLETE, S.RETRYING, "admin_retry"), (S.PENDING, S.COMPLETE, "result"),
     (S.CANCELLED, S.PENDING, "release"), (S.SKIPPED, S.RESOLVED_MANUALLY, "resolve_manually"),
     (S.FAILED, S.CANCELLED, "cancel"), (S.PENDING, S.ENQUEUED, "ack"),
     (S.ENQUEUED, S.BLOCKED, "lease_expired"), (S.PENDING, S.ENQUEUED, "no-such-event")],
)  # fmt: skip
def test_illegal_step_transition_names_current_state(
    src: StepState, dst: StepState, event: str
) -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_step_transition(src, dst, event)
    assert info.value.current_state == src.value
    assert info.value.metadata["current_state"] == src.value
    assert info.value.metadata["target_state"] == dst.value
    assert info.value.reason == "ILLEGAL_STEP_TRANSITION"


def test_illegal_task_transition() -> None:
    with pytest.raises(FailedPrecondition) as info:
        check_task_transition(T.COMPLETE, T.IN_PROGRESS, "resume")
    assert info.value.current_state == "complete"
    assert info.value.reason == "ILLEGAL_TASK_TRANSITION"
    assert check_task_transition(T.FAILED, T.IN_PROGRESS, TaskEvent.RESUME)
    with pytest.raises(FailedPrecondition):
        check_task_transition(T.IN_PROGRESS, T.FAILED, "resume")


def test_a_task_is_created_pending_and_nothing_else() -> None:
    assert check_task_transition(None, T.PENDING, "create")
    with pytest.raises(FailedPrecondition):
        check_task_transition(None, T.IN_PROGRESS, "create")
    with pytest.raises(FailedPrecondition):
        check_task_transition(None, T.PENDING, "admit")


def test_final_states_have_no_outgoing_edges_and_the_others_do() -> None:
    step_sources = {src for src, _, _ in STEP_TRANSITIONS}
    task_sources = {src for src, _, _ in TASK_TRANSITIONS}
    assert step_sources.isdisjoint(FINAL_STEP_STATES)
    assert step_sources | FINAL_STEP_STATES == set(StepState)
    assert task_sources.isdisjoint(FINAL_TASK_STATES)
    assert task_sources | FINAL_TASK_STATES == set(TaskState)


def test_state_sets() -> None:
    assert {S.COMPLETE, S.SKIPPED, S.RESOLVED_MANUALLY} == SATISFIED_STEP_STATES
    assert {S.ENQUEUED, S.IN_PROGRESS} == ACTIVE_STEP_STATES
    assert {S.COMPLETE, S.SKIPPED, S.CANCELLED, S.RESOLVED_MANUALLY} == FINAL_STEP_STATES
    assert {T.COMPLETE, T.CANCELLED, T.RESOLVED_MANUALLY} == FINAL_TASK_STATES
    # Finished: nothing runs. A failed task is finished but not final (an operator can reopen it).
    assert FINAL_TASK_STATES | {T.FAILED} == FINISHED_TASK_STATES
    assert SATISFIED_STEP_STATES <= FINAL_STEP_STATES


def test_the_docs_page_is_the_rendered_table() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "states.md"
    assert page.read_text().endswith(render_markdown_table()), "regenerate docs/states.md"


def test_render_markdown_table_lists_every_edge() -> None:
    md = render_markdown_table()
    assert "### Task transitions" in md and "### Step transitions" in md
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == len(STEP_TRANSITIONS) + len(TASK_TRANSITIONS)
    assert "| `enqueued` | `pending` | release |" in md
