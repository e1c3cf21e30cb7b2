"""Journal.transition is where the transition table is enforced (store/journal.py)."""

from __future__ import annotations

import pytest

from tasker_server.store import journal as journal_module
from tasker_server.store.journal import ILLEGAL_TRANSITIONS, IllegalTransition, Journal


def test_the_suite_runs_strict() -> None:
    assert journal_module.STRICT_TRANSITIONS  # tests/conftest.py


def test_an_edge_of_the_table_is_recorded() -> None:
    journal = Journal()
    journal.transition(
        task_id=1, step_id=2, from_state="enqueued", to_state="complete", event="result"
    )
    journal.transition(task_id=1, from_state=None, to_state="pending", event="create")
    assert [t["event"] for t in journal.transitions] == ["result", "create"]


@pytest.mark.parametrize(
    ("step_id", "from_state", "to_state", "event"),
    [
        (2, "pending", "complete", "result"),  # not an edge
        (2, "in_progress", "complete", "complete"),  # the table's old name for "result"
        (None, "complete", "in_progress", "resume"),
        (None, None, "in_progress", "create"),
    ],
)
def test_anything_else_raises_in_tests(
    step_id: int | None, from_state: str | None, to_state: str, event: str
) -> None:
    journal = Journal()
    with pytest.raises(IllegalTransition):
        journal.transition(
            task_id=1, step_id=step_id, from_state=from_state, to_state=to_state, event=event
        )
    assert journal.transitions == []


def test_production_logs_counts_and_still_records_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The rows already changed in this transaction: failing the unit of work would lose the
    # change's record, not undo a bug. The counter is exported as tasker_illegal_transitions_total.
    monkeypatch.setattr(journal_module, "STRICT_TRANSITIONS", False)
    key = ("step", "failed", "complete", "result")
    before = ILLEGAL_TRANSITIONS[key]
    journal = Journal()
    journal.transition(
        task_id=1, step_id=2, from_state="failed", to_state="complete", event="result"
    )
    assert ILLEGAL_TRANSITIONS[key] == before + 1
    assert len(journal.transitions) == 1
    assert "illegal transition" in caplog.text
    ILLEGAL_TRANSITIONS[key] = before
    if not before:
        del ILLEGAL_TRANSITIONS[key]
