"""Initial schema: every table of the Tasker store.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 18:15:52.522621
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Types frozen here rather than imported from the models: a migration must keep meaning what it
# meant when written, whatever the models become. They render exactly as the models' types do.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")
FALSE = sa.text("false")
ZERO = sa.text("0")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "circuit_breakers",
        sa.Column("key", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_count", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("failure_threshold", sa.Integer(), nullable=False),
        sa.Column("reset_timeout_seconds", sa.Float(), nullable=False),
        sa.Column("opened_time", TIMESTAMP, nullable=True),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_circuit_breakers")),
    )
    op.create_table(
        "events",
        sa.Column("seq", ID, autoincrement=True, nullable=False),
        sa.Column("task_id", ID, nullable=True),
        sa.Column("namespace", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_events_namespace_seq"), "events", ["namespace", "seq"])
    op.create_index(op.f("ix_events_task_id_seq"), "events", ["task_id", "seq"])

    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("max_parallel_tasks", sa.Integer(), nullable=True),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_namespaces")),
    )
    op.create_table(
        "templates",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("version_major", sa.Integer(), nullable=False),
        sa.Column("version_minor", sa.Integer(), nullable=False),
        sa.Column("version_patch", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("yaml_text", sa.Text(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint(
            "namespace", "name", "version", name=op.f("uq_templates_namespace_name_version")
        ),
    )
    op.create_index(op.f("ix_templates_namespace_name"), "templates", ["namespace", "name"])

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("namespaces", JSON, nullable=False),
        sa.Column("handlers", JSON, nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("sdk_language", sa.String(length=32), nullable=False),
        sa.Column("sdk_version", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.String(length=64), nullable=False),
        sa.Column("connect_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("last_seen_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "tasks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("template_name", sa.String(length=128), nullable=False),
        sa.Column("template_version", sa.String(length=32), nullable=False),
        sa.Column("template_id", ID, nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("satisfied_steps", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("in_flight", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("max_parallel_steps", sa.Integer(), nullable=True),
        sa.Column("trace_parent", sa.String(length=128), nullable=True),
        sa.Column("trace_state", sa.String(length=512), nullable=True),
        sa.Column("deadline", TIMESTAMP, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("blocked", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("start_time", TIMESTAMP, nullable=True),
        sa.Column("end_time", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_tasks_template_id_templates")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint(
            "namespace", "idempotency_key", name=op.f("uq_tasks_namespace_idempotency_key")
        ),
    )
    op.create_index(op.f("ix_tasks_namespace_state_id"), "tasks", ["namespace", "state", "id"])
    op.create_index(op.f("ix_tasks_state_id"), "tasks", ["state", "id"])

    op.create_table(
        "steps",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("handler", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("pending_parents", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("retry", JSON, nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("optional", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("is_fallback", sa.Boolean(), server_default=FALSE, nullable=False),
        sa.Column("fallback_handler", sa.String(length=256), nullable=True),
        sa.Column("breaker_key", sa.String(length=256), nullable=False),
        sa.Column("ready_at", TIMESTAMP, nullable=True),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("last_error", JSON, nullable=True),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("update_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.Column("start_time", TIMESTAMP, nullable=True),
        sa.Column("end_time", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_steps_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint("task_id", "name", name=op.f("uq_steps_task_id_name")),
    )
    op.create_index(
        "ix_steps_lease_expiry",
        "steps",
        ["lease_expires_at"],
        postgresql_where=sa.text("state IN ('enqueued', 'in_progress')"),
        sqlite_where=sa.text("state IN ('enqueued', 'in_progress')"),
    )
    op.create_index(op.f("ix_steps_lease_id"), "steps", ["lease_id"])
    op.create_index(
        "ix_steps_ready",
        "steps",
        ["namespace", "handler", sa.literal_column("priority DESC"), "id"],
        postgresql_where=sa.text("state IN ('pending', 'retrying') AND pending_parents = 0"),
        sqlite_where=sa.text("state IN ('pending', 'retrying') AND pending_parents = 0"),
    )

    op.create_table(
        "transitions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("step_id", ID, nullable=True),
        sa.Column("entity", sa.String(length=8), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=True),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("create_time", TIMESTAMP, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_transitions_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transitions")),
    )
    op.create_index(op.f("ix_transitions_task_id_id"), "transitions", ["task_id", "id"])

    op.create_table(
        "step_attempts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("step_id", ID, nullable=False),
        sa.Column("task_id", ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("error_class", sa.String(length=64), nullable=True),
        sa.Column("error_type", sa.String(length=256), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("backtrace", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("start_time", TIMESTAMP, nullable=True),
        sa.Column("end_time", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["steps.id"],
            name=op.f("fk_step_attempts_step_id_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_attempts")),
    )
    op.create_index(
        op.f("ix_step_attempts_step_id_attempt"), "step_attempts", ["step_id", "attempt"]
    )

    op.create_table(
        "step_edges",
        sa.Column("task_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=False),
        sa.Column("child_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"],
            ["steps.id"],
            name=op.f("fk_step_edges_child_id_steps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["steps.id"],
            name=op.f("fk_step_edges_parent_id_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("parent_id", "child_id", name=op.f("pk_step_edges")),
    )
    op.create_index(op.f("ix_step_edges_child_id"), "step_edges", ["child_id"])


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents for the foreign keys.
    for table in (
        "step_edges",
        "step_attempts",
        "transitions",
        "steps",
        "tasks",
        "workers",
        "templates",
        "namespaces",
        "events",
        "circuit_breakers",
    ):
        op.drop_table(table)
