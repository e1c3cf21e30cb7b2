"""CHECK constraints on the task and step state columns (PostgreSQL).

A state outside the enum would be invisible to every query that filters on state (readiness,
admission, sweeps) and would strand its task. The database refuses it, whatever writes it.

The value lists are frozen here, like the types in 0001: a migration keeps meaning what it meant
when written. They equal ``domain.states.TaskState`` / ``StepState`` today, and
``tests/integration/test_migrations.py`` fails when the two differ: adding a state needs a
revision that replaces the constraint.

SQLite has no ALTER TABLE … ADD CONSTRAINT (only a table rebuild), and it is the single-node
development backend; the state machine itself is enforced in the code on both (store/journal.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_STATES = ("pending", "in_progress", "complete", "failed", "cancelled", "resolved_manually")
STEP_STATES = (
    "pending",
    "enqueued",
    "in_progress",
    "complete",
    "failed",
    "retrying",
    "blocked",
    "skipped",
    "cancelled",
    "resolved_manually",
)
# Named "state": the naming convention (models.NAMING_CONVENTION) makes it ck_<table>_state.
CHECKS = {"tasks": TASK_STATES, "steps": STEP_STATES}


def _in(values: Sequence[str]) -> str:
    return "state IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, values in CHECKS.items():
        op.create_check_constraint("state", table, _in(values))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in CHECKS:
        op.drop_constraint(op.f(f"ck_{table}_state"), table, type_="check")
