"""Cheap reads for observability: connection-pool usage and correlation ids."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .db import Database
from .models import Task

__all__ = ["PoolUsage", "pool_usage", "task_correlation_id"]


@dataclass(frozen=True, slots=True)
class PoolUsage:
    checked_out: int
    # Connections the pool may hold at most (size + max overflow); 0 when unbounded/unknown.
    limit: int


def pool_usage(db: Database) -> PoolUsage:
    """Connections in use and the pool's limit (SQLite and PostgreSQL both use a QueuePool)."""
    pool = db.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    size = getattr(pool, "size", None)
    used = int(checked_out()) if callable(checked_out) else 0
    if not callable(size):
        return PoolUsage(used, 0)
    overflow = getattr(pool, "_max_overflow", 0)
    limit = int(size()) + (int(overflow) if overflow > 0 else 0)
    return PoolUsage(used, limit)


async def task_correlation_id(session: AsyncSession, task_id: int) -> str | None:
    """The task's correlation id (None if the task does not exist or has none)."""
    return (
        await session.execute(select(Task.correlation_id).where(Task.id == task_id))
    ).scalar_one_or_none()
