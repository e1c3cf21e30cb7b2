"""The Alembic chain builds exactly the schema the models describe, on every backend."""

from __future__ import annotations

import re
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from tasker_server.domain.states import StepState, TaskState
from tasker_server.store.db import Database
from tasker_server.store.migrate import current, head, upgrade
from tasker_server.store.models import Base


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


async def test_migrations_match_models(database: Database) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == [], f"models and migrations disagree; add a revision: {diff}"


async def test_upgrade_is_idempotent(database: Database) -> None:
    # The fixture already migrated to head; a second (and third) run must be a no-op.
    await upgrade(database)
    await upgrade(database)
    assert await current(database) == head()
    assert await database.ping()


async def test_upgrade_from_empty(tmp_path: Any) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert await current(db) is None
        await upgrade(db)
        assert await current(db) == head()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.dispose()


async def test_queue_indexes_are_partial(database: Database) -> None:
    # compare_metadata ignores index predicates (and DESC on SQLite): check them directly, since a
    # full ready-queue index would silently grow with every finished step.
    if database.dialect == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'steps'"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'steps'"
    async with database.session(read_only=True) as s:
        defs = {name: sql or "" for name, sql in (await s.execute(text(query))).all()}
    ready = defs["ix_steps_ready"].replace('"', "")
    assert "WHERE" in ready and "pending_parents = 0" in ready and "retrying" in ready
    assert "priority DESC" in ready
    assert (
        "WHERE" in defs["ix_steps_lease_expiry"] and "in_progress" in defs["ix_steps_lease_expiry"]
    )


async def test_state_columns_are_checked_against_the_domain_enums(database: Database) -> None:
    # PostgreSQL refuses a state outside the enum (migration 0002, whose value lists are frozen):
    # this fails when a state is added to domain/states.py without a revision for the constraint.
    if database.dialect != "postgresql":
        pytest.skip("SQLite tables carry no state CHECK constraint (see migration 0002)")
    query = (
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'c' AND conname IN ('ck_tasks_state', 'ck_steps_state')"
    )
    async with database.session(read_only=True) as s:
        defs = {name: sql for name, sql in (await s.execute(text(query))).all()}
    assert set(re.findall(r"'(\w+)'", defs["ck_tasks_state"])) == {s.value for s in TaskState}
    assert set(re.findall(r"'(\w+)'", defs["ck_steps_state"])) == {s.value for s in StepState}
