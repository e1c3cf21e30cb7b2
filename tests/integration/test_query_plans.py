"""The hot and periodic queries use their partial indexes on SQLite instead of scanning ``steps``.

SQLite uses a partial index only when it can prove from the query that the index's predicate
holds, and it cannot from bound parameters: ``state IN (?, ?)`` made every claim scan and sort
the whole steps table. The statements are captured as the store really sends them and explained.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, text

from tasker_server.store.db import Database
from tasker_server.store.dispatch import claim_steps, expired_leases, ready_depth
from tasker_server.store.journal import Journal
from tasker_server.store.types import utcnow
from tests.integration.test_store_basics import _seed_task


@pytest_asyncio.fixture
async def sqlite_db(database: Database) -> AsyncIterator[Database]:
    if database.dialect != "sqlite":
        pytest.skip("query plans are checked on SQLite (PostgreSQL plans depend on statistics)")
    yield database


async def _plans(db: Database, run: Callable[[Any], Awaitable[object]], table: str) -> list[str]:
    """Runs ``run(session)``; returns EXPLAIN QUERY PLAN of each statement that reads ``table``."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            sent.append((statement, params))

    sync_engine = db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", capture)
    try:
        async with db.session() as s:
            await run(s)
    finally:
        event.remove(sync_engine, "before_cursor_execute", capture)
    assert sent, f"no statement read {table}"
    plans = []
    async with db.engine.connect() as conn:
        for statement, params in sent:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            plans.append(" | ".join(str(r[-1]) for r in rows.all()))
    return plans


async def test_claim_reads_the_ready_index(sqlite_db: Database) -> None:
    await _seed_task(sqlite_db, steps=5)

    async def claim(s: Any) -> object:
        return await claim_steps(
            s, Journal(), namespaces=["ns"], handlers=["h"], workers=[("w", 2)],
            lease_extra_seconds=1.0,
        )

    (plan,) = await _plans(sqlite_db, claim, "steps")
    assert "USING INDEX ix_steps_ready" in plan, plan
    assert "SCAN steps" not in plan and "TEMP B-TREE" not in plan, plan


async def test_a_claims_second_round_reads_the_ready_index_too(sqlite_db: Database) -> None:
    await _seed_task(sqlite_db, steps=5)
    async with sqlite_db.session() as s:  # room for one step: the first round skips the second
        await s.execute(text("UPDATE tasks SET max_parallel_steps = 1"))

    async def claim(s: Any) -> object:
        return await claim_steps(
            s, Journal(), namespaces=["ns"], handlers=["h"], workers=[("w", 2)],
            lease_extra_seconds=1.0,
        )  # fmt: skip

    plans = await _plans(sqlite_db, claim, "steps")
    assert len(plans) == 2, plans
    for plan in plans:
        assert "USING INDEX ix_steps_ready" in plan, plan
        assert "SCAN steps" not in plan and "TEMP B-TREE" not in plan, plan


async def test_ready_depth_reads_the_ready_index(sqlite_db: Database) -> None:
    await _seed_task(sqlite_db, steps=3)
    (plan,) = await _plans(sqlite_db, ready_depth, "steps")
    assert "ix_steps_ready" in plan, plan


@pytest.mark.parametrize("silent", [False, True], ids=["deadline", "deadline-or-vanished"])
async def test_lease_sweep_reads_the_lease_index(sqlite_db: Database, silent: bool) -> None:
    await _seed_task(sqlite_db, steps=3)
    now = utcnow()

    async def sweep(s: Any) -> object:
        return await expired_leases(s, now, now if silent else None)

    (plan,) = await _plans(sqlite_db, sweep, "steps")
    assert "ix_steps_lease_expiry" in plan, plan
    # Sanity: the captured statement is the real one (runs and finds nothing leased).
    async with sqlite_db.session(read_only=True) as s:
        assert await expired_leases(s, now, now if silent else None) == []
        assert (await s.execute(text("SELECT count(*) FROM steps"))).scalar_one() == 3
