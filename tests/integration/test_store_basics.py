"""Database connectivity, type round-trips and the claim's exactly-once guarantee."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from tasker_server.domain.errors import Unavailable
from tasker_server.store.db import Database, normalize_url
from tasker_server.store.models import Namespace, Step, Task, Template


async def test_ping(database: Database) -> None:
    assert await database.ping()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # released on exit: nothing listens there


async def test_ping_unreachable_postgres_is_false_and_fast() -> None:
    db = Database.from_url(f"postgresql://nobody:secret@127.0.0.1:{_closed_port()}/nothing")
    try:
        started = time.monotonic()
        assert await db.ping(timeout_seconds=1.5) is False
        assert time.monotonic() - started < 2.0
    finally:
        await db.dispose()


async def test_session_on_unreachable_database_raises_unavailable() -> None:
    db = Database.from_url(f"postgresql://nobody:hunter2@127.0.0.1:{_closed_port()}/nothing")
    try:
        with pytest.raises(Unavailable) as info:
            async with db.session() as s:
                await s.execute(text("SELECT 1"))
        assert "hunter2" not in str(info.value) and "127.0.0.1" not in str(info.value)
        assert info.value.reason == "DATABASE_UNAVAILABLE"
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u:p@h/db", "postgresql+asyncpg"),
        ("postgresql://u:p@h:5433/db", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite"),
    ],
)
def test_normalize_url(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


@pytest.mark.parametrize(
    "bad", ["sqlite://", "sqlite:///:memory:", "mysql://u:hunter2@h/db", "postgresql+psycopg://h/d"]
)
def test_normalize_url_rejects_without_echoing(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_url(bad)
    assert "hunter2" not in str(info.value)


async def _seed_task(db: Database, steps: int) -> tuple[int, list[int]]:
    async with db.session() as s:
        s.add(Namespace(name="ns"))
        template = Template(
            namespace="ns",
            name="t",
            version="1.0.0",
            version_major=1,
            version_minor=0,
            version_patch=0,
            content_hash="0" * 64,
            yaml_text="name: t",
            definition={"steps": []},
        )
        s.add(template)
        await s.flush()
        task = Task(
            namespace="ns",
            template_name="t",
            template_version="1.0.0",
            template_id=template.id,
            state="in_progress",
            context={},
            tags=[],
            total_steps=steps,
        )
        s.add(task)
        await s.flush()
        rows = [
            Step(
                task_id=task.id,
                name=f"s{i}",
                handler="h",
                position=i + 1,
                state="pending",
                namespace="ns",
                pending_parents=0,
                max_attempts=3,
                retry={},
                timeout_seconds=30.0,
                config={},
                breaker_key="h",
            )
            for i in range(steps)
        ]
        s.add_all(rows)
        await s.flush()
        return task.id, [r.id for r in rows]


async def test_round_trip_json_and_aware_timestamps(database: Database) -> None:
    deadline = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    context = {"order": {"id": 42, "lines": [1.5, None, True]}, "name": "ü ✓", "empty": {}}
    task_id, _ = await _seed_task(database, 0)
    async with database.session() as s:
        task = await s.get_one(Task, task_id)
        task.context = context
        task.deadline = deadline
        task.result = None

    async with database.session(read_only=True) as s:
        loaded = await s.get_one(Task, task_id)
        assert loaded.context == context
        assert loaded.deadline == deadline  # the same instant …
        assert loaded.deadline is not None and loaded.deadline.tzinfo == UTC  # … returned in UTC
        assert loaded.create_time.tzinfo == UTC
        assert abs(datetime.now(UTC) - loaded.create_time) < timedelta(minutes=1)
        # none_as_null: a Python None is SQL NULL, not the JSON literal 'null'.
        null_count = await s.scalar(
            select(func.count()).select_from(Task).where(Task.result.is_(None))
        )
        assert null_count == 1


async def test_naive_datetime_is_rejected(database: Database) -> None:
    task_id, _ = await _seed_task(database, 0)
    with pytest.raises(Exception, match="naive datetime"):
        async with database.session() as s:
            task = await s.get_one(Task, task_id)
            task.deadline = datetime(2030, 1, 1)  # noqa: DTZ001 - the point of the test


def _claim_sql(dialect: str) -> str:
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    return (
        "UPDATE steps SET state = 'enqueued' WHERE id IN ("
        "SELECT id FROM steps WHERE state = 'pending' AND pending_parents = 0 "
        f"ORDER BY id LIMIT :n{lock}) AND state = 'pending' RETURNING id"
    )


async def test_concurrent_claims_never_share_a_step(database: Database) -> None:
    total, claimers, batch = 300, 8, 3
    _, step_ids = await _seed_task(database, total)
    claim = text(_claim_sql(database.dialect))

    async def claimer() -> list[int]:
        mine: list[int] = []
        empty_rounds = 0
        # A claimer that finds nothing may just have lost every race; stop after a few tries.
        while empty_rounds < 3:
            async with database.session() as s:
                got = list((await s.execute(claim, {"n": batch})).scalars())
            mine.extend(got)
            empty_rounds = 0 if got else empty_rounds + 1
            await asyncio.sleep(0)
        return mine

    # Open a pooled connection per claimer first: otherwise the claimer that gets the one warm
    # connection can drain every step while the others are still connecting, and the test would
    # not exercise concurrency at all.
    opened, ready = 0, asyncio.Event()

    async def warm() -> None:
        nonlocal opened
        async with database.session(read_only=True) as s:
            await s.execute(text("SELECT 1"))
            opened += 1
            if opened == claimers:
                ready.set()
            await ready.wait()

    await asyncio.gather(*(warm() for _ in range(claimers)))
    results = await asyncio.gather(*(claimer() for _ in range(claimers)))
    claimed = [step_id for r in results for step_id in r]
    assert len(claimed) == len(set(claimed)), "a step was handed to two claimers"
    assert sorted(claimed) == sorted(step_ids)
    assert sum(1 for r in results if r) > 1, "claims did not actually run concurrently"


async def test_sqlite_read_then_write_is_exclusive(database: Database) -> None:
    # The naive SELECT-then-UPDATE claim (no re-check of state) is only safe because every SQLite
    # transaction starts with BEGIN IMMEDIATE; without the recipe claimers share rows.
    if database.dialect != "sqlite":
        pytest.skip("PostgreSQL needs FOR UPDATE SKIP LOCKED for this; covered above")
    _, step_ids = await _seed_task(database, 60)
    pick = text("SELECT id FROM steps WHERE state = 'pending' ORDER BY id LIMIT 2")
    mark = text("UPDATE steps SET state = 'enqueued' WHERE id = :id")

    async def claimer() -> list[int]:
        mine: list[int] = []
        while True:
            async with database.session() as s:
                ids = list((await s.execute(pick)).scalars())
                await asyncio.sleep(0.001)  # invite interleaving between the read and the write
                for step_id in ids:
                    await s.execute(mark, {"id": step_id})
            if not ids:
                return mine
            mine.extend(ids)

    results = await asyncio.gather(*(claimer() for _ in range(8)))
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(step_ids)
