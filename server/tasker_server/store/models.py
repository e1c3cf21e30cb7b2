"""Tables of the Tasker store (SQLAlchemy 2 declarative).

Deliberately no ``relationship()``: under asyncio a lazy load raises ``MissingGreenlet``, and the
queries that matter (claims, readiness, transitions) are explicit SQL anyway.

Counters on ``tasks`` and ``steps`` are maintained incrementally by the store's queries so that the
hot paths stay O(1):

- ``steps.pending_parents``: dependencies not yet satisfied; a step is ready when it is 0.
- ``tasks.satisfied_steps``: steps complete/skipped/resolved; the task is done at ``total_steps``.
- ``tasks.in_flight``: steps enqueued/in_progress; compared with ``max_parallel_steps``.

Every table change needs a new Alembic revision; ``tests/integration/test_migrations.py`` fails
when the models and the migration chain disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tasker_server.domain.states import (
    ACTIVE_STEP_STATES,
    StepEvent,
    StepState,
    allowed_step_sources,
)

from .types import BigId, JSONDocument, UTCDateTime, utcnow

__all__ = [
    "LEASED_STEP_STATES",
    "NAMING_CONVENTION",
    "READY_STEP_STATES",
    "Base",
    "CircuitBreaker",
    "Event",
    "Namespace",
    "Step",
    "StepAttempt",
    "StepEdge",
    "Task",
    "Template",
    "Transition",
    "Worker",
]

# Deterministic names let migrations drop/alter constraints by name and let the store map an
# IntegrityError to a domain error by constraint name (e.g. uq_tasks_namespace_idempotency_key).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The server fills timestamps itself (aware UTC); the server default only keeps hand-written SQL
# inserts (tests, repairs) from failing on NOT NULL.
_NOW = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, server_default=_NOW)


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=_NOW)


def _id() -> Mapped[int]:
    return mapped_column(BigId, primary_key=True, autoincrement=True)


class Namespace(Base):
    __tablename__ = "namespaces"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    max_parallel_tasks: Mapped[int | None] = mapped_column(Integer)
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()


class Template(Base):
    """One immutable version of a task template (the YAML as given plus its parsed definition)."""

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("namespace", "name", "version"),
        Index(None, "namespace", "name"),
    )

    id: Mapped[int] = _id()
    namespace: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(32))
    # Split semver so "latest" is an ORDER BY, not a string sort that puts 1.10 before 1.9.
    version_major: Mapped[int] = mapped_column(Integer)
    version_minor: Mapped[int] = mapped_column(Integer)
    version_patch: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    yaml_text: Mapped[str] = mapped_column(Text)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    description: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = _created()


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # NULL keys never collide (both dialects), so tasks without a key are unconstrained.
        UniqueConstraint("namespace", "idempotency_key"),
        Index(None, "namespace", "state", "id"),
        Index(None, "state", "id"),
    )

    id: Mapped[int] = _id()
    namespace: Mapped[str] = mapped_column(String(64))
    template_name: Mapped[str] = mapped_column(String(128))
    template_version: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id"))
    state: Mapped[str] = mapped_column(String(32))
    context: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    tags: Mapped[Any] = mapped_column(JSONDocument)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    total_steps: Mapped[int] = mapped_column(Integer)
    satisfied_steps: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_parallel_steps: Mapped[int | None] = mapped_column(Integer)
    trace_parent: Mapped[str | None] = mapped_column(String(128))
    trace_state: Mapped[str | None] = mapped_column(String(512))
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[Any | None] = mapped_column(JSONDocument)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = _id()
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    handler: Mapped[str] = mapped_column(String(256))
    # 1-based position in a topological order of the task's DAG (stable display order).
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    # Copied from the task so the claim reads one table through one partial index.
    namespace: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    pending_parents: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry: Mapped[Any] = mapped_column(JSONDocument)
    timeout_seconds: Mapped[float] = mapped_column(Float)
    config: Mapped[Any] = mapped_column(JSONDocument)
    optional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # True once the step runs its fallback handler (``handler`` then names the fallback).
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    fallback_handler: Mapped[str | None] = mapped_column(String(256))
    breaker_key: Mapped[str] = mapped_column(String(256))
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_id: Mapped[str | None] = mapped_column(String(36), index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_id: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[Any | None] = mapped_column(JSONDocument)
    last_error: Mapped[Any | None] = mapped_column(JSONDocument)
    create_time: Mapped[datetime] = _created()
    update_time: Mapped[datetime] = _updated()
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())


# The ready queue. Partial on both dialects: it holds only claimable rows, so it stays small however
# many finished steps accumulate. A claim's WHERE must imply this predicate to use it.
READY_STEP_STATES = tuple(
    sorted(s.value for s in allowed_step_sources(StepState.ENQUEUED, StepEvent.CLAIM))
)
"""The claim's sources in the transition table: the states of the ready queue."""
LEASED_STEP_STATES = tuple(sorted(s.value for s in ACTIVE_STEP_STATES))


