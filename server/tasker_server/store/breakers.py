"""Persistence of circuit breaker state (``circuit_breakers``) and its events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from .journal import Journal
from .models import CircuitBreaker
from .types import dialect_name

__all__ = ["add_breaker_failures", "load_breakers", "save_breaker"]


async def load_breakers(
    session: AsyncSession, since: datetime | None = None, keys: list[str] | None = None
) -> list[CircuitBreaker]:
    query = select(CircuitBreaker).order_by(CircuitBreaker.key)
    if since is not None:
        query = query.where(CircuitBreaker.update_time >= since)
    if keys:
        query = query.where(CircuitBreaker.key.in_(keys))
    return list((await session.execute(query)).scalars().all())


async def save_breaker(
    session: AsyncSession,
    journal: Journal,
    *,
    key: str,
    state: str,
    failure_count: int,
    failure_threshold: int,
    reset_timeout_seconds: float,
    opened_time: datetime | None,
    event: str | None = None,
    metadata: dict[str, object] | None = None,
    settings_only: bool = False,
) -> None:
    """Upserts a breaker row; ``event`` (e.g. ``circuit_breaker.opened``) goes with it.

    ``settings_only`` updates thresholds (template registration) without touching the state.
    """
    ins = (pg_insert if dialect_name(session) == "postgresql" else sqlite_insert)(CircuitBreaker)
    values = {
        "key": key,
        "state": state,
        "failure_count": failure_count,
        "failure_threshold": failure_threshold,
        "reset_timeout_seconds": reset_timeout_seconds,
        "opened_time": opened_time,
        "update_time": journal.now,
    }
    changes = (
        {
            "failure_threshold": failure_threshold,
            "reset_timeout_seconds": reset_timeout_seconds,
            "update_time": journal.now,
        }
        if settings_only
        else {k: v for k, v in values.items() if k != "key"}
    )
    await session.execute(
        ins.values(**values).on_conflict_do_update(index_elements=["key"], set_=changes)
    )
    if event:
        journal.event(event, metadata={"key": key, **(metadata or {})})


async def add_breaker_failures(
    session: AsyncSession,
    *,
    key: str,
    failures: int,
    reset: bool,
    failure_threshold: int,
    reset_timeout_seconds: float,
    now: datetime,
) -> int:
    """Counts consecutive failures of ``key`` in the database, shared by every replica, and
    returns the new count: ``failures`` more, or (``reset``: a success came first) just them.

    One upsert; the row lock serialises replicas, so each sees the total the others built.
    """
    ins = (pg_insert if dialect_name(session) == "postgresql" else sqlite_insert)(CircuitBreaker)
    row = ins.values(
        key=key,
        state="closed",
        failure_count=failures,
        failure_threshold=failure_threshold,
        reset_timeout_seconds=reset_timeout_seconds,
        opened_time=None,
        update_time=now,
    )
    count = row.excluded.failure_count if reset else CircuitBreaker.failure_count + failures
    stmt = row.on_conflict_do_update(
        index_elements=["key"], set_={"failure_count": count, "update_time": now}
    ).returning(CircuitBreaker.failure_count)
    return int((await session.execute(stmt)).scalar_one())