def _state_in(values: tuple[str, ...]) -> str:
    return "state IN (" + ", ".join(f"'{v}'" for v in values) + ")"


_READY = text(_state_in(READY_STEP_STATES) + " AND pending_parents = 0")
Index(
    "ix_steps_ready",
    Step.namespace,
    Step.handler,
    Step.priority.desc(),
    Step.id,
    postgresql_where=_READY,
    sqlite_where=_READY,
)
# Lease expiry sweep: only leased rows.
_LEASED = text(_state_in(LEASED_STEP_STATES))
Index(
    "ix_steps_lease_expiry",
    Step.lease_expires_at,
    postgresql_where=_LEASED,
    sqlite_where=_LEASED,
)


class StepEdge(Base):
    """``parent`` must be satisfied before ``child`` becomes ready."""

    __tablename__ = "step_edges"

    # Denormalised (no FK): edges go away with their steps through the steps' cascade.
    task_id: Mapped[int] = mapped_column(BigId)
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("steps.id", ondelete="CASCADE"), primary_key=True
    )
    child_id: Mapped[int] = mapped_column(
        ForeignKey("steps.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Transition(Base):
    """Append-only audit log of every task and step state change."""

    __tablename__ = "transitions"
    __table_args__ = (Index(None, "task_id", "id"),)

    id: Mapped[int] = _id()
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    step_id: Mapped[int | None] = mapped_column(BigId)
    entity: Mapped[str] = mapped_column(String(8))  # 'task' | 'step'
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    # ``metadata`` is reserved on declarative classes; the column keeps the domain name.
    metadata_: Mapped[Any] = mapped_column("metadata", JSONDocument)
    create_time: Mapped[datetime] = _created()


class StepAttempt(Base):
    """One execution attempt of a step, with its outcome and error details."""

    __tablename__ = "step_attempts"
    __table_args__ = (Index(None, "step_id", "attempt"),)

    id: Mapped[int] = _id()
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(BigId)
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    lease_id: Mapped[str | None] = mapped_column(String(36))
    outcome: Mapped[str] = mapped_column(String(32))
    error_class: Mapped[str | None] = mapped_column(String(64))
    error_type: Mapped[str | None] = mapped_column(String(256))
    message: Mapped[str | None] = mapped_column(Text)
    backtrace: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[Any] = mapped_column("metadata", JSONDocument)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Event(Base):
    """The event stream; ``seq`` is the resume cursor for subscribers."""

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "task_id", "seq"),
        Index(None, "namespace", "seq"),
        # AUTOINCREMENT stops SQLite from reusing the highest seq after a delete, which would
        # make a subscriber's resume cursor skip or repeat events.
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[int | None] = mapped_column(BigId)
    namespace: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[Any] = mapped_column(JSONDocument)
    create_time: Mapped[datetime] = _created()


class Worker(Base):
    """A connected (or recently seen) worker session."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    namespaces: Mapped[list[str]] = mapped_column(JSONDocument)
    handlers: Mapped[list[str]] = mapped_column(JSONDocument)
    capacity: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    sdk_language: Mapped[str] = mapped_column(String(32))
    sdk_version: Mapped[str] = mapped_column(String(64))
    # The authenticated identity that opened its stream (NULL with authentication off).
    identity: Mapped[str | None] = mapped_column(String(255))
    # Which server process holds the stream, so a restarted server can reap its stale workers.
    server_id: Mapped[str] = mapped_column(String(64))
    connect_time: Mapped[datetime] = _created()
    last_seen_time: Mapped[datetime] = _updated()
    state: Mapped[str] = mapped_column(String(16))


class CircuitBreaker(Base):
    __tablename__ = "circuit_breakers"

    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    failure_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    failure_threshold: Mapped[int] = mapped_column(Integer)
    reset_timeout_seconds: Mapped[float] = mapped_column(Float)
    opened_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    update_time: Mapped[datetime] = _updated()
